"""Tool calls out of a model's raw text, incrementally, for the families small models use.

=====================  ==========================================================
family                 what the model writes
=====================  ==========================================================
Hermes / Qwen 2.5      ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``, one
                       block per call, several allowed (also this server's generic
                       fallback format, see ``render``)
Llama 3.x              the whole reply is ``{"name": .., "parameters": {..}}`` (or a
                       list of them, or several separated by ``;``), or the same after
                       ``<|python_tag|>``
Mistral                ``[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]`` or
                       ``[TOOL_CALLS]name[ARGS]{..}``
=====================  ==========================================================

``ToolCallParser.feed(text)`` returns the deltas that are certain so far: content before a
call streams at once, except the longest tail that could still be the start of a call
marker (``<tool`` could become ``<tool_call>``) and trailing whitespace (dropped when the
reply makes calls, so a streamed and a non-streamed reply read the same). A call is
buffered until it is complete, then emitted as a header delta (index, id, name) and its
arguments as a JSON string: nothing of its markup ever reaches the content. A block that
does not parse (invalid JSON, no name, a name not allowed) is given back as content,
markup included: never a 500, never a fake call.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_START = "[TOOL_CALLS]"
MISTRAL_ARGS = "[ARGS]"
_MARKERS = {HERMES_START: "hermes", PYTHON_TAG: "python_tag", MISTRAL_START: "mistral"}
_ID_ALPHABET = string.ascii_letters + string.digits

Mode = Literal["text", "hermes", "python_tag", "mistral", "bare"]


def new_call_id() -> str:
    """``call_`` and 24 random letters/digits, like OpenAI's ids."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One piece of call ``index``: the first has ``id`` and ``name`` (arguments ""),
    the next ones only ``arguments`` fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


Delta = ContentDelta | ToolCallDelta


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as a string


def call_from_json(value: Any, allowed: frozenset[str] | None = None) -> ParsedCall | None:
    """A call from a decoded ``{"name", "arguments" | "parameters"}`` object, else None.

    Arguments given as a JSON string holding an object are accepted (some models quote
    them); anything that is not an object is not a call.
    """
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]  # {"function": {"name", "arguments"}}: OpenAI's own shape
    name = value.get("name")
    if not isinstance(name, str) or not name or (allowed is not None and name not in allowed):
        return None
    args: Any = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return ParsedCall(name, json.dumps(args, ensure_ascii=False))


def _json_values(text: str) -> list[Any] | None:
    """The JSON values of ``text`` separated by whitespace, ``;`` or ``,``; None if any
    part is not JSON."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and (text[pos].isspace() or (values and text[pos] in ";,")):
            pos += 1
        if pos >= len(text):
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        values.append(value)


def calls_from_json_text(text: str, allowed: frozenset[str] | None) -> list[ParsedCall] | None:
    """Every call in ``text`` (objects or lists of objects); None unless all are calls."""
    values = _json_values(text)
    if not values:
        return None
    calls: list[ParsedCall] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        if not items:
            return None
        for item in items:
            call = call_from_json(item, allowed)
            if call is None:
                return None
            calls.append(call)
    return calls


def _mistral_calls(body: str, allowed: frozenset[str] | None) -> list[ParsedCall] | None:
    """``[{..}, ..]`` (v3) or ``name[ARGS]{..}`` repeated (v11+)."""
    if not body.lstrip().startswith(("[", "{")) and MISTRAL_ARGS in body:
        calls: list[ParsedCall] = []
        for part in body.split(MISTRAL_START):
            name, sep, args = part.partition(MISTRAL_ARGS)
            if not sep:
                return None
            call = call_from_json({"name": name.strip(), "arguments": args.strip()}, allowed)
            if call is None:
                return None
            calls.append(call)
        return calls
    return calls_from_json_text(body.replace(MISTRAL_START, " "), allowed)


def _marker_tail(text: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of a marker."""
    best = 0
    for marker in _MARKERS:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


