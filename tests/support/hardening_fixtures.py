"""Fixtures for the hardening tests (auth, limits, overload, metrics, shutdown, fuzzing).

Besides the tiny model, these tests need a model that never stops on its own: the
*loop model* is the tiny model with its last piece wired back to its first instead of to
EOS, so it repeats "Hello, I am a tiny test model." until ``max_tokens`` (thousands of
tokens per second). A request holds the model exactly as long as the test wants, and
closing the stream ends it at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import pytest

from tests.support.fixtures import TINY
from tests.support.server import Server, run_server
from tests.support.tinymodel import DEFAULT_SENTENCE, EOS, build_tiny_model, sentence_pieces

LOOP = "tiny-loop-model"
SENTENCE = DEFAULT_SENTENCE
PIECES = sentence_pieces(SENTENCE)


def build_loop_model(path: Path) -> Path:
    """The tiny model, rewired so that after its last piece comes its first, never EOS."""
    build_tiny_model(path)
    reader = gguf.GGUFReader(path, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    output = next(t for t in reader.tensors if t.name == "output.weight")
    weights = output.data  # (n_vocab, n_embd), memory-mapped: writes go to the file
    last_feature = len(PIECES)  # the feature the last piece's embedding sets
    eos, first = tokens.index(EOS), tokens.index(PIECES[0])
    gain = float(weights[eos, last_feature])
    assert gain > 0, "tinymodel layout changed: last piece no longer leads to EOS"
    weights[eos, last_feature] = 0.0
    weights[first, last_feature] = gain
    reader.data.flush()
    del reader
    return path


@pytest.fixture(scope="session")
def loop_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with the tiny model and the loop model."""
    d = tmp_path_factory.mktemp("loop-models")
    build_tiny_model(d / f"{TINY}.gguf")
    build_loop_model(d / f"{LOOP}.gguf")
    return d


def model_env(models_dir: Path, model: str = TINY, **settings: object) -> dict[str, str]:
    """Environment for a server on ``model``; keyword settings become upper-case variables."""
    env = {
        "MODELS_DIR": str(models_dir),
        "MODEL": model,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "N_CTX": "512",
    }
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


@contextmanager
def serve(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[Server]:
    """A real server (``python -m gpt4all_api``) for one test module."""
    log = tmp_path_factory.mktemp(name) / "server.log"
    # Keys from the developer's own environment must not leak into these servers.
    clean = {k: "" for k in ("API_KEYS", "API_KEYS_FILE", "CORS_ORIGINS") if k in os.environ}
    with run_server({**clean, **env}, log) as server:
        yield server
