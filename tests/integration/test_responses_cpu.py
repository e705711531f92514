"""The Responses API end to end on the real gpt4all backend (the tiny scripted model), the
real server and the official ``openai`` client: created streamed and not, stored,
retrieved, continued, deleted, paginated, refused; every Response, stream event and item
list checked against OpenAI's official schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fixtures import TINY
from tests.support.responses_schema import validate_event, validate_item_list, validate_response
from tests.support.server import Server, run_server
from tests.support.sse import read_response_events
from tests.support.tinymodel import DEFAULT_SENTENCE

MAX_TOKENS_LIMIT = 64

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 7,  # the tiny model's sentence is 7 pieces
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("responses-server")
    env = {
        "MODELS_DIR": str(tiny_models_dir),
        "MODEL": TINY,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "N_CTX": "256",
        "DATA_DIR": str(d / "data"),
        "MAX_TOKENS_LIMIT": str(MAX_TOKENS_LIMIT),
    }
    with run_server(env, d / "server.log") as s:
        yield s


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=60)


def post(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.v1 + "/responses", json={"model": TINY, **body}, timeout=60)


def stream_events(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw SSE stream, each event checked against its official schema and numbered."""
    with httpx.stream(
        "POST", server.v1 + "/responses", json={"model": TINY, "stream": True, **body}, timeout=60
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_response_events(r)
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_non_streamed(server: Server, client: openai.OpenAI) -> None:
    raw = post(server, {"input": "Say hi", "instructions": "Be brief.", "metadata": {"k": "v"}})
    assert raw.status_code == 200
    body = raw.json()
    validate_response(body)
    assert body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["instructions"] == "Be brief." and body["metadata"] == {"k": "v"}
    (item,) = body["output"]
    assert item["type"] == "message" and item["content"][0]["text"] == DEFAULT_SENTENCE
    usage = body["usage"]
    assert usage["output_tokens"] == 7
    assert usage["total_tokens"] == usage["input_tokens"] + 7
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}

    r = client.responses.create(model=TINY, input="Say hi")
    assert r.output_text == DEFAULT_SENTENCE and r.status == "completed"
    assert r.usage is not None and r.usage.input_tokens > 0


def test_streamed_raw_events(server: Server) -> None:
    events = stream_events(server, {"input": "Say hi"})
    assert [e["type"] for e in events] == TEXT_EVENTS
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == DEFAULT_SENTENCE
    final = events[-1]["response"]
    validate_response(final)
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == DEFAULT_SENTENCE
    assert final["usage"]["output_tokens"] == 7
    # created before in_progress, both in progress; every event about the same response
    assert events[0]["response"]["status"] == events[1]["response"]["status"] == "in_progress"
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}
    # stored before its last event was sent: retrievable at once, identical
    stored = httpx.get(f"{server.v1}/responses/{final['id']}")
    assert stored.json() == final


