"""A hung response database during traffic, against the real server and a real PostgreSQL
whose processes are all stopped (SIGSTOP): every stored-response request answers 503
``response_store_unavailable`` within RESPONSE_STORE_TIMEOUT (all of them, not batch after
batch), a streamed request that stores ends with its error event as promptly, requests that
need no store (chat, store: false) are served as usual, and all is well once the database
resumes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fixtures import TINY
from tests.support.hardening_fixtures import model_env
from tests.support.postgres import PostgresServer, paused
from tests.support.server import Server, run_server

STORE_TIMEOUT = 2.0
#: Generous for a busy 2-core machine; without the bound these waited 10 s per batch.
SLACK = 2.5


@pytest.fixture
def server(tiny_models_dir: Path, postgres_url: str, tmp_path: Path) -> Iterator[Server]:
    env = model_env(
        tiny_models_dir, database_url=postgres_url, response_store_timeout=STORE_TIMEOUT
    )
    with run_server(env, tmp_path / "server.log") as s:
        yield s


def timed(method: str, url: str, **kw: Any) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    r = httpx.request(method, url, timeout=60, **kw)
    return time.monotonic() - started, r


def streamed(server: Server, body: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    started = time.monotonic()
    events = []
    with httpx.stream("POST", f"{server.v1}/responses", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return time.monotonic() - started, events


def assert_unavailable(seconds: float, r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "response_store_unavailable"
    assert seconds < STORE_TIMEOUT + SLACK, seconds


def test_a_hung_database_is_a_prompt_503(server: Server, postgres_server: PostgresServer) -> None:
    first = httpx.post(f"{server.v1}/responses", json={"model": TINY, "input": "hi"}, timeout=60)
    assert first.status_code == 200, first.text
    rid = first.json()["id"]
    url = f"{server.v1}/responses/{rid}"
    stored = {"model": TINY, "input": "hello", "store": True}

    with paused(postgres_server), ThreadPoolExecutor(12) as pool:
        # Traffic at once: reads, continuations, deletes, stores, streamed and not.
        reads = [pool.submit(timed, "GET", url) for _ in range(6)]
        reads += [pool.submit(timed, "GET", url + "/input_items") for _ in range(2)]
        reads.append(pool.submit(timed, "DELETE", url))
        continued = {"model": TINY, "input": "more", "previous_response_id": rid}
        reads.append(pool.submit(timed, "POST", f"{server.v1}/responses", json=continued))
        creates = [pool.submit(timed, "POST", f"{server.v1}/responses", json=stored)]
        stream = pool.submit(streamed, server, {**stored, "stream": True})
        # Meanwhile, what needs no store is served as usual.
        chat = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        seconds, r = timed("POST", f"{server.v1}/chat/completions", json=chat)
        assert r.status_code == 200 and seconds < SLACK, (seconds, r.text)
        seconds, r = timed("POST", f"{server.v1}/responses", json={**stored, "store": False})
        assert r.status_code == 200 and seconds < SLACK, (seconds, r.text)
        assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200

        for future in reads + creates:
            assert_unavailable(*future.result())
        seconds, events = stream.result()
        assert seconds < STORE_TIMEOUT + SLACK, seconds
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert "response store" in events[-2]["message"]
        assert not any(e["type"] == "response.completed" for e in events)

    # Resumed: the same requests succeed again (broken connections were replaced).
    deadline = time.monotonic() + 15
    while True:
        r = httpx.get(url, timeout=30)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    again = httpx.post(f"{server.v1}/responses", json=stored, timeout=60)
    assert again.status_code == 200, again.text
    assert httpx.get(f"{server.v1}/responses/{again.json()['id']}", timeout=30).status_code == 200
    assert "response store failed" in server.log()  # each failure is logged, one line
