"""GGUF header probing on real files: the default models and deliberately broken ones."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_EMBEDDING_MODEL_FILE
from gpt4all_api.model_store.gguf import GGUFError, check_supported, probe_gguf
from tests.support.tinymodel import build_broken_models, build_tiny_model


def test_probe_real_models(default_models_dir: Path) -> None:
    # gguf.GGUFReader takes ~2-3 s on SmolLM2's 49k-token vocabulary; the probe skips
    # arrays (8 ms measured). Speed is not asserted here: these are correctness checks.
    chat = probe_gguf(default_models_dir / DEFAULT_CHAT_MODEL_FILE)
    emb = probe_gguf(default_models_dir / DEFAULT_EMBEDDING_MODEL_FILE)
    assert (chat.architecture, chat.context_length, chat.is_embedding) == ("llama", 8192, False)
    assert chat.embedding_length == 576 and chat.tensor_count == 272
    assert (emb.architecture, emb.context_length, emb.is_embedding) == ("bert", 512, True)
    assert emb.embedding_length == 384 and emb.name == "all-MiniLM-L6-v2"


def test_probe_broken_files(tmp_path: Path) -> None:
    broken = build_broken_models(tmp_path)
    with pytest.raises(GGUFError, match="is truncated"):
        probe_gguf(broken["truncated"])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        probe_gguf(broken["not_gguf"])
    summary = probe_gguf(broken["unknown_arch"])  # readable: the architecture is the problem
    assert summary.architecture == "gemma3"
    with pytest.raises(GGUFError, match="does not support"):
        check_supported(summary, "unknown-arch.gguf")

    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        probe_gguf(empty)
    good = build_tiny_model(tmp_path / "good.gguf").read_bytes()
    header_only = tmp_path / "header-only.gguf"
    header_only.write_bytes(good[:200])
    with pytest.raises(GGUFError, match="not a readable GGUF file"):
        probe_gguf(header_only)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0) + b"\0" * 64)
    with pytest.raises(GGUFError, match="version 1"):
        probe_gguf(v1)
    huge = tmp_path / "huge.gguf"
    huge.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**60, 2**60) + b"\0" * 64)
    with pytest.raises(GGUFError, match="implausible"):
        probe_gguf(huge)
