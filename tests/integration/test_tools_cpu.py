"""Tool calling end to end on the real gpt4all backend: a tiny scripted GGUF whose answer
is a tool call (with a tool-aware template, and with none: the generic fallback) and, after
a tool result, a sentence; the real server, the official ``openai`` client and LangChain's
``ChatOpenAI.bind_tools``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.support.gpu_fixtures import gpu_env
from tests.support.openai_schema import validate
from tests.support.server import Server, run_server
from tests.support.sse import read_sse
from tests.support.tinymodel import (
    DEFAULT_SENTENCE,
    TOOL_ANSWER_SENTENCE,
    build_tiny_model,
    build_tool_model,
)

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
#: A schema keyword the decoder cannot hold a reply to (a 400 in strict mode).
PATTERN_SCHEMA = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^a+$"}}}
STRICT_PATTERN_TOOL: Any = {
    "type": "function",
    "function": {"name": "lookup", "strict": True, "parameters": PATTERN_SCHEMA},
}
#: A second model in the same directory whose call holds invalid JSON.
BROKEN_CALL = (
    'Let me see. <tool_call>{"name": "get_weather", "arguments": {city: Paris}}</tool_call>'
)


@pytest.fixture(scope="module", params=["template", "fallback"])
def tool_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    d = tmp_path_factory.mktemp(f"tool-model-{request.param}")
    if request.param == "template":
        build_tool_model(d / "tool-model.gguf")
    else:  # ChatML only: tools go into the system prompt
        build_tool_model(d / "tool-model.gguf", chat_template=None)
    build_tiny_model(d / "broken-call.gguf", BROKEN_CALL)
    build_tiny_model(d / "plain.gguf")  # never calls
    env = {"MODELS_DIR": str(d), "MODEL": "tool-model", "EMBEDDING_MODEL": "", "N_THREADS": "1"}
    with run_server(env, d / "server.log") as server:
        yield server


@pytest.fixture
def kind(request: pytest.FixtureRequest, tool_server: Server) -> str:
    """``template`` (a tool-aware template) or ``fallback`` (the generic one)."""
    return str(request.node.callspec.params["tool_server"])


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


def _without_ids(message: Any) -> dict[str, Any]:
    """What the client sees of a message (the accumulator adds its own helper fields)."""
    calls = []
    for call in message.tool_calls or []:
        assert call.id.startswith("call_")
        calls.append((call.type, call.function.name, call.function.arguments))
    return {"role": message.role, "content": message.content, "tool_calls": calls}


def test_openai_stream_helper_accumulates(client: openai.OpenAI) -> None:
    """openai-python's own accumulator (``.stream()``) builds the non-streamed reply."""
    whole = client.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS)
    with client.chat.completions.stream(model="tool-model", messages=ASK, tools=TOOLS) as s:
        final = s.get_final_completion()
    assert _without_ids(final.choices[0].message) == _without_ids(whole.choices[0].message)
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason == "tool_calls"
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'


def _round_trip_history(client: openai.OpenAI, **kw: Any) -> list[Any]:
    first = client.chat.completions.create(model="tool-model", messages=ASK, tools=TOOLS, **kw)
    msg = first.choices[0].message
    call = (msg.tool_calls or [])[0]
    return [
        *ASK,
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]


def test_round_trip_with_the_tools_result(client: openai.OpenAI, kind: str) -> None:
    history = _round_trip_history(client)
    again = client.chat.completions.create(model="tool-model", messages=history, tools=TOOLS)
    if kind == "template":  # the scripted model answers in words after a tool result
        assert again.choices[0].finish_reason == "stop"
        assert again.choices[0].message.content == TOOL_ANSWER_SENTENCE
        assert again.choices[0].message.tool_calls is None
    else:  # the generic fallback prompt cannot carry the script's trigger: it calls again
        assert again.choices[0].finish_reason == "tool_calls"


