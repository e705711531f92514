"""Chat prompts rendered with the model's own Jinja template, in a sandbox.

A chat template comes from the model file, so it is untrusted code: it runs in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute tricks, no mutation of our objects).
Models without a template use ChatML, the most common format for small instruct models.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gpt4all_api.engines.base import ChatTurn
from gpt4all_api.errors import InvalidRequest

logger = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: End-of-turn markers of common templates; the ones a template uses become implicit
#: stop strings, so generation ends at end of turn even where it is not the EOS token.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


#: Stand-ins for message contents while rendering segments (private-use code points that
#: no real content needs; a content holding them just falls back to one markup segment).
_SENTINEL = re.compile("\ue000([0-9]+)\ue001")


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as HF's chat templates have it (keys in their order, no HTML escaping):
    models were trained on that text, and a forced tool call is written the same way."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    bos_token: str = ""
    eos_token: str = ""
    is_fallback: bool = False

    @cached_property
    def _compiled(self) -> jinja2.Template:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        return env.from_string(self.source)

    def validate(self) -> None:
        """Compile now so a broken template is reported at model load, not per request."""
        _ = self._compiled

    @cached_property
    def end_of_turn(self) -> tuple[str, ...]:
        markers = [m for m in END_OF_TURN_MARKERS if m in self.source]
        if self.eos_token and self.eos_token not in markers:
            markers.append(self.eos_token)
        return tuple(markers)

    def render(
        self, messages: Sequence[ChatTurn], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The prompt; ``tools`` (OpenAI's ``tools`` list) and the turns' tool calls and
        results reach the template as HF templates expect (``services.tools.render``
        decides whether a template gets them)."""
        return self._render(messages, [m.content for m in messages], tools)

    def render_segments(
        self, messages: Sequence[ChatTurn], tools: list[dict[str, Any]] | None = None
    ) -> list[tuple[str, int | None]]:
        """The prompt as ``(text, message)`` pieces: the template's own text (``message``
        None: markup, special tokens parsed) apart from each message's content (``message``
        its index: plain text, so a content cannot forge the template's control tokens).
        Their concatenation equals ``render``.

        Contents are rendered as sentinels and put back; a template that transforms or
        inspects contents (trim, slicing) gives another text, and then the whole prompt is
        one markup piece, as before.
        """
        text = self.render(messages, tools)
        contents = [m.content for m in messages]
        if any("\ue000" in c or "\ue001" in c for c in contents):
            return [(text, None)]
        try:
            sentinels = [f"\ue000{i}\ue001" for i in range(len(messages))]
            skeleton = self._render(messages, sentinels, tools)
        except InvalidRequest:
            return [(text, None)]
        segments: list[tuple[str, int | None]] = []
        seen: set[int] = set()
        pos = 0
        for match in _SENTINEL.finditer(skeleton):
            index = int(match.group(1))
            if index in seen or index >= len(contents):
                return [(text, None)]
            seen.add(index)
            segments.append((skeleton[pos : match.start()], None))
            segments.append((contents[index], index))
            pos = match.end()
        segments.append((skeleton[pos:], None))
        segments = [s for s in segments if s[0]]
        if "".join(s for s, _ in segments) != text:
            return [(text, None)]
        return segments

    def _render(
        self,
        messages: Sequence[ChatTurn],
        contents: Sequence[str],
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        payload = [_turn_payload(m, c) for m, c in zip(messages, contents, strict=True)]
        extra: dict[str, Any] = {} if tools is None else {"tools": tools}
        try:
            return self._compiled.render(
                messages=payload,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except jinja2.TemplateError as exc:
            # Templates raise for conversations they do not support (e.g. roles not
            # alternating): that is the client's request, not a server fault.
            raise InvalidRequest(
                f"The model's chat template rejected these messages: {exc}", param="messages"
            ) from exc
        except Exception as exc:
            logger.warning("chat template failed: %r", exc)
            raise InvalidRequest(
                f"The model's chat template could not render these messages: {exc}",
                param="messages",
            ) from exc


def _turn_payload(m: ChatTurn, content: str) -> dict[str, Any]:
    """HF convention: a call's ``arguments`` is a dict, a tool result has ``tool_call_id``."""
    d: dict[str, Any] = {"role": m.role, "content": content}
    if m.name:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.loads(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        d["tool_call_id"] = m.tool_call_id
    return d


def chat_template_from_metadata(
    template: str | None, bos_token: str = "", eos_token: str = ""
) -> ChatTemplate:
    if template:
        tpl = ChatTemplate(template, bos_token, eos_token)
        try:
            tpl.validate()
            return tpl
        except jinja2.TemplateError as exc:
            logger.warning("model chat template does not compile (%s); using ChatML", exc)
    return ChatTemplate(CHATML_TEMPLATE, bos_token, eos_token, is_fallback=True)
