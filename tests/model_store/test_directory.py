"""Model names and the models directory listing (real files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tinymodel import build_broken_models, build_tiny_model

from gpt4all_api.model_store import directory as model_directory
from gpt4all_api.model_store.directory import InvalidModelId, ModelDirectory, validate_model_id
from gpt4all_api.model_store.gguf import GGUFSummary

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
    real_probe = model_directory.probe_gguf

    def counting(path: Path) -> GGUFSummary:
        calls.append(path.name)
        return real_probe(path)

    monkeypatch.setattr(model_directory, "probe_gguf", counting)
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
