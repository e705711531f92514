"""Request body limit against the real server: 413 request_too_large, whether the size is
declared (Content-Length) or only known while reading (chunked); smaller bodies pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

LIMIT = 2048


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(loop_models_dir, max_body_bytes=LIMIT, n_ctx=4096)  # prompt fits
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
