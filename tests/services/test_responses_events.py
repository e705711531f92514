"""The streamed event sequence: every event valid by the official schemas, in the official
order, numbered, framed as SSE, and accumulated by openai-python's own stream state into
the same response the non-streamed path builds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gpt4all_api.protocol.responses import CreateResponseRequest
from gpt4all_api.services.responses import ResponseEvents, sse_frame, start_response
from tests.support.responses_schema import validate_event, validate_response

TOOLS = [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": None}]


def builder(**body: Any) -> ResponseEvents:
    req = CreateResponseRequest.model_validate({"model": "tiny", "input": "x", **body})
    return ResponseEvents(start_response(req, model="tiny", temperature=1.0, top_p=1.0))


def check(events: list[dict[str, Any]]) -> list[str]:
    """Validate every event and the numbering; returns the event types."""
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [e["type"] for e in events]


def sdk_final(events: list[dict[str, Any]]) -> Any:
    """What openai-python's ``responses.stream(...).get_final_response()`` accumulates."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=TOOLS, text_format=omit)  # type: ignore[arg-type]
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        state.handle_event(adapter.validate_python(event))
    return state._completed_response


TEXT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_text_stream() -> None:
    b = builder()
    events = b.start() + b.text("Hel") + b.text("") + b.text("lo!")
    events += b.finish("stop", input_tokens=7, output_tokens=2, cached_tokens=3)
    assert check(events) == TEXT_SEQUENCE
    item_id = events[2]["item"]["id"]
    assert events[2]["item"]["status"] == "in_progress" and events[2]["item"]["content"] == []
    assert {e.get("item_id") for e in events[3:8]} == {item_id} == {events[8]["item"]["id"]}
    assert events[6]["text"] == "Hello!" and events[8]["item"]["status"] == "completed"
    final = events[-1]["response"]
    validate_response(final)
    assert final["status"] == "completed" and final["output"][0]["id"] == item_id
    assert final["output"][0]["content"][0]["text"] == "Hello!"
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 3
    assert (
        events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    )
    assert b.finished and b.response.status == "completed"
    sdk = sdk_final(events)
    assert sdk.output_text == "Hello!" and sdk.id == final["id"]


def test_text_then_parallel_tool_calls() -> None:
    b = builder(tools=TOOLS)
    events = b.start() + b.text("Checking.")
    events += b.tool_call("weather", call_id="call_1")
    events += b.tool_arguments('{"city":') + b.tool_arguments('"Paris"}')
    events += b.tool_call("weather")
    events += b.tool_arguments("{}")
    events += b.finish("tool_calls", input_tokens=10, output_tokens=20)
    assert check(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["output_index"] for e in events[2:17]] == [0] * 6 + [1] * 5 + [2] * 4
    assert events[11]["arguments"] == '{"city":"Paris"}' and events[11]["name"] == "weather"
    assert events[8]["item"]["arguments"] == "" and events[8]["item"]["call_id"] == "call_1"
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][2]["call_id"].startswith("call_")
    sdk = sdk_final(events)
    assert [o.type for o in sdk.output] == ["message", "function_call", "function_call"]
    assert sdk.output[1].arguments == '{"city":"Paris"}'


def test_tool_call_only() -> None:
    b = builder(tools=TOOLS)
    events = b.start() + b.tool_call("weather") + b.tool_arguments("{}")
    events += b.finish("tool_calls", input_tokens=1, output_tokens=1)
    types = check(events)
    assert "response.content_part.added" not in types
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["function_call"]


def test_max_output_tokens_ends_incomplete() -> None:
    b = builder(max_output_tokens=2)
    events = b.start() + b.text("Hi") + b.text(" th")
    events += b.finish("length", input_tokens=3, output_tokens=2)
    assert check(events)[-1] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    validate_response(final)


def test_nothing_generated_still_has_an_empty_message() -> None:
    b = builder()
    events = b.start() + b.finish("stop", input_tokens=3, output_tokens=0)
    assert check(events) == [t for t in TEXT_SEQUENCE if t != "response.output_text.delta"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_error_after_start() -> None:
    b = builder(tools=TOOLS)
    events = b.start() + b.text("Par") + b.tool_call("weather")
    events += b.fail("The model stopped responding.")
    types = check(events)
    assert types[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "The model stopped responding."
    assert events[-2]["code"] == "server_error" and events[-2]["param"] is None
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    # The finished text item stays; the call that was still open does not.
    assert [i["type"] for i in failed["output"]] == ["message"]
    assert b.fail("again") == []  # once only


def test_misuse_is_a_programming_error() -> None:
    b = builder()
    with pytest.raises(RuntimeError):
        b.text("too early")
    b.start()
    with pytest.raises(RuntimeError):
        b.start()
    with pytest.raises(RuntimeError):
        b.tool_arguments("{}")
    b.finish("stop", input_tokens=1, output_tokens=0)
    with pytest.raises(RuntimeError):
        b.text("too late")


def test_sse_frames() -> None:
    b = builder()
    events = (
        b.start()
        + b.text("line one\nline two \u2028 ünï")
        + b.finish("stop", input_tokens=1, output_tokens=1)
    )
    for event in events:
        frame = sse_frame(event)
        assert frame.endswith(b"\n\n")
        lines = frame.decode().split("\n")
        assert lines[0] == f"event: {event['type']}"
        assert lines[1].startswith("data: ") and lines[2:] == ["", ""]
        assert json.loads(lines[1].removeprefix("data: ")) == event
        # Nothing that line-splitting clients would treat as a line break inside data.
        assert len(frame.decode().splitlines()) == 3  # event, data, blank
