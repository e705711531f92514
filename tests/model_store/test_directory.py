"""Model names and the models directory listing (real files)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import gpt4all_api
from gpt4all_api.model_store import DEFAULT_MODELS_DIR
from gpt4all_api.model_store import directory as model_directory
from gpt4all_api.model_store.__main__ import main as models_cli
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    ModelDirectory,
    legacy_models_hint,
    validate_model_id,
)
from gpt4all_api.model_store.gguf import GGUFSummary
from gpt4all_api.settings import Settings
from gpt4all_api.startup import preflight
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


# --- upgrading from models inside the package --------------------------------------------


@pytest.fixture
def old_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for gpt4all_api/models/ (MODELS_DIR's old default) holding two models."""
    old = tmp_path / "package" / "models"
    build_tiny_model(old / "alpha.gguf")
    build_tiny_model(old / "beta.gguf")
    (old / "notes.txt").write_text("not a model")
    monkeypatch.setattr(model_directory, "LEGACY_MODELS_DIR", old)
    return old


def _suggested_command(hint: str) -> str:
    return hint.split("move them: ", 1)[1].rsplit(" (or set MODELS_DIR=", 1)[0]


@pytest.mark.parametrize("new_name", ["models", "my models"])  # quoting of odd paths
def test_legacy_hint_names_the_old_place_and_its_command_works(
    old_place: Path, tmp_path: Path, new_name: str
) -> None:
    new = tmp_path / new_name  # not created yet, as on a fresh upgrade
    hint = legacy_models_hint(new)
    assert hint is not None and "\n" not in hint
    assert hint.startswith(f"2 model file(s) are in the old place {old_place}; move them: ")
    assert f"(or set MODELS_DIR={old_place})" in hint
    assert ModelDirectory(new).scan() == {}  # what the user saw before: nothing
    # The command it suggests really moves them; then there is nothing left to say.
    subprocess.run(["sh", "-c", _suggested_command(hint)], check=True, timeout=30)
    assert sorted(ModelDirectory(new).scan()) == ["alpha", "beta"]
    assert not list(old_place.glob("*.gguf"))
    assert legacy_models_hint(new) is None


def test_legacy_hint_counts_only_files_missing_from_models_dir(
    old_place: Path, tmp_path: Path
) -> None:
    new = tmp_path / "models"
    build_tiny_model(new / "alpha.gguf")  # e.g. fetched again by `make models`
    hint = legacy_models_hint(new)
    assert hint is not None and hint.startswith("1 model file(s) are in the old place")
    assert "mkdir" not in hint  # the directory exists
    build_tiny_model(new / "beta.gguf")
    assert legacy_models_hint(new) is None


def test_no_legacy_hint_when_there_is_nothing_to_move(
    old_place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert legacy_models_hint(old_place) is None  # MODELS_DIR is the old place itself
    link = tmp_path / "link"
    link.symlink_to(old_place)
    assert legacy_models_hint(link) is None  # ... through a symlink
    empty = tmp_path / "empty-old"
    empty.mkdir()
    (empty / "notes.txt").write_text("no models here")
    monkeypatch.setattr(model_directory, "LEGACY_MODELS_DIR", empty)
    assert legacy_models_hint(tmp_path / "models") is None
    monkeypatch.setattr(model_directory, "LEGACY_MODELS_DIR", tmp_path / "missing")
    assert legacy_models_hint(tmp_path / "models") is None


def test_legacy_place_is_models_inside_the_package() -> None:
    legacy = model_directory.LEGACY_MODELS_DIR
    assert legacy.name == "models"
    assert legacy.parent.resolve() == Path(gpt4all_api.__file__).resolve().parent


def test_models_list_prints_the_legacy_hint(
    old_place: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "models"
    assert models_cli(["list", "--models-dir", str(new)]) == 0
    out, err = capsys.readouterr()
    assert "(no models)" in out and "hint" not in out  # stdout stays parseable
    (hint_line,) = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert hint_line == f"hint: {legacy_models_hint(new)}"
    assert models_cli(["list", "--json", "--models-dir", str(new)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["local"] == [] and "hint: 2 model file(s)" in err
    new.mkdir()
    for path in old_place.glob("*.gguf"):
        path.rename(new / path.name)
    assert models_cli(["list", "--models-dir", str(new)]) == 0
    out, err = capsys.readouterr()
    assert "alpha" in out and "hint" not in err


def test_no_model_files_inside_the_package() -> None:
    """MODELS_DIR defaults to models/ outside the package: nothing (`make run`, `make test`,
    a fetch or a pull) may write model files into the source tree, which would also put
    them in the Docker build context and an installed package."""
    package = Path(gpt4all_api.__file__).resolve().parent
    inside = sorted(str(p.relative_to(package)) for p in package.rglob("*.gguf"))
    assert not inside, (
        f"model files inside the package {package}: {inside}. "
        f"{legacy_models_hint(DEFAULT_MODELS_DIR) or 'Move them to models/.'}"
    )


def test_start_up_names_the_old_place_when_the_model_is_missing(
    old_place: Path, tmp_path: Path
) -> None:
    """The one line `python -m gpt4all_api` prints when MODEL is missing says where the
    user's models are and how to move them (instead of 'available: none')."""
    settings = Settings(_env_file=None, models_dir=tmp_path / "models", model="alpha")  # type: ignore[call-arg]
    problem = preflight(settings)
    assert problem is not None
    assert "MODEL='alpha' is not in MODELS_DIR=" in problem
    assert f"2 model file(s) are in the old place {old_place}" in problem
    assert "\n" not in problem
