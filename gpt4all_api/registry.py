"""Which models this server serves, by id, and their engines.

Model ids are file names without ``.gguf``; ids are untrusted input and are only ever
compared with names we listed ourselves, never joined onto a path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gpt4all_api.engines.base import Engine, ModelInfo
from gpt4all_api.errors import InvalidRequest, ModelNotFound
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)


def model_id_for(name: str) -> str:
    return name.removesuffix(".gguf")


def local_model_files(models_dir: Path) -> dict[str, Path]:
    """GGUF files directly inside ``models_dir``, by model id (symlinks leaving it ignored)."""
    if not models_dir.is_dir():
        return {}
    root = models_dir.resolve()
    found: dict[str, Path] = {}
    for path in sorted(models_dir.iterdir()):
        if path.suffix != ".gguf" or not path.is_file():
            continue
        if path.resolve().parent != root:
            logger.warning("ignoring %s: it points outside MODELS_DIR", path.name)
            continue
        found[model_id_for(path.name)] = path
    return found


def resolve_model_path(settings: Settings) -> Path:
    """The file for ``MODEL``: a local GGUF, or (downloads allowed) a catalog name."""
    wanted = model_id_for(settings.model)
    files = local_model_files(settings.models_dir)
    if wanted in files:
        return files[wanted]
    if settings.allow_download:
        return settings.models_dir / (wanted + ".gguf")
    available = ", ".join(files) or "none"
    raise FileNotFoundError(
        f"MODEL={settings.model!r} is not in MODELS_DIR={settings.models_dir} "
        f"(available: {available}) and ALLOW_DOWNLOAD is off. Run "
        "`python -m gpt4all_api.models fetch-default` or put the GGUF file there."
    )


class ModelRegistry:
    """The engines this process serves, keyed by model id."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def add(self, engine: Engine) -> None:
        self._engines[engine.model_id] = engine

    @property
    def ids(self) -> list[str]:
        return list(self._engines)

    def get(self, name: str, capability: str | None = None) -> Engine:
        engine = self._engines.get(model_id_for(name))
        if engine is None:
            raise ModelNotFound(name, self.ids)
        if capability is not None and not getattr(engine.capabilities, capability):
            raise InvalidRequest(
                f"The model '{engine.model_id}' does not support {capability}.",
                param="model",
                code="model_not_supported",
            )
        return engine

    async def infos(self) -> list[ModelInfo]:
        return [await e.info() for e in self._engines.values()]

    async def close(self) -> None:
        for engine in reversed(list(self._engines.values())):
            try:
                await engine.close()
            except Exception:
                logger.exception("closing %s failed", engine.model_id)
        self._engines.clear()
