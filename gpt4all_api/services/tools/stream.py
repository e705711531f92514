"""One choice's tool-call handling, whatever the engine: the interface the service calls.

Engines that yield raw text (CPU) have it parsed here (``ToolCallParser``); engines whose
backend parses calls itself (TGI, OpenAI upstreams: ``Engine.parses_tool_calls``) yield
``ToolCall`` events, which are renumbered and given ids here. Either way the service gets
the same ``Delta``s: ``ContentDelta`` for content, ``ToolCallDelta`` for call pieces.
"""

from __future__ import annotations

import json

from gpt4all_api.engines.base import ToolCall
from gpt4all_api.services.tools.parse import (
    ContentDelta,
    Delta,
    ToolCallDelta,
    ToolCallParser,
    new_call_id,
)
from gpt4all_api.services.tools.request import ToolRequest


class ToolCallStream:
    """``text(t)``/``tool_call(event)`` -> deltas as they become certain; ``finish()`` at
    the end of generation; ``calls`` counts the calls emitted."""

    def __init__(self, tools: ToolRequest, engine_parses: bool) -> None:
        self.tools = tools
        self._parser = (
            ToolCallParser(tools.allowed_names, tools.parallel)
            if tools.active and not engine_parses
            else None
        )
        self._remote_calls = 0

    @property
    def parses_text(self) -> bool:
        """Whether generated text can hold calls (else ``text(t)`` is just ``t``)."""
        return self._parser is not None

    @property
    def calls(self) -> int:
        return self._parser.calls if self._parser is not None else self._remote_calls

    def text(self, text: str) -> list[Delta]:
        if self._parser is None:
            return [ContentDelta(text)] if text else []
        return self._parser.feed(text)

    def tool_call(self, event: ToolCall) -> list[Delta]:
        """A call the backend parsed; with ``tool_choice`` none it is shown as content."""
        if not self.tools.active:
            body = json.dumps(
                {"name": event.name, "arguments": json.loads(event.arguments or "{}")}
            )
            return [ContentDelta(body)]
        if self._remote_calls and not self.tools.parallel:
            return []
        index = self._remote_calls
        self._remote_calls += 1
        return [
            ToolCallDelta(index, event.id or new_call_id(), event.name, ""),
            ToolCallDelta(index, arguments=event.arguments or "{}"),
        ]

    def finish(self) -> list[Delta]:
        return self._parser.finish() if self._parser is not None else []