def _check_call(call: Any, allowed: set[str]) -> dict[str, Any]:
    """A real call of an allowed tool, its arguments valid against the tool's schema."""
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in allowed
    spec = next(t["function"] for t in TOOLS if t["function"]["name"] == call.function.name)
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, spec.get("parameters", {"type": "object"}))
    return dict(args)


def test_required_choice_returns_a_valid_call(client: openai.OpenAI) -> None:
    """The tiny model's script cannot follow the forced markup: the decoder still writes
    a call of one of the tools (the model's text fits neither name, so the nearest
    complete one), never words."""
    r = client.chat.completions.create(
        model="tool-model", messages=ASK, tools=TOOLS, tool_choice="required"
    )
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content is None
    (call,) = r.choices[0].message.tool_calls or []
    _check_call(call, {"get_weather", "get_time"})


def test_forced_call_from_a_model_that_answers_in_words(client: openai.OpenAI) -> None:
    """A model that only ever says one sentence, forced to call get_weather: the call's
    markup and keys are written for it, and its sentence becomes the argument (EOS inside
    the string: the decoder closes it). Streamed, the same call arrives in pieces."""
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    r = client.chat.completions.create(model="plain", messages=ASK, tools=TOOLS, tool_choice=named)
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls or []
    assert _check_call(call, {"get_weather"}) == {"city": DEFAULT_SENTENCE}
    assert r.usage is not None and r.usage.completion_tokens > 0
    args, names = "", []
    for chunk in client.chat.completions.create(
        model="plain", messages=ASK, tools=TOOLS, tool_choice=named, stream=True
    ):
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            names += [tc.function.name] if tc.function and tc.function.name else []
            args += tc.function.arguments or "" if tc.function else ""
    assert names == ["get_weather"] and json.loads(args) == {"city": DEFAULT_SENTENCE}


def test_required_choice_after_a_tool_result(client: openai.OpenAI, kind: str) -> None:
    """Where the scripted model would answer a tool result in words, a required or named
    choice still gets a call (the history's call and result rendered as the template
    does)."""
    history = _round_trip_history(client)
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(
            model="tool-model", messages=history, tools=TOOLS, tool_choice=choice
        )
        assert r.choices[0].finish_reason == "tool_calls", kind
        allowed = {"get_weather"} if isinstance(choice, dict) else {"get_weather", "get_time"}
        (call,) = r.choices[0].message.tool_calls or []
        _check_call(call, allowed)


