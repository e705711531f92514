"""Lone surrogates (``"\\ud800"`` in the JSON) in any string field of any request, against the
real server: a 400 naming the parameter, streamed or not, before anything is generated or
stored; and responses stored with one by an older version are readable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4all_api.response_store import ResponseStore, StoredResponse
from tests.support.fixtures import TINY
from tests.support.hardening_fixtures import model_env
from tests.support.server import Server, run_server

BAD = "x\ud800y"
TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def chat(**extra: Any) -> dict[str, Any]:
    hello = [{"role": "user", "content": "hi"}]
    return {"model": TINY, "max_tokens": 4, "messages": hello, **extra}


def with_call(call: dict[str, Any], answer_id: str = "call_1") -> dict[str, Any]:
    return chat(
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": answer_id, "content": "sunny"},
        ],
    )


def tool(**function: Any) -> dict[str, Any]:
    return {**TOOL, "function": {**TOOL["function"], **function}}


def fn(**changes: Any) -> dict[str, Any]:
    return {**CALL, "function": {**CALL["function"], **changes}}


CHAT_CASES: list[tuple[dict[str, Any], str]] = [
    (chat(messages=[{"role": "user", "content": BAD}]), "messages[0].content"),
    (
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": BAD}]}]),
        "messages[0].content[0].text",
    ),
    (chat(messages=[{"role": "user", "content": "hi", "name": BAD}]), "messages[0].name"),
    (with_call(fn(name=BAD)), "messages[1].tool_calls[0].function.name"),
    (
        with_call(fn(arguments='{"city": "' + BAD + '"}')),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (with_call({**CALL, "id": BAD}, BAD), "messages[1].tool_calls[0].id"),
    (chat(tools=[tool(description=BAD)]), "tools[0].function.description"),
    (
        chat(tools=[tool(parameters={"type": "object", "properties": {"city": {"title": BAD}}})]),
        "tools[0].function.parameters.properties.city.title",
    ),
    (
        chat(tools=[tool(parameters={"type": "object", "properties": {BAD: {}}})]),
        "tools[0].function.parameters.properties",
    ),
    (chat(functions=[{"name": "f", "description": BAD}]), "functions[0].description"),
    (chat(stop=["ok", BAD]), "stop[1]"),
    (chat(user=BAD), "user"),
    (chat(metadata={"k": BAD}), "metadata.k"),
    (
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
            "type": "object", "description": BAD}}}),
        "response_format.json_schema.schema.description",
    ),
]  # fmt: skip

RESPONSES_CASES: list[tuple[dict[str, Any], str]] = [
    ({"input": BAD}, "input"),
    ({"input": [{"role": "user", "content": BAD}]}, "input[0].content"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": BAD}]}]},
        "input[0].content[0].text",
    ),
    (
        {"input": [
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": BAD},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ]},
        "input[0].arguments",
    ),
    (
        {"input": [
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": BAD},
        ]},
        "input[1].output",
    ),
    ({"instructions": BAD}, "instructions"),
    ({"metadata": {"k": BAD}}, "metadata.k"),
    ({"metadata": {BAD: "v"}}, "metadata"),
    ({"user": BAD}, "user"),
    ({"tools": [{"type": "function", "name": "f", "description": BAD}]}, "tools[0].description"),
    (
        {"tools": [{"type": "function", "name": "f", "parameters": {
            "type": "object", "properties": {"a": {"enum": [BAD]}}}}]},
        "tools[0].parameters.properties.a.enum[0]",
    ),
    ({"previous_response_id": BAD}, "previous_response_id"),
    ({"safety_identifier": BAD}, "safety_identifier"),
]  # fmt: skip

COMPLETION_CASES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": BAD}, "prompt"),
    ({"prompt": ["ok", BAD]}, "prompt[1]"),
    ({"prompt": "hi", "stop": BAD}, "stop"),
    ({"prompt": "hi", "user": BAD}, "user"),
    ({"prompt": "hi", "suffix": BAD}, "suffix"),
]

EMBEDDING_CASES: list[tuple[dict[str, Any], str]] = [
    ({"input": BAD}, "input"),
    ({"input": ["ok", BAD]}, "input[1]"),
    ({"input": "ok", "user": BAD}, "user"),
]


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("surrogates-server")
    # n_ctx: the generic tool prompt of the clean requests fits
    env = model_env(tiny_models_dir, n_ctx=1024, data_dir=d / "data")
    with run_server(env, d / "server.log") as s:
        yield s


def post_raw(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes the surrogate as "\ud800" (what a client's JSON carries); httpx's
    # own json= would refuse to encode it
    return httpx.post(
        server.v1 + path,
        content=json.dumps(body).encode("ascii"),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def assert_names(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert "lone surrogate" in err["message"] and f"'{param}'" in err["message"]
    assert r.headers["content-type"] == "application/json"  # not an SSE stream


def stored_rows(server: Server) -> int:
    data_dir = Path(server.log_path).parent / "data"
    with sqlite3.connect(data_dir / "responses.sqlite3") as db:
        return db.execute("SELECT count(*) FROM gpt4all_api_responses").fetchone()[0]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "param"), CHAT_CASES)
def test_chat(server: Server, body: dict[str, Any], param: str, stream: bool) -> None:
    assert_names(post_raw(server, "/chat/completions", {**body, "stream": stream}), param)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "param"), RESPONSES_CASES)
def test_responses_nothing_generated_or_stored(
    server: Server, body: dict[str, Any], param: str, stream: bool
) -> None:
    before = stored_rows(server)
    request = {"model": TINY, "input": "hi", "store": True, "stream": stream, **body}
    assert_names(post_raw(server, "/responses", request), param)
    assert stored_rows(server) == before


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "param"), COMPLETION_CASES)
def test_completions(server: Server, body: dict[str, Any], param: str, stream: bool) -> None:
    request = {"model": TINY, "max_tokens": 2, "stream": stream, **body}
    assert_names(post_raw(server, "/completions", request), param)


@pytest.mark.parametrize(("body", "param"), EMBEDDING_CASES)
def test_embeddings(server: Server, body: dict[str, Any], param: str) -> None:
    # checked while parsing: before the model is even looked up (this server has none)
    assert_names(post_raw(server, "/embeddings", {"model": "any-embedder", **body}), param)


def test_the_same_requests_without_the_surrogate_are_served(server: Server) -> None:
    """The cases above fail for the surrogate alone: the same bodies with valid text work."""
    good = {"model": TINY, "input": "hi", "metadata": {"k": "ok é"}, "user": "u 🌍"}
    created = post_raw(server, "/responses", good)
    assert created.status_code == 200, created.text
    got = httpx.get(f"{server.v1}/responses/{created.json()['id']}")
    assert got.status_code == 200 and got.json()["metadata"] == {"k": "ok é"}
    for body, _ in CHAT_CASES[:6]:
        clean = json.loads(json.dumps(body).replace("\\ud800", "z"))
        r = post_raw(server, "/chat/completions", clean)
        assert r.status_code == 200, (clean, r.text)


def test_responses_stored_with_a_lone_surrogate_before_are_readable(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """An older version stored such a response (SQLite kept it as a JSON escape) and then
    answered 500 on every read: now it is read with U+FFFD in its place."""
    data = tmp_path / "data"
    output = [{"id": "msg_o", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": BAD, "annotations": [],
                            "logprobs": []}]}]  # fmt: skip
    record = StoredResponse(
        id="resp_old",
        created_at=1_700_000_000,
        model=TINY,
        response={
            "id": "resp_old", "object": "response", "created_at": 1_700_000_000,
            "status": "completed", "model": TINY, "output": output, "metadata": {"k": BAD},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        },
        input_items=[{"id": "msg_i", "type": "message", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": BAD}]}],
    )  # fmt: skip

    async def seed() -> None:
        store = ResponseStore(f"sqlite:///{data / 'responses.sqlite3'}")
        await store.start()
        await store.save(record)
        await store.close()

    asyncio.run(seed())
    with run_server(model_env(tiny_models_dir, data_dir=data), tmp_path / "server.log") as s:
        got = httpx.get(f"{s.v1}/responses/resp_old", timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["metadata"] == {"k": "x\ufffdy"}
        assert got.json()["output"][0]["content"][0]["text"] == "x\ufffdy"
        items = httpx.get(f"{s.v1}/responses/resp_old/input_items", timeout=30)
        assert items.status_code == 200, items.text
        assert items.json()["data"][0]["content"][0]["text"] == "x\ufffdy"
        more = httpx.post(
            f"{s.v1}/responses",
            json={"model": TINY, "input": "and?", "previous_response_id": "resp_old"},
            timeout=60,
        )
        assert more.status_code == 200, more.text
