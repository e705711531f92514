"""CORS against the real server: browser preflights that carry Authorization succeed for
the configured origins and fail for others; responses (401s included) carry the headers a
browser needs to read them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

ALLOWED = "https://chat.example.com"
OTHER = "https://evil.example.net"
KEY = "sk-cors-test-key-123456"


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(
        loop_models_dir,
        cors_origins=f"{ALLOWED},https://second.example.org",
        cors_allow_credentials="true",
        api_keys=KEY,
    )
    with serve(tmp_path_factory, "cors-server", env) as s:
        yield s


def preflight(server: Server, origin: str, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.options(
        server.base_url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )


def test_preflight_with_authorization_from_an_allowed_origin(server: Server) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        r = preflight(server, ALLOWED, path)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert r.headers["access-control-allow-credentials"] == "true"
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in r.headers["access-control-allow-methods"]


def test_preflight_from_another_origin_fails(server: Server) -> None:
    r = preflight(server, OTHER)
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_actual_requests_carry_cors_headers(server: Server) -> None:
    r = httpx.post(
        server.v1 + "/completions",
        json={"model": TINY, "prompt": "hi", "max_tokens": 2},
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    # a browser can read the 401 too (and so show the user why)
    r = httpx.get(server.v1 + "/models", headers={"Origin": ALLOWED})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ALLOWED
    headers = {"Origin": OTHER, "Authorization": f"Bearer {KEY}"}
    r = httpx.get(server.v1 + "/models", headers=headers)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_no_cors_headers_unless_configured(tiny_server: Server) -> None:
    r = httpx.get(tiny_server.v1 + "/models", headers={"Origin": ALLOWED})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = preflight(tiny_server, ALLOWED)
    assert "access-control-allow-origin" not in r.headers
