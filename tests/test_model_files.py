"""Model names, GGUF header probing and the models directory listing (real files)."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_EMBEDDING_MODEL_FILE
from gpt4all_api.model_store import files as model_files
from gpt4all_api.model_store.files import (
    GGUFError,
    InvalidModelId,
    ModelDirectory,
    probe_gguf,
    validate_model_id,
)
from tests.support.tinymodel import build_broken_models, build_tiny_model

UNSAFE_NAMES = [
    "",
    ".",
    "..",
    "../secret",
    "../../etc/passwd",
    "/etc/passwd",
    "/abs/model.gguf",
    "sub/model",
    "..\\model",
    "C:\\models\\x",
    "C:model",
    "%2e%2e%2fsecret",
    "..%2F..%2Fetc%2Fpasswd",
    "model%00",
    "model\x00.gguf",
    "model\nname",
    ".hidden",
    " model",
    "model ",
    "x" * 201,
    "file:///etc/passwd",
    "a\u202eb",  # right-to-left override (a format character)
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidModelId):
        validate_model_id(name)


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("tiny", "tiny"),
        ("tiny.gguf", "tiny"),
        ("Llama-3.2-1B-Instruct-Q4_0", "Llama-3.2-1B-Instruct-Q4_0"),
        ("all-MiniLM-L6-v2.f16.gguf", "all-MiniLM-L6-v2.f16"),
        ("a..b", "a..b"),  # dots inside a name are harmless: no separators are allowed
        ("modèle-ünïcode", "modèle-ünïcode"),
    ],
)
def test_plain_names_are_accepted(name: str, model_id: str) -> None:
    assert validate_model_id(name) == model_id


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
        model_files.check_supported(summary, "unknown-arch.gguf")

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


def test_directory_listing_and_symlinks(tmp_path: Path) -> None:
    models = tmp_path / "models"
    outside = tmp_path / "outside"
    build_tiny_model(models / "alpha.gguf")
    build_tiny_model(outside / "secret.gguf", sentence="The secret model.")
    build_broken_models(models)
    (models / "alias.gguf").symlink_to(models / "alpha.gguf")  # inside: allowed
    (models / "rel-alias.gguf").symlink_to("alpha.gguf")
    (models / "escape.gguf").symlink_to(outside / "secret.gguf")  # outside: ignored
    (models / "escape-rel.gguf").symlink_to(Path("..") / "outside" / "secret.gguf")
    (models / "dangling.gguf").symlink_to(models / "nope.gguf")
    (models / "dir.gguf").mkdir()
    (models / "sub").mkdir()
    build_tiny_model(models / "sub" / "nested.gguf")  # only the top level is served
    build_tiny_model(models / ".hidden.gguf")
    (models / "notes.txt").write_text("not a model")
    (models / "alpha.gguf.part").write_bytes(b"partial")

    found = ModelDirectory(models).scan()
    assert sorted(found) == [
        "alias",
        "alpha",
        "not-gguf",
        "rel-alias",
        "truncated",
        "unknown-arch",
    ]
    usable = sorted(i for i, m in found.items() if m.usable)
    assert usable == ["alias", "alpha", "rel-alias"]
    assert "truncated" in (found["truncated"].error or "")
    assert found["alias"].capabilities.chat and not found["alias"].capabilities.embeddings
    assert found["alias"].path == models / "alias.gguf"  # served under its own name


def test_headers_are_probed_once_per_file_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_probe = model_files.probe_gguf

    def counting(path: Path) -> model_files.GGUFSummary:
        calls.append(path.name)
        return real_probe(path)

    monkeypatch.setattr(model_files, "probe_gguf", counting)
    path = build_tiny_model(tmp_path / "m.gguf")
    directory = ModelDirectory(tmp_path)
    for _ in range(5):
        assert directory.scan()["m"].usable
    assert calls == ["m.gguf"]
    assert not directory.needs_probe()
    # Rewritten (new size and mtime): probed again, and now broken.
    path.write_bytes(path.read_bytes()[:1000])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert directory.needs_probe()
    assert not directory.scan()["m"].usable
    assert calls == ["m.gguf", "m.gguf"]
