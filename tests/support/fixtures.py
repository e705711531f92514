"""The core fixtures (a plugin of tests/conftest.py): real models on disk and real servers
started from settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from gpt4all_api.model_store.fetch import fetch_defaults
from tests.support.server import ROOT, Server, run_server
from tests.support.tinymodel import TINY_MODEL_NAME, build_tiny_model

SMOL = DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf")
TINY = TINY_MODEL_NAME


@pytest.fixture(scope="session", autouse=True)
def _data_dir_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps built in-process and servers started by the tests store responses in a
    temporary DATA_DIR (tests that need their own pass DATA_DIR explicitly), never in the
    repository's ``data/``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """The repository's models/ directory with both default models fetched (idempotent)."""
    models_dir = ROOT / DEFAULT_MODELS_DIR
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
