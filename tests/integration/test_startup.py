"""Start-up: bad settings and missing models fail at once with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import ROOT, Server


def start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4all_api"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PORT": "1", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"N_CTX": "lots"}, "N_CTX"),
        ({"PORT": "70000"}, "PORT"),
        ({"INFERENCE_MODE": "tpu"}, "INFERENCE_MODE"),
        ({"DEFAULT_TEMPERATURE": "-1"}, "DEFAULT_TEMPERATURE"),
    ],
)
def test_invalid_settings_fail_clearly(env: dict, needle: str, tmp_path: Path) -> None:
    result = start(env, tmp_path)
    assert result.returncode == 2
    assert "Invalid settings" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_fails_clearly(tmp_path: Path) -> None:
    result = start({"MODELS_DIR": str(tmp_path), "MODEL": "no-such-model"}, tmp_path)
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "fetch-default" in result.stderr
    assert "Traceback" not in result.stderr


def test_docs_work_offline(tiny_server: Server) -> None:
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = httpx.get(tiny_server.base_url + page).text
        assert f"/static-docs/{asset}" in html
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
        r = httpx.get(f"{tiny_server.base_url}/static-docs/{asset}")
        assert r.status_code == 200 and len(r.content) > 100_000
    # Swagger UI's OAuth2 redirect page, which /docs names, is served too (no CDN either)
    assert "/docs/oauth2-redirect" in httpx.get(tiny_server.base_url + "/docs").text
    redirect = httpx.get(tiny_server.base_url + "/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
    assert "cdn.jsdelivr.net" not in redirect.text
    spec = httpx.get(tiny_server.base_url + "/openapi.json").json()
    assert {"/v1/models", "/v1/completions", "/v1/chat/completions", "/health"} <= set(
        spec["paths"]
    )
