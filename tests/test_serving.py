"""Slow and surplus clients against the real server (raw sockets): a request's headers
must arrive within REQUEST_READ_TIMEOUT, else 408 and the connection is dropped (the body:
tests/middleware/test_body_limit.py); connections beyond MAX_CONNECTIONS are answered 503
and closed; descriptors held by slow clients are given back."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

TIMEOUT = 1.5
MAX_CONNECTIONS = 12
#: Generous for a busy 2-core machine; without the bound these connections stayed open.
SLACK = 2.0


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(loop_models_dir, request_read_timeout=TIMEOUT, max_connections=MAX_CONNECTIONS)
    with serve(tmp_path_factory, "serving-server", env) as s:
        yield s


def connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def error_of(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def fds(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def partial_post(length: int = 1000, sent: bytes = b'{"model":') -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n" + sent
    )


def test_headers_trickled_a_byte_at_a_time_are_dropped_after_the_timeout(
    server: Server,
) -> None:
    """Each byte arrives well within the timeout; the headers as a whole do not."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with connect(server) as sock:
        started = time.monotonic()
        sock.settimeout(0.25)
        raw = b""
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                raw += sock.recv(65536)
                break  # the server answered
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(30)
        raw += read_until_closed(sock)
        seconds = time.monotonic() - started
    assert seconds < TIMEOUT + SLACK, seconds
    status, err = error_of(raw)
    assert status == 408 and err["code"] == "request_timeout" and "headers" in err["message"]


def test_an_idle_connection_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < TIMEOUT + SLACK


def test_a_kept_alive_connection_is_bounded_for_its_next_request(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next request stalls
        raw = read_until_closed(sock)
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert error_of(raw)[0] == 408


def test_prompt_clients_are_unaffected(server: Server) -> None:
    body = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    with httpx.Client(base_url=server.v1, timeout=30) as client:
        for _ in range(3):  # kept alive between requests
            assert client.post("/chat/completions", json=body).status_code == 200


def test_many_slow_clients_beyond_the_connection_limit(server: Server) -> None:
    """30 clients that send 9 of 1000 bytes: those beyond MAX_CONNECTIONS get 503 at once,
    the rest 408 after the timeout; every descriptor is given back, and the server serves."""
    baseline = fds(server)
    socks = [connect(server) for _ in range(30)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(partial_post())

        def answer(sock: socket.socket) -> tuple[tuple[int, dict[str, str]], float]:
            return error_of(read_until_closed(sock)), time.monotonic() - started

        with ThreadPoolExecutor(len(socks)) as pool:
            answers = list(pool.map(answer, socks))
    finally:
        for sock in socks:
            sock.close()
    refused = [t for (status, err), t in answers if status == 503]
    timed_out = [t for (status, err), t in answers if status == 408]
    assert len(refused) + len(timed_out) == 30
    assert len(timed_out) <= MAX_CONNECTIONS and len(refused) >= 30 - MAX_CONNECTIONS
    assert all(t < TIMEOUT for t in refused), refused  # at once, not after the timeout
    assert all(t < TIMEOUT + SLACK for t in timed_out), timed_out
    assert {err["code"] for (status, err), _ in answers if status == 503} == {
        "too_many_connections"
    }
    deadline = time.monotonic() + 10
    while fds(server) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds(server) <= baseline
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
    assert "MAX_CONNECTIONS=12" in server.log()
