"""The embedding engine on the real default model (all-MiniLM-L6-v2, bert GGUF)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gpt4all_api.engines.embed import EmbeddingEngine, has_tokens
from gpt4all_api.engines.gpt4all_cpu import ModelLoadError
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.model_store import DEFAULT_EMBEDDING_MODEL_FILE
from tests.support.embedding_reference import ReferenceBert, bert_source, cosine, token_count

EMB = DEFAULT_EMBEDDING_MODEL_FILE.removesuffix(".gguf")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(default_models_dir: Path, loop: asyncio.AbstractEventLoop) -> Iterator[EmbeddingEngine]:
    eng = EmbeddingEngine(EMB, default_models_dir / DEFAULT_EMBEDDING_MODEL_FILE, n_threads=1)
    loop.run_until_complete(eng.start())
    yield eng
    loop.run_until_complete(eng.close())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceBert:
    return ReferenceBert(bert_source(tmp_path_factory.mktemp("bert-src")))


TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo, wörld! It's 2024; isn't it?",
    "Embeddings map text to vectors.",
]


def test_load_reports_dimensions(engine: EmbeddingEngine) -> None:
    assert engine.loaded and engine.dimensions == 384
    assert engine.prefix is None  # gpt4all knows all-MiniLM-L6-v2: no task prefix needed
    assert engine.load_seconds is not None and engine.load_seconds > 0


def test_vectors_match_reference_and_tokens_are_real(
    engine: EmbeddingEngine, reference: ReferenceBert, loop: asyncio.AbstractEventLoop
) -> None:
    result = loop.run_until_complete(engine.embed(TEXTS))
    assert len(result.vectors) == len(TEXTS)
    for text, vec in zip(TEXTS, result.vectors, strict=True):
        assert len(vec) == 384
        assert abs(np.linalg.norm(vec) - 1) < 1e-3
        assert cosine(vec, reference.embed(text)) > 0.999, text
    assert result.prompt_tokens == sum(token_count(reference, t) for t in TEXTS)


def test_long_text_is_chunked_and_averaged(
    engine: EmbeddingEngine, reference: ReferenceBert, loop: asyncio.AbstractEventLoop
) -> None:
    fox = "The quick brown fox jumps over the lazy dog near the river bank. "
    markets = "Stock markets fell sharply as investors worried about interest rates. "
    cake = "Whisk the eggs with sugar and bake the cake for forty minutes. "
    long_text = fox * 40 + markets * 40  # ~1,000 tokens: the markets part is past 512
    result = loop.run_until_complete(engine.embed([long_text]))
    (vec,) = result.vectors
    expected = token_count(reference, long_text)
    assert expected > 900
    # Every token is evaluated; consecutive windows overlap by a few tokens (8 measured),
    # which the backend counts too.
    assert expected <= result.prompt_tokens <= expected + 8 * (expected // 500 + 1)
    assert abs(np.linalg.norm(vec) - 1) < 1e-3
    # Averaged, not truncated: the text past the first window counts (measured: 0.48 with
    # "mean", 0.10 if truncated), and an unrelated topic stays far.
    assert cosine(vec, reference.embed(fox)) > 0.5
    assert cosine(vec, reference.embed(markets)) > 0.3
    assert cosine(vec, reference.embed(cake)) < 0.2


def test_dimensions(engine: EmbeddingEngine, loop: asyncio.AbstractEventLoop) -> None:
    full = loop.run_until_complete(engine.embed(["x"], dimensions=384))
    assert len(full.vectors[0]) == 384
    for bad in (16, 128, 500):
        with pytest.raises(InvalidRequest) as exc:
            loop.run_until_complete(engine.embed(["x"], dimensions=bad))
        assert exc.value.param == "dimensions" and exc.value.code == "unsupported_dimensions"
        assert "384" in exc.value.message
    # the engine is still fine afterwards
    assert len(loop.run_until_complete(engine.embed(["y"])).vectors) == 1


def test_has_tokens() -> None:
    assert has_tokens("a") and has_tokens(" x ") and has_tokens("é") and has_tokens("日本")
    for empty in ("", " ", "\n\t", "\u200b", "\x00\x01", "\ufffd"):
        assert not has_tokens(empty), repr(empty)


def test_broken_file_is_a_load_error(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model\n" * 50)
    eng = EmbeddingEngine("bad", bad)
    with pytest.raises(ModelLoadError, match=r"bad\.gguf"):
        loop.run_until_complete(eng.start())
    assert not eng.loaded