def test_invalid_json_in_a_call_is_content(client: openai.OpenAI, tool_server: Server) -> None:
    """A call block that does not parse is returned as text, streamed or not, never a 500."""
    r = client.chat.completions.create(model="broken-call", messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content == BROKEN_CALL
    text = ""
    for chunk in client.chat.completions.create(
        model="broken-call", messages=ASK, tools=TOOLS, stream=True
    ):
        if chunk.choices:
            assert not chunk.choices[0].delta.tool_calls
            text += chunk.choices[0].delta.content or ""
    assert text == BROKEN_CALL


def test_tool_choice_none_returns_text(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tool-model", messages=ASK, tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert "<tool_call>" in (r.choices[0].message.content or "")


def test_named_choice_of_another_tool(client: openai.OpenAI) -> None:
    """The script calls get_weather; named get_time gets a get_time call, not the
    script's."""
    r = client.chat.completions.create(
        model="tool-model",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls or []
    assert _check_call(call, {"get_time"}) == {}


def test_legacy_functions(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tool-model", messages=ASK, functions=[TOOLS[0]["function"]]
    )
    assert r.choices[0].finish_reason == "function_call"
    fc = r.choices[0].message.function_call
    assert fc is not None and fc.name == "get_weather"
    assert json.loads(fc.arguments) == {"city": "Paris"}
    assert r.choices[0].message.tool_calls is None


def test_legacy_function_round_trip(client: openai.OpenAI, kind: str) -> None:
    """``function_call`` in the history and a ``function`` role result: the same
    machinery as tool calls (the template sees a call and a tool result)."""
    functions: Any = [TOOLS[0]["function"]]
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"role": "function", "name": "get_weather", "content": '{"temp": 21}'},
    ]
    r = client.chat.completions.create(
        model="tool-model", messages=history, functions=functions, function_call="auto"
    )
    if kind == "template":
        assert r.choices[0].finish_reason == "stop"
        assert r.choices[0].message.content == TOOL_ANSWER_SENTENCE
    else:
        assert r.choices[0].finish_reason == "function_call"
    with client.chat.completions.stream(model="tool-model", messages=ASK, functions=functions) as s:
        final = s.get_final_completion()
    fc = final.choices[0].message.function_call
    assert fc is not None and fc.name == "get_weather" and fc.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "function_call"


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
            {"tools": [{"type": "function", "function": {"name": "x", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"functions": [TOOLS[0]["function"]], "function_call": {"name": "nope"}},
            "function_call",
        ),
        (
            {"functions": [TOOLS[0]["function"], TOOLS[0]["function"]]},
            "functions[1].name",
        ),
        (
            {"functions": [{"name": "f", "parameters": {"type": "array"}}]},
            "functions[0].parameters",
        ),
        ({"messages": [*ASK, {"role": "function", "content": "1"}]}, "messages[1].name"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "strict": True, "schema": PATTERN_SCHEMA},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
            "response_format.json_schema",
        ),
        (
            {
                "tools": [STRICT_PATTERN_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            },
            "tools[0].function.parameters",
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


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": TOOLS},
        {"functions": [TOOLS[0]["function"]]},
        {"tools": TOOLS, "model": "broken-call"},
    ],
    ids=["tools", "functions", "invalid-call"],
)
def test_responses_validate_against_openais_schemas(
    tool_server: Server, extra: dict[str, Any]
) -> None:
    body = {"model": "tool-model", "messages": ASK, **extra}
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


# --- LangChain (langchain-openai), as an agent framework drives the server ------------------


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return json.dumps({"city": city, "temp": 21})


def _chat_model(tool_server: Server) -> Any:
    llm = ChatOpenAI(
        base_url=tool_server.v1, api_key=SecretStr("x"), model="tool-model", max_retries=0
    )
    return llm.bind_tools([get_weather])


def test_langchain_bind_tools_round_trip(tool_server: Server, kind: str) -> None:
    llm = _chat_model(tool_server)
    messages: list[BaseMessage] = [HumanMessage("Weather in Paris?")]
    ai = llm.invoke(messages)
    assert isinstance(ai, AIMessage)
    (call,) = ai.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert call["id"] is not None and call["id"].startswith("call_")
    assert ai.response_metadata["finish_reason"] == "tool_calls"
    result = get_weather.invoke(call["args"])
    messages += [ai, ToolMessage(result, tool_call_id=call["id"])]
    answer = llm.invoke(messages)
    if kind == "template":
        assert answer.content == TOOL_ANSWER_SENTENCE and answer.tool_calls == []
        assert answer.response_metadata["finish_reason"] == "stop"
    else:  # the generic fallback prompt cannot carry the script's trigger: it calls again
        assert answer.tool_calls[0]["name"] == "get_weather"


def test_langchain_stream_merges_to_the_same_call(tool_server: Server) -> None:
    llm = _chat_model(tool_server)
    ask = [HumanMessage("Weather in Paris?")]
    whole = llm.invoke(ask)
    chunks = list(llm.stream(ask))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == whole.content == "Checking."
    (streamed,) = merged.tool_calls
    (expected,) = whole.tool_calls
    assert streamed["name"] == expected["name"] == "get_weather"
    assert streamed["args"] == expected["args"] == {"city": "Paris"}
    assert streamed["id"] is not None and streamed["id"].startswith("call_")
    assert merged.invalid_tool_calls == []
    assert merged.response_metadata["finish_reason"] == "tool_calls"
