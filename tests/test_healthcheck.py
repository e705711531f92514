"""``python -m gpt4all_api.healthcheck``: the Docker HEALTHCHECK (exit 0 only on HTTP 200)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt4all_api.healthcheck import main, probe
from tests.support.server import ROOT, free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 503
        body = b'{"status":"ok"}' if status == 200 else b'{"status":"unavailable"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_probe(port: int) -> None:
    assert probe(f"http://127.0.0.1:{port}/health") == (True, "200")
    ok, detail = probe(f"http://127.0.0.1:{port}/loading")
    assert not ok and detail.startswith("503")
    ok, _ = probe(f"http://127.0.0.1:{free_port()}/health", timeout=2)
    assert not ok


def test_exit_status_follows_port_variable(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", str(port))
    assert main([]) == 0
    monkeypatch.setenv("PORT", str(free_port()))
    assert main([]) == 1


def test_runs_as_a_module_with_only_the_standard_library(port: int) -> None:
    code = (
        "import runpy, sys; sys.argv = ['x', sys.argv[1]];"
        "runpy.run_module('gpt4all_api.healthcheck', run_name='__main__')"
    )
    for path, expected in (("/health", 0), ("/other", 1)):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code, f"http://127.0.0.1:{port}{path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == expected, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert not imported & {"pydantic", "fastapi", "gpt4all", "numpy"}, "stdlib only"
