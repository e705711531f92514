"""Overload against the real server: a bounded queue per model (MAX_QUEUE); beyond it 429
with Retry-After at once, while the queued requests are neither lost nor slowed; requests
waiting longer than QUEUE_TIMEOUT fail with 503 queue_timeout; clients that leave the
queue free their place."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.hardening_fixtures import LOOP, SENTENCE, model_env, serve
from tests.support.server import Server
from tests.support.sse import read_sse

MAX_QUEUE = 3
QUEUE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(
        loop_models_dir,
        model=LOOP,
        max_queue=MAX_QUEUE,
        queue_timeout=QUEUE_TIMEOUT,
        max_tokens_limit=10_000_000,
        parallel=1,  # one request runs, the others queue (PARALLEL runs several at once)
    )
    with serve(tmp_path_factory, "overload-server", env) as s:
        yield s


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@contextmanager
def busy_model(server: Server) -> Iterator[None]:
    """Hold the model with an endless stream (the loop model) until the block ends."""
    body = {"model": LOOP, "prompt": "go", "max_tokens": 5_000_000, "stream": True}
    with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()  # (dropping this iterator would close the connection)
        next(chunks)  # generating
        yield
    # leaving closes the connection: the server stops the generation and frees the model
    wait_until(lambda: metric(server, "gpt4all_api_queue_running", model=LOOP) == 0)


def complete(server: Server, **extra: Any) -> httpx.Response:
    body = {"model": LOOP, "prompt": "hi", "max_tokens": 7, **extra}
    return httpx.post(server.v1 + "/completions", json=body, timeout=60)


def complete_stream(server: Server) -> tuple[int, str]:
    body = {"model": LOOP, "prompt": "hi", "max_tokens": 7, "stream": True}
    with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=60) as r:
        events, done = read_sse(r)
        assert done
        return r.status_code, "".join(c["text"] for e in events for c in e["choices"])


def test_full_queue_rejects_at_once_and_the_queued_are_served(server: Server) -> None:
    pool = ThreadPoolExecutor(MAX_QUEUE + 20)
    with busy_model(server):
        queued = [pool.submit(complete, server) for _ in range(MAX_QUEUE - 1)]
        queued_stream = pool.submit(complete_stream, server)
        wait_until(lambda: metric(server, "gpt4all_api_queue_depth", model=LOOP) == MAX_QUEUE)

        def rejected() -> tuple[float, httpx.Response]:
            started = time.monotonic()
            r = complete(server, stream=bool(time.monotonic() % 2 > 1))
            return time.monotonic() - started, r

        results = list(pool.map(lambda _: rejected(), range(20)))
        for seconds, r in results:
            assert r.status_code == 429, r.text
            assert seconds < 2.0  # at once, not after waiting
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["content-type"] == "application/json"
            err = r.json()["error"]
            assert err["code"] == "queue_full" and err["type"] == "rate_limit_error"
        client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=30)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model=LOOP, prompt="hi", max_tokens=7)
        # nothing queued was dropped by the rejections
        assert metric(server, "gpt4all_api_queue_depth", model=LOOP) == MAX_QUEUE
        released = time.monotonic()
    for f in queued:
        r = f.result(timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == SENTENCE
    assert queued_stream.result(timeout=30) == (200, SENTENCE)
    assert time.monotonic() - released < 5.0  # served at once when the model was free
    assert metric(server, "gpt4all_api_queue_rejected_total", model=LOOP, reason="queue_full") >= 21
    assert server.alive()


def test_queue_timeout(server: Server) -> None:
    with busy_model(server):
        started = time.monotonic()
        r = complete(server)
        waited = time.monotonic() - started
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "queue_timeout" and err["type"] == "server_error"
        assert "waited" in err["message"] and int(r.headers["retry-after"]) >= 1
        assert QUEUE_TIMEOUT - 0.2 <= waited < QUEUE_TIMEOUT + 3
        assert metric(server, "gpt4all_api_queue_depth", model=LOOP) == 0
    assert metric(server, "gpt4all_api_queue_rejected_total", model=LOOP, reason="queue_timeout")
    r = complete(server)  # the model serves again at once
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == SENTENCE


def test_clients_leaving_the_queue_free_their_place(server: Server) -> None:
    with busy_model(server):
        for _ in range(MAX_QUEUE + 2):  # more than fit: each one left before the next
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    server.v1 + "/completions",
                    json={"model": LOOP, "prompt": "hi", "max_tokens": 7},
                    timeout=httpx.Timeout(30, read=0.3),
                )
            # (a leaked place would make the 4th attempt a 429 instead of a wait)
            wait_until(lambda: metric(server, "gpt4all_api_queue_depth", model=LOOP) == 0)
    assert complete(server).status_code == 200
