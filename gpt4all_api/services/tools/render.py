"""Tools and tool-call history in the prompt.

A template that knows tools (it reads the ``tools`` variable, as Qwen 2.5, Llama 3.x,
Hermes and Mistral templates do) gets them the HF way: ``tools`` is OpenAI's list, an
assistant turn has ``tool_calls`` (``function.arguments`` a dict) and a tool result is a
``tool`` message with ``tool_call_id`` and ``name``. Any other template gets the generic
fallback: the tool list and the exact call format (Hermes' ``<tool_call>`` block, which
``parse`` reads) in the system prompt, past calls written in that format and results as
``<tool_response>`` user turns, so it only ever sees roles it knows.

gpt4all cannot constrain sampling, so ``tool_choice`` ``required``/named and
``parallel_tool_calls: false`` become an instruction in the system prompt; the service
checks the reply (see ``result``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gpt4all_api.engines.base import (
    ChatTurn,
    GenerationRequest,
    ToolCallPart,
    ToolChoice,
    ToolSpec,
)
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.services.chat_template import ChatTemplate
from gpt4all_api.services.tools.parse import HERMES_END, HERMES_START, parse_tool_calls
from gpt4all_api.structured import CallMarkup, JsonOutput


@lru_cache(maxsize=32)
def template_knows_tools(source: str) -> bool:
    """Whether the template reads a ``tools`` variable (parsed, not run)."""
    try:
        ast = ImmutableSandboxedEnvironment().parse(source)
    except jinja2.TemplateError:
        return False
    return "tools" in meta.find_undeclared_variables(ast)


def tools_payload(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """OpenAI's ``tools`` list, as templates and upstreams expect it."""
    out: list[dict[str, Any]] = []
    for t in tools:
        fn: dict[str, Any] = {"name": t.name}
        if t.description:
            fn["description"] = t.description
        fn["parameters"] = t.parameters
        out.append({"type": "function", "function": fn})
    return out


def choice_instruction(choice: ToolChoice, parallel: bool) -> str:
    """What the model is told when the client forces a call (nothing for ``auto``)."""
    parts: list[str] = []
    if choice.mode == "required":
        parts.append("You must answer with a call of one of the tools, not with text.")
    elif choice.mode == "named":
        parts.append(f'You must answer with a call of the tool "{choice.name}", not with text.')
    if not parallel:
        parts.append("Make at most one tool call.")
    return " ".join(parts)


def fallback_system_prompt(tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool) -> str:
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools_payload(tools))
    text = (
        "You can call the following tools (functions), described as JSON Schema:\n"
        f"{listing}\n\n"
        "To call a tool, answer with one block per call, exactly in this format:\n"
        f'{HERMES_START}{{"name": "<tool name>", "arguments": {{<arguments as a JSON object>}}}}'
        f"{HERMES_END}\n"
        "Tool results come back in <tool_response> blocks. If no tool is needed, answer "
        "normally."
    )
    extra = choice_instruction(choice, parallel)
    return f"{text}\n{extra}" if extra else text


def _with_system(turns: list[ChatTurn], text: str) -> list[ChatTurn]:
    """``text`` appended to the first system turn (or as a new first one)."""
    if not text:
        return turns
    if turns and turns[0].role == "system":
        first = turns[0]
        joined = f"{first.content}\n\n{text}" if first.content else text
        return [ChatTurn("system", joined, first.name), *turns[1:]]
    return [ChatTurn("system", text), *turns]


def fallback_turns(request: GenerationRequest) -> list[ChatTurn]:
    """The conversation with tools, calls and results as plain text turns."""
    assert request.messages is not None
    out: list[ChatTurn] = []
    for turn in request.messages:
        if turn.role == "tool":
            block = f"<tool_response>\n{turn.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.endswith("</tool_response>"):
                out[-1] = ChatTurn("user", f"{out[-1].content}\n{block}")
            else:
                out.append(ChatTurn("user", block))
        elif turn.tool_calls:
            calls = "\n".join(
                HERMES_START
                + json.dumps(
                    {"name": c.name, "arguments": json.loads(c.arguments)}, ensure_ascii=False
                )
                + HERMES_END
                for c in turn.tool_calls
            )
            text = f"{turn.content}\n{calls}" if turn.content else calls
            out.append(ChatTurn("assistant", text, turn.name))
        else:
            out.append(ChatTurn(turn.role, turn.content, turn.name))
    if request.tools:
        out = _with_system(
            out,
            fallback_system_prompt(request.tools, request.tool_choice, request.parallel_tool_calls),
        )
    return out


