"""The Responses API in GPU mode: served through the same upstream path as chat (TGI's
Messages API, here the fake TGI), structured output passed on as TGI's grammar, tool calls
parsed by TGI become ``function_call`` items."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from tests.support.fake_tgi import ANSWER, MODEL_ID, TOOL_ARGUMENTS, FakeTgi
from tests.support.responses_schema import validate_event, validate_response
from tests.support.server import Server
from tests.support.sse import read_response_events

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
]


def test_text_streamed_and_not(tgi_server: Server, tgi_client: openai.OpenAI) -> None:
    r = tgi_client.responses.create(model=MODEL_ID, input="Say hi", instructions="Be brief.")
    assert r.output_text == ANSWER and r.status == "completed"
    validate_response(httpx.get(f"{tgi_server.v1}/responses/{r.id}").json())
    body = {"model": MODEL_ID, "input": "Say hi", "stream": True}
    with httpx.stream("POST", tgi_server.v1 + "/responses", json=body, timeout=30) as s:
        events = read_response_events(s)
    for event in events:
        validate_event(event)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ANSWER


def test_json_schema_goes_to_the_grammar(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    r = tgi_client.responses.create(
        model=MODEL_ID,
        input="A number.",
        text={"format": {"type": "json_schema", "name": "n", "schema": schema}},
    )
    assert r.status == "completed" and r.text.format.type == "json_schema"  # type: ignore[union-attr]
    sent = fake_tgi.last("/v1/chat/completions")
    assert sent["response_format"] == {"type": "json", "value": schema}
    assert sent["messages"][-1] == {"role": "user", "content": "A number."}


def test_tool_call_is_a_function_call_item(tgi_client: openai.OpenAI) -> None:
    r = tgi_client.responses.create(model=MODEL_ID, input="Weather in Paris?", tools=TOOLS)
    calls = [item for item in r.output if item.type == "function_call"]
    (call,) = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == TOOL_ARGUMENTS
    with tgi_client.responses.stream(
        model=MODEL_ID, input="Weather in Paris?", tools=TOOLS
    ) as stream:
        final = stream.get_final_response()
    (streamed,) = [item for item in final.output if item.type == "function_call"]
    assert json.loads(streamed.arguments) == TOOL_ARGUMENTS


def test_error_after_the_start_is_an_error_event_then_failed(tgi_server: Server) -> None:
    body = {"model": MODEL_ID, "input": "Say hi [[error:2]]", "stream": True}
    with httpx.stream("POST", tgi_server.v1 + "/responses", json=body, timeout=30) as s:
        assert s.status_code == 200
        events = read_response_events(s)
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    validate_response(failed)
    assert failed["status"] == "failed" and failed["error"]["message"]
    # A failed response is not stored.
    assert httpx.get(f"{tgi_server.v1}/responses/{failed['id']}").status_code == 404