def test_sdk_stream_and_final_response(server: Server, client: openai.OpenAI) -> None:
    with client.responses.stream(model=TINY, input="Say hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == TEXT_EVENTS
    assert final.output_text == DEFAULT_SENTENCE and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == DEFAULT_SENTENCE


def test_stored_retrieved_and_continued(server: Server, client: openai.OpenAI) -> None:
    first = client.responses.create(model=TINY, input="My name is Ann.", instructions="Be kind.")
    got = httpx.get(f"{server.v1}/responses/{first.id}")
    validate_response(got.json())
    assert got.json()["id"] == first.id and got.json()["status"] == "completed"
    assert client.responses.retrieve(first.id).output_text == DEFAULT_SENTENCE

    second = client.responses.create(
        model=TINY, input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.instructions is None
    # The history was rebuilt: the prompt is the whole conversation (instructions are not
    # carried over), token for token what chat counts for the same messages.
    chat = client.chat.completions.create(
        model=TINY,
        messages=[
            {"role": "user", "content": "My name is Ann."},
            {"role": "assistant", "content": DEFAULT_SENTENCE},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert second.usage is not None and chat.usage is not None
    assert second.usage.input_tokens == chat.usage.prompt_tokens

    # Its input items are its own input only; the first response's are its own too.
    items = httpx.get(f"{server.v1}/responses/{second.id}/input_items").json()
    validate_item_list(items)
    (item,) = items["data"]
    assert item["role"] == "user" and item["content"][0]["text"] == "What is my name?"
    assert items["first_id"] == items["last_id"] == item["id"] and items["has_more"] is False

    # A third turn continues the chain through both.
    third = client.responses.create(model=TINY, input="And again?", previous_response_id=second.id)
    assert third.usage is not None and third.usage.input_tokens > second.usage.input_tokens
    # ... and is evaluated incrementally: the conversation cache still holds the second
    # turn's prompt (a slot kept it), so at least all of it is reused.
    cached = third.usage.input_tokens_details.cached_tokens
    assert second.usage.input_tokens <= cached < third.usage.input_tokens


def test_streamed_continuation(server: Server, client: openai.OpenAI) -> None:
    first = client.responses.create(model=TINY, input="Remember 7.")
    events = stream_events(server, {"input": "Which number?", "previous_response_id": first.id})
    final = events[-1]["response"]
    assert final["previous_response_id"] == first.id and final["status"] == "completed"
    whole = client.responses.create(
        model=TINY, input="Which number?", previous_response_id=first.id
    )
    assert whole.usage is not None
    assert final["usage"]["input_tokens"] == whole.usage.input_tokens


def test_deleted(server: Server, client: openai.OpenAI) -> None:
    r = client.responses.create(model=TINY, input="hi")
    deleted = httpx.delete(f"{server.v1}/responses/{r.id}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": r.id, "object": "response", "deleted": True}
    err = error_of(httpx.get(f"{server.v1}/responses/{r.id}"), 404)
    assert err["code"] == "response_not_found" and r.id in err["message"]
    err = error_of(post(server, {"input": "more", "previous_response_id": r.id}), 404)
    assert err["code"] == "response_not_found" and err["param"] == "previous_response_id"
    err = error_of(httpx.get(f"{server.v1}/responses/{r.id}/input_items"), 404)
    assert err["code"] == "response_not_found"
    error_of(httpx.delete(f"{server.v1}/responses/{r.id}"), 404)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_store_false_is_not_kept(server: Server, client: openai.OpenAI) -> None:
    r = client.responses.create(model=TINY, input="hi", store=False)
    assert r.store is False and r.output_text == DEFAULT_SENTENCE
    error_of(httpx.get(f"{server.v1}/responses/{r.id}"), 404)
    err = error_of(post(server, {"input": "more", "previous_response_id": r.id}), 404)
    assert err["param"] == "previous_response_id"
    events = stream_events(server, {"input": "hi", "store": False})
    error_of(httpx.get(f"{server.v1}/responses/{events[-1]['response']['id']}"), 404)
    err = error_of(post(server, {"input": "x", "previous_response_id": "resp_unknown"}), 404)
    assert err["code"] == "response_not_found"


def test_stored_responses_name_their_id_before_the_body(server: Server) -> None:
    """``x-response-id`` comes with the headers, streamed too, so a load balancer can learn
    where a response lives; responses that are not stored have none."""
    plain = post(server, {"input": "hi", "prompt_cache_key": "conversation-1"})
    assert plain.status_code == 200
    assert plain.headers["x-response-id"] == plain.json()["id"]
    with httpx.stream(
        "POST", server.v1 + "/responses", json={"model": TINY, "input": "hi", "stream": True}
    ) as streamed:
        assert streamed.status_code == 200
        rid = streamed.headers["x-response-id"]
        body = streamed.read().decode()
    assert f'"id":"{rid}"' in body.replace(" ", "")
    assert "x-response-id" not in post(server, {"input": "hi", "store": False}).headers


def test_input_items_pagination(server: Server, client: openai.OpenAI) -> None:
    texts = [f"m{i}" for i in range(5)]
    r = client.responses.create(model=TINY, input=[{"role": "user", "content": t} for t in texts])
    url = f"{server.v1}/responses/{r.id}/input_items"

    def page(**params: Any) -> dict[str, Any]:
        got = httpx.get(url, params=params)
        assert got.status_code == 200, got.text
        validate_item_list(got.json())
        return got.json()

    def shown(p: dict[str, Any]) -> list[str]:
        return [item["content"][0]["text"] for item in p["data"]]

    assert shown(page()) == texts[::-1]  # desc by default
    first = page(order="asc", limit=2)
    assert shown(first) == ["m0", "m1"] and first["has_more"] is True
    second = page(order="asc", limit=2, after=first["last_id"])
    assert shown(second) == ["m2", "m3"] and second["has_more"] is True
    last = page(order="asc", limit=2, after=second["last_id"])
    assert shown(last) == ["m4"] and last["has_more"] is False
    back = page(order="asc", limit=2, before=last["first_id"])
    assert shown(back) == ["m2", "m3"]
    assert shown(page(order="desc", limit=2)) == ["m4", "m3"]
    sdk = client.responses.input_items.list(r.id, order="asc", limit=2)
    assert [i.id for i in sdk.data] == [i["id"] for i in first["data"]]
    assert [i.content[0].text for i in sdk] == texts  # type: ignore[union-attr]  # auto-pagination

    assert error_of(httpx.get(url, params={"after": "msg_nope"}), 400)["param"] == "after"
    assert error_of(httpx.get(url, params={"before": "msg_nope"}), 400)["param"] == "before"
    assert error_of(httpx.get(url, params={"limit": 0}), 400)["param"] == "limit"
    assert error_of(httpx.get(url, params={"limit": 101}), 400)["param"] == "limit"
    assert error_of(httpx.get(url, params={"order": "up"}), 400)["param"] == "order"


def test_max_output_tokens_makes_it_incomplete(server: Server, client: openai.OpenAI) -> None:
    r = client.responses.create(model=TINY, input="hi", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 3
    assert r.output[0].status == "incomplete"  # type: ignore[union-attr]
    validate_response(httpx.get(f"{server.v1}/responses/{r.id}").json())
    events = stream_events(server, {"input": "hi", "max_output_tokens": 3})
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    validate_response(final)
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["content"][0]["text"] == r.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_limits_and_refusals_name_the_parameter(server: Server, stream: bool) -> None:
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"input": "x" * 400}, 400, "input", "context_length_exceeded"),
        (
            {"input": "hi", "max_output_tokens": MAX_TOKENS_LIMIT + 1},
            400,
            "max_output_tokens",
            None,
        ),
        ({"input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens", None),
        (
            {
                "input": "hi",
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "o",
                        "strict": True,
                        "schema": {"type": "object", "properties": {"a": {"not": {}}}},
                    }
                },
            },
            400,
            "text.format",
            None,
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools[0].type", None),
        ({"input": "hi", "background": True}, 400, "background", None),
        ({"input": "hi", "truncation": "auto"}, 400, "truncation", None),
        ({"input": []}, 400, "input", None),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            400,
            "input[0].content[0]",
            None,
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c1", "output": "x"}]},
            400,
            "input[0].call_id",
            None,
        ),
        ({"input": "hi", "temperature": 3}, 400, "temperature", None),
        ({"model": "no-such-model", "input": "hi"}, 404, "model", "model_not_found"),
    ]
    for body, status, param, code in cases:
        err = error_of(post(server, {**body, "stream": stream}), status)
        assert err["param"] == param, (body, err)
        if code is not None:
            assert err["code"] == code, (body, err)
    assert error_of(post(server, {"input": "x" * 400, "stream": stream}), 400)["message"].endswith(
        "Please shorten your input."
    )


def test_docs_show_the_routes(server: Server) -> None:
    paths = httpx.get(server.base_url + "/openapi.json").json()["paths"]
    assert set(paths["/v1/responses"]) == {"post"}
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert set(paths["/v1/responses/{response_id}/input_items"]) == {"get"}


def test_request_ids_and_metrics_apply(server: Server) -> None:
    r = post(server, {"input": "hi"})
    assert r.headers.get("x-request-id")
    assert httpx.get(f"{server.v1}/responses/{r.json()['id']}").headers.get("x-request-id")
    metrics = httpx.get(server.base_url + "/metrics").text
    assert 'method="POST",route="/v1/responses",status="200"' in metrics
    assert 'route="/v1/responses/{response_id}"' in metrics
    assert f'_generated_tokens_total{{model="{TINY}"}}' in metrics


def test_stored_responses_survive_a_restart(tiny_models_dir: Path, tmp_path: Path) -> None:
    env = {
        "MODELS_DIR": str(tiny_models_dir),
        "MODEL": TINY,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "N_CTX": "256",
        "DATA_DIR": str(tmp_path / "data"),
    }
    with run_server(env, tmp_path / "first.log") as s:
        made = post(s, {"input": "Keep this."}).json()
    assert (tmp_path / "data" / "responses.sqlite3").is_file()
    with run_server(env, tmp_path / "second.log") as s:
        got = httpx.get(f"{s.v1}/responses/{made['id']}")
        assert got.status_code == 200 and got.json() == made
        more = post(s, {"input": "And now?", "previous_response_id": made["id"]})
        assert more.status_code == 200 and more.json()["previous_response_id"] == made["id"]


def test_unreachable_database_is_one_line_at_start_up(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    import subprocess

    from tests.support.server import free_port

    env = {
        "MODELS_DIR": str(tiny_models_dir),
        "MODEL": TINY,
        "EMBEDDING_MODEL": "",
        "DATABASE_URL": f"postgresql://app:s3cret@127.0.0.1:{free_port()}/db",
    }
    log = tmp_path / "server.log"
    with run_server(env, log, expect_healthy=False) as s:
        try:
            s.process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop")
        assert s.process.returncode == 2
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("Cannot start: the response store postgresql+psycopg://app:***@")
    assert "s3cret" not in text and "Traceback" not in text
