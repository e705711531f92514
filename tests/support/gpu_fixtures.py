"""Fixtures for the GPU mode (a plugin of tests/conftest.py): a fake TGI and our server in front
of it, and our server in front of an OpenAI-compatible upstream (our own CPU mode)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import openai
import pytest

from tests.support.fake_tgi import FakeTgi
from tests.support.server import Server, run_server

#: GPU_API_KEY of the openai-upstream server: must never appear in its log.
UPSTREAM_SECRET = "sk-upstream-secret-0f1e2d3c"
#: GPU_READ_TIMEOUT of the TGI-mode server (the fake's [[stall:N]] beyond it -> 504).
TGI_READ_TIMEOUT = 2.0


def gpu_env(url: str, **extra: str) -> dict[str, str]:
    """GPU mode with no local model files (an empty MODELS_DIR): only the upstream's model."""
    return {
        "INFERENCE_MODE": "gpu",
        "GPU_URL": url,
        "MODELS_DIR": tempfile.mkdtemp(prefix="gpu-mode-models-"),
        "EMBEDDING_MODEL": "",
        "GPU_CONNECT_TIMEOUT": "2",
        **extra,
    }


@pytest.fixture(scope="session")
def fake_tgi() -> Iterator[FakeTgi]:
    with FakeTgi() as fake:
        yield fake


@pytest.fixture(scope="session")
def tgi_server(fake_tgi: FakeTgi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Our server with INFERENCE_MODE=gpu in front of the fake TGI."""
    log = tmp_path_factory.mktemp("tgi-server") / "server.log"
    env = gpu_env(fake_tgi.url, GPU_READ_TIMEOUT=str(TGI_READ_TIMEOUT))
    with run_server(env, log, timeout=30) as server:
        yield server


@pytest.fixture(scope="session")
def openai_upstream_server(
    tiny_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Our server with GPU_BACKEND=openai in front of our own CPU mode (tiny model)."""
    log = tmp_path_factory.mktemp("openai-upstream-server") / "server.log"
    env = gpu_env(tiny_server.v1, GPU_BACKEND="openai", GPU_API_KEY=UPSTREAM_SECRET)
    with run_server(env, log, timeout=30) as server:
        yield server


@pytest.fixture
def tgi_client(tgi_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tgi_server.v1, api_key="not-needed", max_retries=0, timeout=30)


@pytest.fixture
def openai_upstream_client(openai_upstream_server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=openai_upstream_server.v1, api_key="not-needed", max_retries=0, timeout=60
    )