def chat_prompt_input(
    template: ChatTemplate, request: GenerationRequest
) -> tuple[list[ChatTurn], list[dict[str, Any]] | None]:
    """The turns and the ``tools`` the model's template renders for ``request``: as they
    are without tools; through the template with ``tools`` when it knows them; else the
    generic fallback (the tool list and call format in the system prompt). A reply held
    to a JSON shape is described at the end of the system prompt."""
    turns, tools = _tool_prompt_input(template, request)
    if isinstance(request.constraint, JsonOutput):
        turns = _with_system(turns, request.constraint.instruction())
    return turns, tools


def _tool_prompt_input(
    template: ChatTemplate, request: GenerationRequest
) -> tuple[list[ChatTurn], list[dict[str, Any]] | None]:
    assert request.messages is not None
    has_tool_history = any(t.tool_calls or t.role == "tool" for t in request.messages)
    if not request.tools and not has_tool_history:
        return list(request.messages), None
    if not template_knows_tools(template.source):
        return list(fallback_turns(request)), None
    turns = _with_system(
        list(request.messages),
        choice_instruction(request.tool_choice, request.parallel_tool_calls)
        if request.tools
        else "",
    )
    return turns, tools_payload(request.tools) if request.tools else None


#: The generic fallback's call format (``fallback_system_prompt``), read by ``parse``.
HERMES_MARKUP = CallMarkup(HERMES_START, HERMES_END)
_PROBE_NAME = "probe_function"
_PROBE_ARGS = {"probe_argument": "probe value"}
_PROBE_RESULT = "probe result"


@lru_cache(maxsize=32)
def call_markup(template: ChatTemplate) -> CallMarkup:
    """How ``template`` writes one tool call, found by rendering a probe call: a forced call
    is written the same way, so the parser reads it and the next turn renders it back
    unchanged. Templates that know no tools (the generic fallback) and templates whose
    call this probe cannot read get the fallback's Hermes format."""
    if not template_knows_tools(template.source):
        return HERMES_MARKUP
    try:
        return _probe_markup(template) or HERMES_MARKUP
    except InvalidRequest:
        return HERMES_MARKUP


def _probe_markup(template: ChatTemplate) -> CallMarkup | None:
    tool = ToolSpec(_PROBE_NAME, None, {"type": "object", "properties": {}})
    user = ChatTurn("user", "probe")
    call = ChatTurn(
        "assistant",
        "",
        tool_calls=(ToolCallPart("call_probe", _PROBE_NAME, json.dumps(_PROBE_ARGS)),),
    )
    result = ChatTurn("tool", _PROBE_RESULT, name=_PROBE_NAME, tool_call_id="call_probe")
    payload = tools_payload([tool])
    head = template.render([user], payload)
    full = template.render([user, call, result], payload)
    if not full.startswith(head):
        return None
    turn = full[len(head) :]
    decoder = json.JSONDecoder()
    for start, char in enumerate(turn):
        if char != "{":
            continue
        try:
            obj, end = decoder.raw_decode(turn, start)
        except ValueError:
            continue
        if not isinstance(obj, dict) or len(obj) != 2:
            continue
        keys = {("name" if v == _PROBE_NAME else "args" if v == _PROBE_ARGS else ""): k
                for k, v in obj.items()}  # fmt: skip
        if set(keys) != {"name", "args"}:
            continue
        after = turn[end:]
        cut = min((after.find(m) for m in template.end_of_turn if m in after), default=len(after))
        markup = CallMarkup(
            before=turn[:start],
            after=after[:cut],
            name_key=keys["name"],
            args_key=keys["args"],
            name_first=next(iter(obj)) == keys["name"],
        )
        text = markup.before + turn[start:end] + markup.after
        content, calls = parse_tool_calls(text, {_PROBE_NAME})
        if content is None and len(calls) == 1:
            return markup
        return None
    return None
