"""Function tools in the Responses API on the real gpt4all backend: the scripted tiny model
whose answer is a Hermes tool call, parsed by the chat machinery into ``function_call``
output items; outputs fed back with ``function_call_output`` (by ``previous_response_id``
and by sending the items back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.responses_schema import validate_event, validate_item_list, validate_response
from tests.support.server import Server, run_server
from tests.support.sse import read_response_events
from tests.support.tinymodel import build_tool_model

MODEL = "tool-model"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {"type": "function", "name": "get_time"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("responses-tool-model")
    build_tool_model(d / f"{MODEL}.gguf")
    env = {
        "MODELS_DIR": str(d),
        "MODEL": MODEL,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "DATA_DIR": str(d / "data"),
    }
    with run_server(env, d / "server.log") as s:
        yield s


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=60)


def create(server: Server, **body: Any) -> dict[str, Any]:
    r = httpx.post(server.v1 + "/responses", json={"model": MODEL, **body}, timeout=60)
    assert r.status_code == 200, r.text
    validate_response(r.json())
    return r.json()


def test_function_call_output_item(server: Server) -> None:
    r = create(server, input="Weather in Paris?", tools=TOOLS)
    assert r["status"] == "completed"
    message, call = r["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Checking."
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_")
    assert r["tools"][0]["name"] == "get_weather" and r["tool_choice"] == "auto"


def test_without_tools_the_call_is_text(server: Server) -> None:
    r = create(server, input="Weather in Paris?")
    (message,) = r["output"]
    assert message["content"][0]["text"].startswith("Checking. <tool_call>")
    r = create(server, input="Weather in Paris?", tools=TOOLS, tool_choice="none")
    assert [item["type"] for item in r["output"]] == ["message"]


def test_streamed_function_call_events(server: Server, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "input": "Weather in Paris?", "tools": TOOLS, "stream": True}
    with httpx.stream("POST", server.v1 + "/responses", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = read_response_events(r)
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    call_events = kinds[kinds.index("response.output_item.done") + 1 :]
    assert call_events[0] == "response.output_item.added"
    assert "response.function_call_arguments.delta" in call_events
    assert call_events[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "get_weather" and json.loads(done["arguments"]) == {"city": "Paris"}
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]

    with client.responses.stream(model=MODEL, input="Weather in Paris?", tools=TOOLS) as stream:
        sdk_final = stream.get_final_response()
    call = sdk_final.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_round_trip_with_previous_response_id(server: Server, client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=TOOLS)
    call = first.output[1]
    assert call.type == "function_call"
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22 C"}],
        tools=TOOLS,
    )
    assert second.status == "completed" and second.previous_response_id == first.id
    items = httpx.get(f"{server.v1}/responses/{second.id}/input_items").json()
    validate_item_list(items)
    (output_item,) = items["data"]
    assert output_item["type"] == "function_call_output"
    assert output_item["call_id"] == call.call_id and output_item["output"] == "22 C"
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens


def test_round_trip_by_sending_the_items_back(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="Weather in Paris?", tools=TOOLS, store=False
    )
    call = first.output[1]
    assert call.type == "function_call"
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "22 C"},
    ]
    second = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.status == "completed"
    # An output whose call is nowhere before it is refused, naming the item.
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model=MODEL,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
            tools=TOOLS,
        )
    assert exc.value.body["param"] == "input[0].call_id"  # type: ignore[index]


def test_tool_errors_name_the_parameter(server: Server) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tools": [*TOOLS, TOOLS[0]]}, "tools[2].name"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]},
            "tools[0].parameters",
        ),
    ]
    for extra, param in cases:
        r = httpx.post(
            server.v1 + "/responses", json={"model": MODEL, "input": "hi", **extra}, timeout=60
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, (extra, r.json())
