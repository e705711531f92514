"""Structured output on CPU end to end: the real server, SmolLM2 and the clients people
use (openai's ``parse`` helpers, LangChain's ``with_structured_output``); every reply
parses and validates, streamed or not, and a cut one says ``length``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, SecretStr

from tests.support.fixtures import SMOL
from tests.support.server import Server
from tests.support.structured_cases import CASES, Event, Person

SAMPLES = 10


WEATHER_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(("model", "question"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_parse_helper_replies_are_always_valid(
    smol_client: openai.OpenAI, model: type[BaseModel], question: str
) -> None:
    """``chat.completions.parse`` (strict json_schema from a Pydantic model) at
    temperature 0.7: every sample parses, validates and ends by itself."""
    schema = to_strict_json_schema(model)
    for _ in range(SAMPLES):
        r = smol_client.chat.completions.parse(
            model=SMOL, messages=ask(question), response_format=model, temperature=0.7
        )
        choice = r.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, model)
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
        assert r.usage is not None and r.usage.completion_tokens > 0


def test_responses_parse_replies_are_always_valid(smol_client: openai.OpenAI) -> None:
    for model, question in CASES:
        for _ in range(SAMPLES):
            r = smol_client.responses.parse(
                model=SMOL, input=question, text_format=model, temperature=0.7
            )
            assert r.status == "completed"
            assert isinstance(r.output_parsed, model)
            assert r.usage is not None and r.usage.output_tokens > 0


def test_responses_stream_helper(smol_client: openai.OpenAI) -> None:
    """``responses.stream(text_format=...)``: the official event sequence, then the parsed
    final response."""
    with smol_client.responses.stream(
        model=SMOL, input=CASES[0][1], text_format=Person, temperature=0.7
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and isinstance(final.output_parsed, Person)
    assert "".join(deltas) == final.output_text


def test_streamed_deltas_make_the_same_json(smol_client: openai.OpenAI) -> None:
    """Greedy: the streamed deltas concatenate to the non-streamed reply, valid JSON; the
    usage chunk counts the same tokens."""
    schema = Person.model_json_schema()
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "Person", "schema": schema}}
    kw: Any = {"model": SMOL, "messages": ask(CASES[0][1]), "response_format": fmt}
    whole = smol_client.chat.completions.create(**kw, temperature=0)
    text, usage, finish = "", None, None
    for chunk in smol_client.chat.completions.create(
        **kw, temperature=0, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert text == whole.choices[0].message.content
    jsonschema.validate(json.loads(text), schema)
    assert finish == whole.choices[0].finish_reason == "stop"
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_json_object_mode(smol_client: openai.OpenAI) -> None:
    for _ in range(3):
        r = smol_client.chat.completions.create(
            model=SMOL,
            messages=ask("List three fruits and their colors as JSON."),
            response_format={"type": "json_object"},
            temperature=0.7,
        )
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}]
)
@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_calls_are_valid(smol_client: openai.OpenAI, choice: Any, stream: bool) -> None:
    allowed = {"get_time"} if isinstance(choice, dict) else {"get_weather", "get_time"}
    kw: Any = {"model": SMOL, "messages": ask("What's the weather in Paris?"),
               "tools": WEATHER_TOOLS, "tool_choice": choice, "temperature": 0.7}  # fmt: skip
    for _ in range(3):
        if stream:
            with smol_client.chat.completions.stream(**kw) as s:
                r = s.get_final_completion()
        else:
            r = smol_client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "tool_calls"
        (call,) = r.choices[0].message.tool_calls or []
        assert call.function.name in allowed
        spec = next(t["function"] for t in WEATHER_TOOLS if t["function"]["name"] in allowed
                    and t["function"]["name"] == call.function.name)  # fmt: skip
        jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])


def test_a_cut_reply_says_length(smol_client: openai.OpenAI) -> None:
    """max_tokens too small for the structure: finish_reason length, the valid prefix as
    content, and openai's parse helper raises as it does with OpenAI."""
    r = smol_client.chat.completions.create(
        model=SMOL,
        messages=ask(CASES[0][1]),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "P", "schema": Person.model_json_schema()},
        },
        max_tokens=5,
    )
    assert r.choices[0].finish_reason == "length" and r.usage is not None
    assert r.usage.completion_tokens == 5
    assert (r.choices[0].message.content or "").startswith('{"')
    with pytest.raises(openai.LengthFinishReasonError):
        smol_client.chat.completions.parse(
            model=SMOL, messages=ask(CASES[0][1]), response_format=Person, max_tokens=5
        )


@pytest.mark.parametrize("method", [None, "function_calling", "json_mode"])
def test_langchain_with_structured_output(smol_server: Server, method: str | None) -> None:
    """None: LangChain's default (``json_schema`` with strict, for ChatOpenAI)."""
    llm = ChatOpenAI(
        base_url=smol_server.v1, api_key=SecretStr("x"), model=SMOL, temperature=0.7, max_retries=0
    )
    if method == "json_mode":  # JSON, any shape: parsed to a dict
        schema: Any = {"title": "Fruits", "type": "object", "properties": {}}
        question = "List three fruits and their colors as JSON."
    else:
        schema, question = Event, CASES[1][1]
    kw: Any = {} if method is None else {"method": method}
    structured = llm.with_structured_output(schema, **kw)
    for _ in range(2):
        out = structured.invoke(question)
        if method == "json_mode":
            assert isinstance(out, dict)
        else:
            assert isinstance(out, Event)


def test_repairs_are_in_metrics(smol_server: Server) -> None:
    text = httpx.get(smol_server.base_url + "/metrics", timeout=10).text
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gpt4all_api_structured_") and f'model="{SMOL}"' in line
    }
    assert values["gpt4all_api_structured_outputs_total"] >= 3 * SAMPLES
    assert "gpt4all_api_structured_repairs_total" in values
    assert "gpt4all_api_structured_rollbacks_total" in values


def test_auto_tools_beside_a_response_format(smol_client: openai.OpenAI) -> None:
    """What the OpenAI Agents SDK sends with ``output_type`` and tools: the reply is a
    valid call or the valid JSON value, whichever the model starts."""
    spec: Any = {"name": "Event", "schema": to_strict_json_schema(Event), "strict": True}
    fmt: Any = {"type": "json_schema", "json_schema": spec}
    kinds = set()
    for question in ("What's the weather in Paris?", CASES[1][1], "What time is it in Tokyo?"):
        r = smol_client.chat.completions.create(
            model=SMOL,
            messages=ask(question),
            tools=WEATHER_TOOLS,
            response_format=fmt,
            temperature=0.7,
        )
        choice = r.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            for call in choice.message.tool_calls:
                spec = next(
                    t["function"]
                    for t in WEATHER_TOOLS
                    if t["function"]["name"] == call.function.name
                )
                jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])
            kinds.add("call")
        else:
            assert choice.finish_reason == "stop"
            Event.model_validate_json(choice.message.content or "")
            kinds.add("json")
    assert kinds
