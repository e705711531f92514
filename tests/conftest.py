"""Shared fixtures: real models on disk and real servers started from settings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_fixtures import (  # noqa: F401 - GPU mode fixtures
    fake_tgi,
    openai_upstream_client,
    openai_upstream_server,
    tgi_client,
    tgi_server,
)
from hardening_fixtures import loop_models_dir  # noqa: F401 - hardening tests
from server import Server, run_server
from tinymodel import build_tiny_model

from gpt4all_api.model_store import (
    DEFAULT_CHAT_MODEL_FILE,
    DEFAULT_MODELS_DIR,
)
from gpt4all_api.model_store.fetch import fetch_defaults

SMOL = DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf")
TINY = "tiny-test-model"


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """The repository's models/ directory with both default models fetched (idempotent)."""
    models_dir = Path(__file__).resolve().parent.parent / DEFAULT_MODELS_DIR
    fetch_defaults(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-models")
    build_tiny_model(d / f"{TINY}.gguf")
    return d


@pytest.fixture(scope="session")
def smol_server(
    default_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The default configuration: SmolLM2 on CPU, as `make run` serves it."""
    log = tmp_path_factory.mktemp("smol-server") / "server.log"
    with run_server({"MODELS_DIR": str(default_models_dir), "MODEL": SMOL}, log) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_server(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A deterministic tiny model, for exact assertions on text and token counts."""
    log = tmp_path_factory.mktemp("tiny-server") / "server.log"
    env = {
        "MODELS_DIR": str(tiny_models_dir),
        "MODEL": TINY,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "N_CTX": "256",
    }
    with run_server(env, log) as server:
        yield server


@pytest.fixture
def smol_client(smol_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=smol_server.v1, api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture
def tiny_client(tiny_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server.v1, api_key="not-needed", max_retries=0, timeout=60)
