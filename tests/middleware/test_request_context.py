"""Request ids and the access log against the real server: X-Request-ID kept when safe,
generated otherwise, returned on every response, and on the one access line per request,
which carries tokens and timings when text was generated."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpt4all_api.logs import JsonFormatter, RequestIdFilter, TextFormatter
from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server


def access_lines(server: Server, request_id: str, timeout: float = 5.0) -> list[str]:
    """The access lines for ``request_id`` (written when the response is done)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            line
            for line in server.log().splitlines()
            if "gpt4all_api.access" in line and request_id in line
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_request_id_is_kept_or_generated_and_returned(tiny_server: Server) -> None:
    mine = "client-" + uuid.uuid4().hex[:8]
    r = httpx.get(tiny_server.v1 + "/models", headers={"X-Request-ID": mine})
    assert r.headers["x-request-id"] == mine
    generated = httpx.get(tiny_server.v1 + "/models").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for unsafe in ("x" * 200, "has space", "new\tline", "\xfcn\xefcode".encode("latin-1"), ""):
        r = httpx.get(tiny_server.base_url + "/health", headers={"X-Request-ID": unsafe})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), unsafe
    # errors carry it too
    r = httpx.get(tiny_server.v1 + "/models/nope", headers={"X-Request-ID": mine + "-404"})
    assert r.status_code == 404 and r.headers["x-request-id"] == mine + "-404"


def test_one_access_line_with_tokens_and_timings(tiny_server: Server) -> None:
    rid = "completion-" + uuid.uuid4().hex
    r = httpx.post(
        tiny_server.v1 + "/completions",
        json={"model": TINY, "prompt": "hi", "max_tokens": 5},
        headers={"X-Request-ID": rid},
    )
    assert r.status_code == 200
    usage = r.json()["usage"]
    (line,) = access_lines(tiny_server, rid)
    assert f"[{rid}]" in line and "POST /v1/completions 200" in line
    f = fields(line)
    assert f["route"] == "/v1/completions" and f["model"] == TINY and f["stream"] == "false"
    assert int(f["prompt_tokens"]) == usage["prompt_tokens"]
    assert int(f["completion_tokens"]) == usage["completion_tokens"] == 5
    assert float(f["ttft_ms"]) > 0 and float(f["duration_ms"]) >= float(f["ttft_ms"])
    assert float(f["tokens_per_s"]) > 0 and "queue_ms" in f


def test_streams_are_logged_when_done(tiny_server: Server) -> None:
    rid = "stream-" + uuid.uuid4().hex
    body = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST", tiny_server.v1 + "/chat/completions", json=body, headers={"X-Request-ID": rid}
    ) as r:
        assert r.headers["x-request-id"] == rid
        r.read()
    (line,) = access_lines(tiny_server, rid)
    f = fields(line)
    assert f["stream"] == "true" and f["completion_tokens"] == "7" and "ttft_ms" in f


def test_requests_without_generation_have_a_plain_line(tiny_server: Server) -> None:
    rid = "plain-" + uuid.uuid4().hex
    httpx.post(tiny_server.v1 + "/completions", content=b"{", headers={"X-Request-ID": rid})
    (line,) = access_lines(tiny_server, rid)
    assert "POST /v1/completions 400" in line and "model=" not in line


@pytest.fixture(scope="module")
def json_server(
    loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = model_env(loop_models_dir, log_format="json")
    with serve(tmp_path_factory, "json-log-server", env) as s:
        yield s


def test_json_logs(json_server: Server) -> None:
    rid = "json-" + uuid.uuid4().hex
    httpx.post(
        json_server.v1 + "/completions",
        json={"model": TINY, "prompt": "hi", "max_tokens": 3},
        headers={"X-Request-ID": rid},
    )
    (line,) = access_lines(json_server, rid)
    record = json.loads(line)
    assert record["request_id"] == rid and record["logger"] == "gpt4all_api.access"
    assert record["status"] == 200 and record["completion_tokens"] == 3
    assert record["route"] == "/v1/completions" and record["ttft_ms"] > 0
    records = [json.loads(x) for x in json_server.log().splitlines() if x.startswith("{")]
    assert any(r["logger"].startswith("uvicorn") for r in records)


def test_a_dropped_stream_is_logged_with_its_prompt_tokens(json_server: Server) -> None:
    """The client leaves mid-stream (the loop model would go on for 4000 tokens): usage was
    never sent, but the access line still has the prompt's real token count."""
    from tests.support.hardening_fixtures import LOOP

    messages = [{"role": "user", "content": "Tell me a long story about a tiny test model."}]
    whole = httpx.post(
        json_server.v1 + "/chat/completions",
        json={"model": LOOP, "messages": messages, "max_tokens": 1},
        timeout=60,
    )
    prompt_tokens = whole.json()["usage"]["prompt_tokens"]
    rid = "dropped-" + uuid.uuid4().hex
    body = {"model": LOOP, "messages": messages, "max_tokens": 4000, "stream": True}
    with httpx.stream(
        "POST", json_server.v1 + "/chat/completions", json=body, headers={"X-Request-ID": rid}
    ) as r:
        for line in r.iter_lines():
            if '"content":"H' in line.replace(" ", ""):
                break  # tokens are flowing: leave
    (line,) = access_lines(json_server, rid, timeout=30)
    record = json.loads(line)
    assert record["stream"] is True and 0 < record["completion_tokens"] < 4000
    assert record["prompt_tokens"] == prompt_tokens > 0


def test_formatters_escape_what_could_forge_a_line() -> None:
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s", ("/a",), None)
    record.fields = {"path": "/a\nINFO forged", "n": 1, "none": None}
    RequestIdFilter().filter(record)
    text = TextFormatter().format(record)
    assert "\n" not in text and 'path="/a\\nINFO forged"' in text and "none=" not in text
    assert json.loads(JsonFormatter().format(record))["path"] == "/a\nINFO forged"
