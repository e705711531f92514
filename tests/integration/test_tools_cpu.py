"""Tool calling end to end on the real gpt4all backend: a tiny scripted GGUF whose answer
is a tool call (with a tool-aware template, and with none: the generic fallback), the real
server and the official ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.gpu_fixtures import gpu_env
from tests.support.openai_schema import validate
from tests.support.server import Server, run_server
from tests.support.sse import read_sse
from tests.support.tinymodel import build_tool_model

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]
ASK: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module", params=["template", "fallback"])
def tool_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    d = tmp_path_factory.mktemp(f"tool-model-{request.param}")
    if request.param == "template":
        build_tool_model(d / "tool-model.gguf")
    else:  # ChatML only: tools go into the system prompt
        build_tool_model(d / "tool-model.gguf", chat_template=None)
    env = {"MODELS_DIR": str(d), "MODEL": "tool-model", "EMBEDDING_MODEL": "", "N_THREADS": "1"}
    with run_server(env, d / "server.log") as server:
        yield server


@pytest.fixture
def client(tool_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server.v1, api_key="x", max_retries=0, timeout=60)


def test_tool_call_non_streamed(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_stream_accumulates_to_the_non_streamed_reply(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS)
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    firsts = []
    for chunk in client.chat.completions.create(
        model="tool-model", messages=ASK, tools=TOOLS, stream=True
    ):
        c = chunk.choices[0]
        content += c.delta.content or ""
        for tc in c.delta.tool_calls or []:
            if tc.id:
                firsts.append(tc)
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = c.finish_reason or finish
        assert "<tool_call>" not in (c.delta.content or "")
    assert firsts and all(t.type == "function" and t.function.name for t in firsts)
    assert content == whole.choices[0].message.content
    assert finish == "tool_calls"
    expected = whole.choices[0].message.tool_calls or []
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (t.function.name, json.loads(t.function.arguments)) for t in expected
    ]


def test_openai_stream_helper_accumulates(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="tool-model", messages=ASK, tools=TOOLS) as s:
        final = s.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_round_trip_with_the_tools_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS)
    msg = first.choices[0].message
    call = (msg.tool_calls or [])[0]
    history: list[Any] = [
        *ASK,
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    again = client.chat.completions.create(model="tool-model", messages=history, tools=TOOLS)
    assert again.choices[0].finish_reason == "tool_calls"  # the scripted model always calls


def test_tool_choice_none_returns_text(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tool-model", messages=ASK, tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert "<tool_call>" in (r.choices[0].message.content or "")


def test_named_choice_of_another_tool_is_not_a_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tool-model",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert "get_weather" in (r.choices[0].message.content or "")


def test_legacy_functions(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tool-model", messages=ASK, functions=[TOOLS[0]["function"]]
    )
    assert r.choices[0].finish_reason == "function_call"
    fc = r.choices[0].message.function_call
    assert fc is not None and fc.name == "get_weather"
    assert json.loads(fc.arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": [{**TOOLS[0], "function": {"name": "x", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": {}},
                }
            },
            "response_format",
        ),
    ],
)
def test_errors_name_the_parameter(tool_server: Server, extra: dict[str, Any], param: str) -> None:
    body = {"model": "tool-model", "messages": ASK, **extra}
    r = httpx.post(tool_server.v1 + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_log_has_no_traceback(tool_server: Server) -> None:
    assert "Traceback" not in tool_server.log()


def test_responses_validate_against_openais_schemas(tool_server: Server) -> None:
    body = {"model": "tool-model", "messages": ASK, "tools": TOOLS}
    r = httpx.post(tool_server.v1 + "/chat/completions", json=body, timeout=30)
    validate("CreateChatCompletionResponse", r.json())
    with httpx.stream(
        "POST", tool_server.v1 + "/chat/completions", json={**body, "stream": True}, timeout=30
    ) as s:
        events, done = read_sse(s)
    assert done
    for event in events:
        validate("CreateChatCompletionStreamResponse", event)


def test_openai_upstream_passes_tools_through(
    tool_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GPU_BACKEND=openai in front of this server: the upstream's tool calls come back."""
    log = tmp_path_factory.mktemp("upstream") / "server.log"
    env = gpu_env(tool_server.base_url, GPU_BACKEND="openai", GPU_MODEL_ID="tool-model")
    with run_server(env, log, timeout=30) as front:
        c = openai.OpenAI(base_url=front.v1, api_key="x", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS)
        (call,) = r.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
        with c.chat.completions.stream(model="tool-model", messages=ASK, tools=TOOLS) as s:
            final = s.get_final_completion()
        assert (final.choices[0].message.tool_calls or [])[0].function.name == "get_weather"
