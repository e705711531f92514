"""OpenAI's shapes for a reply that may hold tool calls (message, stream deltas, finish).

Rules (also in the README):

* ``finish_reason`` is ``"tool_calls"`` (``"function_call"`` for the legacy API) when the
  reply holds at least one call and generation ended by itself; ``"length"`` stays
  ``"length"``.
* ``tool_choice`` ``required`` or a named function: the model is told to call (gpt4all
  cannot constrain sampling), and the reply is checked: calls of other functions are not
  calls (their text is content). A reply without a valid call is returned as what it is,
  content with ``finish_reason: "stop"``; it is never passed off as a call.
* ``parallel_tool_calls: false`` (and the legacy API): only the first call is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpt4all_api.services.tools.parse import ContentDelta, Delta, ToolCallDelta, new_call_id
from gpt4all_api.services.tools.request import ToolRequest


def finish_reason(engine_finish: str, calls: int, legacy: bool) -> str:
    if calls and engine_finish == "stop":
        return "function_call" if legacy else "tool_calls"
    return engine_finish


def delta_json(delta: ToolCallDelta, legacy: bool) -> dict[str, Any]:
    """The ``delta`` fields of one stream chunk for a call piece."""
    fn: dict[str, Any] = {}
    if delta.name is not None:
        fn["name"] = delta.name
    fn["arguments"] = delta.arguments
    if legacy:
        return {"function_call": fn}
    piece: dict[str, Any] = {"index": delta.index}
    if delta.id is not None:
        piece["id"] = delta.id
        piece["type"] = "function"
    piece["function"] = fn
    return {"tool_calls": [piece]}


@dataclass(slots=True)
class ReplyBuilder:
    """Collects a choice's deltas into the non-streamed ``message``."""

    tools: ToolRequest
    content: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, delta: Delta) -> None:
        if isinstance(delta, ContentDelta):
            self.content.append(delta.text)
            return
        call = self.calls.setdefault(
            delta.index,
            {
                "id": delta.id or new_call_id(),
                "type": "function",
                "function": {"name": "", "arguments": ""},
            },
        )
        if delta.name is not None:
            call["function"]["name"] = delta.name
        call["function"]["arguments"] += delta.arguments

    def message(self) -> dict[str, Any]:
        text = "".join(self.content)
        msg: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if self.calls:
            msg["content"] = text or None
            calls = [self.calls[i] for i in sorted(self.calls)]
            if self.tools.legacy:
                msg["function_call"] = calls[0]["function"]
            else:
                msg["tool_calls"] = calls
        return msg
