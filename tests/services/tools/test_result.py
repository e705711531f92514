"""The OpenAI shapes of a reply with tool calls: stream deltas, the non-streamed message,
finish reasons, and calls a backend parsed itself (``ToolCallStream``)."""

from __future__ import annotations

from gpt4all_api.engines.base import ToolCall, ToolChoice, ToolSpec
from gpt4all_api.services.tools import (
    ContentDelta,
    ReplyBuilder,
    ToolCallDelta,
    ToolCallStream,
    ToolRequest,
    delta_json,
    finish_reason,
)

SPEC = ToolSpec("get_weather", None, {"type": "object", "properties": {}})
AUTO = ToolRequest((SPEC,), ToolChoice("auto"))
NONE = ToolRequest((), ToolChoice("none"))
LEGACY = ToolRequest((SPEC,), ToolChoice("auto"), parallel=False, legacy=True)


def test_stream_deltas_have_openais_shape() -> None:
    head = delta_json(ToolCallDelta(1, "call_x", "get_weather", ""), legacy=False)
    assert head == {
        "tool_calls": [
            {
                "index": 1,
                "id": "call_x",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    frag = delta_json(ToolCallDelta(1, arguments='{"a": 1}'), legacy=False)
    assert frag == {"tool_calls": [{"index": 1, "function": {"arguments": '{"a": 1}'}}]}
    legacy = delta_json(ToolCallDelta(0, "call_x", "get_weather", ""), legacy=True)
    assert legacy == {"function_call": {"name": "get_weather", "arguments": ""}}


def test_finish_reasons() -> None:
    assert finish_reason("stop", 1, legacy=False) == "tool_calls"
    assert finish_reason("stop", 1, legacy=True) == "function_call"
    assert finish_reason("length", 1, legacy=False) == "length"
    assert finish_reason("stop", 0, legacy=False) == "stop"


def test_reply_builder_message() -> None:
    b = ReplyBuilder(AUTO)
    for d in (
        ToolCallDelta(0, "call_a", "get_weather", ""),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments=' "Paris"}'),
    ):
        b.add(d)
    msg = b.message()
    assert msg["content"] is None and msg["refusal"] is None
    assert msg["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert finish_reason("stop", len(b.calls), legacy=False) == "tool_calls"
    text = ReplyBuilder(AUTO)
    text.add(ContentDelta("Hi"))
    assert text.message() == {"role": "assistant", "content": "Hi", "refusal": None}
    legacy = ReplyBuilder(LEGACY)
    legacy.add(ToolCallDelta(0, "call_a", "get_weather", "{}"))
    assert legacy.message()["function_call"] == {"name": "get_weather", "arguments": "{}"}
    assert "tool_calls" not in legacy.message()
    assert finish_reason("stop", len(legacy.calls), legacy=True) == "function_call"


def test_backend_parsed_calls() -> None:
    """TGI/upstream calls get call_ ids and their own indexes; with ``tool_choice`` none
    (or no tools) a call the backend made anyway is shown as text, never as a call."""
    s = ToolCallStream(AUTO, engine_parses=True)
    first = s.tool_call(ToolCall(7, "", "get_weather", '{"city": "Paris"}'))
    assert first[0].index == 0 and (first[0].id or "").startswith("call_")
    assert first[1] == ToolCallDelta(0, arguments='{"city": "Paris"}')
    assert s.tool_call(ToolCall(8, "up_1", "get_weather", ""))[0] == ToolCallDelta(
        1, "up_1", "get_weather", ""
    )
    assert s.calls == 2 and s.text("x") == [ContentDelta("x")] and s.finish() == []
    off = ToolCallStream(NONE, engine_parses=True)
    (shown,) = off.tool_call(ToolCall(0, "", "get_weather", "{}"))
    assert isinstance(shown, ContentDelta) and off.calls == 0
    single = ToolCallStream(LEGACY, engine_parses=True)
    single.tool_call(ToolCall(0, "", "get_weather", "{}"))
    assert single.tool_call(ToolCall(1, "", "get_weather", "{}")) == [] and single.calls == 1


def test_text_engines_are_parsed_only_when_tools_are_active() -> None:
    call = '<tool_call>{"name": "get_weather"}</tool_call>'
    off = ToolCallStream(NONE, engine_parses=False)
    assert off.text(call) == [ContentDelta(call)] and off.finish() == []
    on = ToolCallStream(AUTO, engine_parses=False)
    deltas = on.text(call) + on.finish()
    assert [type(d) for d in deltas] == [ToolCallDelta, ToolCallDelta] and on.calls == 1
