"""Graceful shutdown against the real server: on SIGTERM it stops accepting connections,
lets a short in-flight request finish, ends a long stream within the grace period with an
error event and then [DONE], frees the models and exits."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hardening_fixtures import LOOP, SENTENCE, model_env, serve

GRACE = 3.0


def read_events(response: httpx.Response) -> list[Any]:
    """Every data payload of a stream ("[DONE]" kept as a string), in order."""
    out: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_sigterm_finishes_short_requests_and_ends_long_streams_cleanly(
    loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = model_env(
        loop_models_dir, model=LOOP, graceful_shutdown_seconds=GRACE, max_tokens_limit=10**7
    )
    with serve(tmp_path_factory, "shutdown-server", env) as server:
        # calibrate: a "short" request is one taking ~1.5 s on this machine
        started = time.monotonic()
        r = httpx.post(
            server.v1 + "/completions",
            json={"model": LOOP, "prompt": "hi", "max_tokens": 20000},
            timeout=60,
        )
        rate = 20000 / (time.monotonic() - started)
        short_tokens = max(100, int(rate * 1.5))

        results: dict[str, Any] = {}

        def short() -> None:
            r = httpx.post(
                server.v1 + "/completions",
                json={"model": LOOP, "prompt": "hi", "max_tokens": short_tokens},
                timeout=60,
            )
            results["short"] = r

        def long_stream() -> None:
            body = {"model": LOOP, "prompt": "hi", "max_tokens": 10**7, "stream": True}
            with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=60) as r:
                results["long_status"] = r.status_code
                results["long"] = read_events(r)
                results["long_ended"] = time.monotonic()

        threads = [threading.Thread(target=short), threading.Thread(target=long_stream)]
        threads[0].start()
        time.sleep(0.3)  # the short request is running; the stream queues behind it
        threads[1].start()
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        sigterm = time.monotonic()

        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new connections
            httpx.get(server.base_url + "/health", timeout=2)

        for t in threads:
            t.join(30)
        code = server.process.wait(GRACE + 10)
        exited = time.monotonic()
        log = server.log()

    # the short request finished normally, with every token
    r = results["short"]
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == short_tokens
    assert r.json()["choices"][0]["text"].startswith(SENTENCE + SENTENCE)
    # the long stream got text, then an error event, then [DONE], at the end of the grace
    events = results["long"]
    assert results["long_status"] == 200
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "server_shutting_down", events[-2]
    assert events[-2]["error"]["type"] == "server_error"
    assert all("choices" in e for e in events[:-2]) and len(events) > 3
    assert GRACE - 0.5 <= results["long_ended"] - sigterm <= GRACE + 2
    # then the models were freed and the process exited in time, without a forced cancel
    assert exited - sigterm <= GRACE + 4
    assert code in (0, -signal.SIGTERM), log
    assert "models freed" in log
    assert "timeout graceful shutdown exceeded" not in log
    assert "Traceback" not in log


def test_sigterm_when_idle_exits_at_once(
    loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = model_env(loop_models_dir, graceful_shutdown_seconds=30)
    with serve(tmp_path_factory, "idle-shutdown-server", env) as server:
        assert httpx.get(server.base_url + "/health").status_code == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(10)
        assert time.monotonic() - started < 3
        assert code in (0, -signal.SIGTERM)
        assert "models freed" in server.log()


def test_draining_refuses_new_work_and_fails_health(loop_models_dir: Path) -> None:
    """In process (a real server stops accepting connections first, so this is the only way
    to see what a request arriving on an open connection during the drain gets)."""
    from fastapi.testclient import TestClient

    from gpt4all_api.app import create_app
    from gpt4all_api.settings import Settings

    env = {k.lower(): v for k, v in model_env(loop_models_dir).items()}
    app = create_app(Settings(_env_file=None, **env))
    with TestClient(app) as client:
        body = {"model": "tiny-test-model", "prompt": "hi", "max_tokens": 2}
        assert client.post("/v1/completions", json=body).status_code == 200
        assert client.portal is not None
        client.portal.call(app.state.services.shutdown.begin, 30.0)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "shutting_down"
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down"
        assert r.headers["connection"] == "close"
