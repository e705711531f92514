"""BUILTIN_MODELS_DIR: a second, read-only model directory searched after MODELS_DIR.

The Docker image bakes the default models into it, so mounting a (possibly empty) host
directory over MODELS_DIR does not hide them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt4all_api.model_store.directory import ModelDirectory
from gpt4all_api.settings import Settings
from gpt4all_api.startup import model_directory, resolve_model_path
from tests.support.tinymodel import build_tiny_model


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    mounted = tmp_path_factory.mktemp("mounted")
    builtin = tmp_path_factory.mktemp("builtin")
    build_tiny_model(builtin / "baked.gguf")
    build_tiny_model(builtin / "both.gguf")
    build_tiny_model(mounted / "both.gguf")
    build_tiny_model(mounted / "extra.gguf")
    return mounted, builtin


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_fallback_directory_is_listed_after_the_main_one(dirs: tuple[Path, Path]) -> None:
    mounted, builtin = dirs
    found = ModelDirectory(mounted, [builtin]).scan()
    assert sorted(found) == ["baked", "both", "extra"]
    assert found["both"].path == mounted / "both.gguf", "MODELS_DIR wins a name clash"
    assert found["baked"].path == builtin / "baked.gguf"
    assert all(m.usable for m in found.values())
    assert ModelDirectory(mounted, [builtin]).check_still_inside(found["baked"])


def test_model_resolves_from_builtin_dir(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    mounted, builtin = dirs
    s = settings(models_dir=mounted, builtin_models_dir=builtin, model="baked")
    assert resolve_model_path(s) == builtin / "baked.gguf"
    assert sorted(model_directory(s).scan()) == ["baked", "both", "extra"]
    # An empty (or missing) mounted directory still serves the baked-in model.
    empty = settings(models_dir=tmp_path / "nothing", builtin_models_dir=builtin, model="baked")
    assert resolve_model_path(empty) == builtin / "baked.gguf"


def test_without_builtin_dir_only_models_dir_counts(dirs: tuple[Path, Path]) -> None:
    mounted, _ = dirs
    s = settings(models_dir=mounted, model="baked")
    assert s.builtin_models_dir is None
    assert sorted(model_directory(s).scan()) == ["both", "extra"]
    with pytest.raises(FileNotFoundError, match="baked"):
        resolve_model_path(s)


def test_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILTIN_MODELS_DIR", "")
    assert settings().builtin_models_dir is None
    monkeypatch.setenv("BUILTIN_MODELS_DIR", "/opt/gpt4all_api/models")
    assert settings().builtin_models_dir == Path("/opt/gpt4all_api/models")