class ToolCallParser:
    """Splits a reply into content and tool calls as it is generated.

    ``allowed``: names a call may have (others are content); ``parallel`` False keeps
    only the first call (later ones are dropped and logged, as the client asked for one).
    """

    def __init__(
        self,
        allowed: Iterable[str] | None = None,
        parallel: bool = True,
        id_factory: Callable[[], str] = new_call_id,
    ) -> None:
        self.allowed = frozenset(allowed) if allowed is not None else None
        self.parallel = parallel
        self._new_id = id_factory
        self._buf = ""
        self._mode: Mode = "text"
        self._at_start = True  # no content and no call yet: a bare JSON reply is possible
        self._ws = ""  # whitespace held back (dropped at the end if calls were made)
        self._after_call = False
        self.calls = 0
        self.dropped = 0
        self._finished = False

    # --- public ------------------------------------------------------------------------

    def feed(self, text: str) -> list[Delta]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buf += text
        out: list[Delta] = []
        self._drain(out, final=False)
        return out

    def finish(self) -> list[Delta]:
        out: list[Delta] = []
        if not self._finished:
            self._finished = True
            self._drain(out, final=True)
            if self._ws and not self.calls:
                out.append(ContentDelta(self._ws))
            self._ws = ""
            if self.dropped:
                logger.info("parallel_tool_calls is false: dropped %d extra calls", self.dropped)
        return out

    # --- internals -----------------------------------------------------------------------

    def _content(self, out: list[Delta], text: str) -> None:
        if not text:
            return
        text = self._ws + text
        if self._after_call:  # whitespace after a call is not content either
            text = text.lstrip()
            self._ws = ""
            if not text:
                return
            self._after_call = False
        head = text.rstrip()
        self._ws = text[len(head) :]
        if head:
            self._at_start = False
            out.append(ContentDelta(head))

    def _emit_calls(self, out: list[Delta], calls: list[ParsedCall]) -> None:
        self._at_start = False
        for call in calls:
            if self.calls and not self.parallel:
                self.dropped += 1
                continue
            index = self.calls
            self.calls += 1
            self._ws = ""  # whitespace between text and a call is not content
            self._after_call = True
            out.append(ToolCallDelta(index, self._new_id(), call.name, ""))
            out.append(ToolCallDelta(index, arguments=call.arguments))

    def _drain(self, out: list[Delta], final: bool) -> None:
        while True:
            if self._mode == "text":
                if not self._text_step(out, final):
                    return
            elif self._mode == "hermes":
                if not self._hermes_step(out, final):
                    return
            else:  # python_tag, mistral, bare: the call runs to the end of the reply
                if not final:
                    return
                self._tail_step(out)
                return

    def _text_step(self, out: list[Delta], final: bool) -> bool:
        buf = self._buf
        if self._at_start:
            stripped = buf.lstrip()
            if not stripped:
                if final:
                    self._content(out, buf)
                    self._buf = ""
                return False
            if stripped[0] in "{[" and not stripped.startswith(MISTRAL_START):
                self._mode = "bare"
                return True
        hits = [(buf.find(m), m) for m in _MARKERS if m in buf]
        if hits:
            pos, marker = min(hits)
            self._content(out, buf[:pos])
            self._buf = buf[pos:]
            self._mode = _MARKERS[marker]  # type: ignore[assignment]
            return True
        hold = 0 if final else _marker_tail(buf)
        self._content(out, buf[: len(buf) - hold])
        self._buf = buf[len(buf) - hold :]
        return False

    def _hermes_step(self, out: list[Delta], final: bool) -> bool:
        end = self._buf.find(HERMES_END)
        if end < 0 and not final:
            return False
        raw = self._buf if end < 0 else self._buf[: end + len(HERMES_END)]
        body = raw[len(HERMES_START) : len(raw) - (len(HERMES_END) if end >= 0 else 0)]
        self._buf = "" if end < 0 else self._buf[end + len(HERMES_END) :]
        self._mode = "text"
        calls = calls_from_json_text(body, self.allowed)
        if calls:
            self._emit_calls(out, calls)
        else:
            self._content(out, raw)
        return True

    def _tail_step(self, out: list[Delta]) -> None:
        raw, mode = self._buf, self._mode
        self._buf = ""
        self._mode = "text"
        calls: list[ParsedCall] | None
        if mode == "bare" and raw.lstrip().startswith(MISTRAL_START):
            mode = "mistral"  # a "[" at the start turned out to be Mistral's marker
        if mode == "mistral":
            calls = _mistral_calls(raw.lstrip()[len(MISTRAL_START) :], self.allowed)
        elif mode == "python_tag":
            calls = calls_from_json_text(raw[len(PYTHON_TAG) :], self.allowed)
        else:
            calls = calls_from_json_text(raw, self.allowed)
        if calls:
            self._emit_calls(out, calls)
        else:
            self._content(out, raw)


def parse_tool_calls(
    text: str, allowed: Iterable[str] | None = None, parallel: bool = True
) -> tuple[str | None, list[ParsedCall]]:
    """A whole reply: its content (None when it is only calls) and its calls."""
    parser = ToolCallParser(allowed, parallel, id_factory=lambda: "")
    deltas = [*parser.feed(text), *parser.finish()]
    content = "".join(d.text for d in deltas if isinstance(d, ContentDelta))
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for d in deltas:
        if isinstance(d, ToolCallDelta):
            if d.name is not None:
                names[d.index] = d.name
            args[d.index] = args.get(d.index, "") + d.arguments
    calls = [ParsedCall(names[i], args[i]) for i in sorted(names)]
    return (content or None), calls
