"""GPU mode tool calling against the fake TGI: TGI 3 and TGI 2 streamed tool-call shapes
and its ``no_tool`` pseudo-call normalised to OpenAI's, tools and grammar sent upstream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from gpt4all_api.engines.tgi import grammar, tgi_tool_calls
from tests.support.fake_tgi import ANSWER, MODEL_ID, TOOL_ARGUMENTS, FakeTgi
from tests.support.openai_schema import validate
from tests.support.server import Server
from tests.support.sse import read_sse

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]


def ask(marker: str = "") -> list[Any]:
    return [{"role": "user", "content": f"Weather in Paris? {marker}"}]


@pytest.mark.parametrize("marker", ["", "[[tgi2]]", "[[tgi_object]]"])
def test_tool_call_streamed_and_not(tgi_client: openai.OpenAI, marker: str) -> None:
    r = tgi_client.chat.completions.create(model=MODEL_ID, messages=ask(marker), tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS
    assert call.type == "function"
    with tgi_client.chat.completions.stream(model=MODEL_ID, messages=ask(marker), tools=TOOLS) as s:
        final = s.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "get_weather"
    assert json.loads(streamed.function.arguments) == TOOL_ARGUMENTS
    assert final.choices[0].finish_reason == "tool_calls"


def test_named_choice_and_history_go_upstream(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    history: list[Any] = [
        *ask(),
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    named: Any = {"type": "function", "function": {"name": "get_time"}}
    r = tgi_client.chat.completions.create(
        model=MODEL_ID, messages=history, tools=TOOLS, tool_choice=named
    )
    assert (r.choices[0].message.tool_calls or [])[0].function.name == "get_time"
    body = fake_tgi.last("/v1/chat/completions")
    assert body["tool_choice"] == named
    assert body["tools"][0]["function"]["arguments"] == TOOLS[0]["function"]["parameters"]
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == {}
    assert body["messages"][2]["tool_call_id"] == "call_1"


def test_no_tool_is_text(tgi_client: openai.OpenAI) -> None:
    r = tgi_client.chat.completions.create(model=MODEL_ID, messages=ask("[[no_tool]]"), tools=TOOLS)
    assert r.choices[0].message.content == ANSWER and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"


def test_response_format_goes_to_the_grammar(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tgi_client.chat.completions.create(
        model=MODEL_ID,
        messages=ask(),
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert fake_tgi.last("/v1/chat/completions")["response_format"] == {
        "type": "json",
        "value": schema,
    }


@pytest.mark.parametrize("marker", ["", "[[tgi2]]", "[[tgi_object]]"])
def test_responses_validate_against_openais_schemas(tgi_server: Server, marker: str) -> None:
    """Whatever shape TGI used, our answer is OpenAI's: a string of JSON arguments, a
    call_ id, the first streamed piece with index, id, type and name."""
    body = {"model": MODEL_ID, "messages": ask(marker), "tools": TOOLS}
    r = httpx.post(tgi_server.v1 + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    validate("CreateChatCompletionResponse", r.json())
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert isinstance(call["function"]["arguments"], str) and "description" not in call
    with httpx.stream(
        "POST", tgi_server.v1 + "/chat/completions", json={**body, "stream": True}, timeout=30
    ) as s:
        events, done = read_sse(s)
    assert done
    pieces = []
    for event in events:
        validate("CreateChatCompletionStreamResponse", event)
        for choice in event["choices"]:
            pieces += choice["delta"].get("tool_calls") or []
    assert pieces[0]["index"] == 0 and pieces[0]["type"] == "function"
    assert pieces[0]["id"].startswith("call_") and pieces[0]["function"]["name"] == "get_weather"
    assert all("id" not in p and "name" not in p["function"] for p in pieces[1:])
    args = "".join(p["function"]["arguments"] for p in pieces)
    assert json.loads(args) == TOOL_ARGUMENTS


def test_tool_choice_none_sends_no_tools(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    r = tgi_client.chat.completions.create(
        model=MODEL_ID, messages=ask(), tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert "tools" not in fake_tgi.last("/v1/chat/completions")


def test_json_object_goes_to_the_grammar(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    tgi_client.chat.completions.create(
        model=MODEL_ID, messages=ask(), response_format={"type": "json_object"}
    )
    assert fake_tgi.last("/v1/chat/completions")["response_format"] == {
        "type": "json",
        "value": {"type": "object"},
    }


def test_normalisation_units() -> None:
    assert grammar({"type": "json_object"}) == {"type": "json", "value": {"type": "object"}}
    old = {0: {"arguments": '{"function": {"_name": "f", "x": 1}}'}}
    assert tgi_tool_calls(old) == [("f", '{"x": 1}', None)]
    assert tgi_tool_calls({0: {"name": "f", "arguments": ""}}) == [("f", "{}", None)]
