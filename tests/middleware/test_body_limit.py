"""Request body limits against the real server: 413 request_too_large, whether the size is
declared (Content-Length) or only known while reading (chunked); smaller bodies pass; a
body that does not arrive within REQUEST_READ_TIMEOUT is a 408 and the connection is
dropped (headers and connections: tests/test_serving.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

LIMIT = 2048
READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(  # n_ctx: the prompt fits
        loop_models_dir, max_body_bytes=LIMIT, n_ctx=4096, request_read_timeout=READ_TIMEOUT
    )
    with serve(tmp_path_factory, "body-limit-server", env) as s:
        yield s


def body_of_size(size: int) -> bytes:
    base = {"model": TINY, "prompt": "", "max_tokens": 1}
    pad = size - len(json.dumps(base).encode())
    data = json.dumps({**base, "prompt": "x" * pad}).encode()
    assert len(data) == size
    return data


def assert_too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
    assert str(LIMIT) in err["message"]


def test_declared_size_over_the_limit(server: Server) -> None:
    r = httpx.post(
        server.v1 + "/completions",
        content=body_of_size(LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_too_large(r)


def test_chunked_body_over_the_limit(server: Server) -> None:
    data = body_of_size(LIMIT * 3)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = httpx.post(
        server.v1 + "/chat/completions",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert_too_large(r)


def test_bodies_up_to_the_limit_pass(server: Server) -> None:
    data = body_of_size(LIMIT)
    r = httpx.post(
        server.v1 + "/completions", content=data, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        server.v1 + "/completions",
        content=iter([data[:100], data[100:]]),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "Hello,"
    assert server.alive()


def test_a_body_that_never_completes_is_a_408_and_the_connection_is_dropped(
    server: Server,
) -> None:
    """Content-Length 1000 and 9 bytes sent: dropped after the timeout, not held open."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model":'
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
        seconds = time.monotonic() - started
    assert READ_TIMEOUT * 0.9 <= seconds < READ_TIMEOUT + 2.0, seconds  # generous bound
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    err = json.loads(body)["error"]
    assert err["code"] == "request_timeout" and "body" in err["message"]
    # the access line records it like any other answer
    assert any(" 408 " in line and "/v1/completions" in line for line in server.log().splitlines())
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
