"""Tool calling for chat completions (OpenAI ``tools``/``tool_choice`` and the legacy
``functions``/``function_call``).

What the generation service calls, in order:

1. ``plan_tools(req) -> ToolRequest`` and ``chat_turns(req.messages, text_of)``: validate
   and normalise (400s naming the parameter); put ``ToolRequest.tools``/``choice``/
   ``parallel`` into the ``GenerationRequest``.
2. Engines render the prompt: the CPU engine renders what ``render.chat_prompt_input``
   gives it (the turns, and ``tools`` for templates that know them).
3. Per choice, ``ToolCallStream(tools, engine.parses_tool_calls)``: ``.text(t)`` for each
   piece of generated text (after stop strings), ``.tool_call(event)`` for ``ToolCall``
   events, ``.finish()`` at the end; each returns ``Delta``s.
4. ``ReplyBuilder`` collects deltas into the non-streamed message; ``delta_json`` turns a
   ``ToolCallDelta`` into a chunk's ``delta``; ``finish_reason`` maps the engine's.
"""

from gpt4all_api.services.tools.parse import ContentDelta, ToolCallDelta
from gpt4all_api.services.tools.request import ToolRequest, chat_turns, plan_tools
from gpt4all_api.services.tools.result import ReplyBuilder, delta_json, finish_reason
from gpt4all_api.services.tools.stream import ToolCallStream

__all__ = [
    "ContentDelta",
    "ReplyBuilder",
    "ToolCallDelta",
    "ToolCallStream",
    "ToolRequest",
    "chat_turns",
    "delta_json",
    "finish_reason",
    "plan_tools",
]
