"""``/v1/models``: every model a request may name, with what each can do.

Listed: pinned engines (GPU mode's upstream model), then the usable GGUF files in the models
directory (the configured MODEL and EMBEDDING_MODEL first, loaded or not), then, with
ALLOW_DOWNLOAD, configured models still to be fetched from the catalog. Files that cannot be
served are left out (the directory logs why once); naming one gives 400 ``model_load_failed``.
"""

from __future__ import annotations

from typing import Any

from gpt4all_api.engines.base import Capabilities, ModelInfo
from gpt4all_api.errors import ModelNotFound
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    LocalModel,
    model_id_for,
    validate_model_id,
)
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.settings import Settings


class ModelListing:
    """What ``/v1/models`` reports, from the registry and the models directory."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.n_ctx = settings.n_ctx
        self.allow_download = settings.allow_download
        #: The configured models, listed first: MODEL (CPU mode), then EMBEDDING_MODEL.
        self.configured: list[tuple[str, bool]] = []
        if registry.local_chat:
            self.configured.append((model_id_for(settings.model), False))
        if settings.embedding_model:
            self.configured.append((model_id_for(settings.embedding_model), True))

    async def infos(self) -> list[ModelInfo]:
        """Every model a request may name, in listing order."""
        out = [await engine.info() for engine in self.registry.pinned]
        pinned = {info.id for info in out}
        files = await self.registry.scan()
        configured = [model_id for model_id, _ in self.configured]

        def order(f: LocalModel) -> tuple[int, str]:
            return (configured.index(f.id) if f.id in configured else len(configured), f.id)

        for f in sorted(files.values(), key=order):
            if f.id not in pinned and self.registry.served(f):
                out.append(self._file_info(f))
        out.extend(self._catalog_infos(set(files) | pinned))
        return out

    async def info(self, name: str) -> ModelInfo:
        """One model, by a name a request could use; 404 when there is none."""
        pinned = self.registry.find_pinned(name)
        if pinned is not None:
            return await pinned.engine.info()
        try:
            model_id = validate_model_id(name)
        except InvalidModelId:  # a lookup by a name no model can have: not found
            raise ModelNotFound(name, await self.registry.available_ids()) from None
        for info in await self.infos():
            if info.id == model_id:
                return info
        raise ModelNotFound(name, await self.registry.available_ids())

    def _file_info(self, f: LocalModel) -> ModelInfo:
        assert f.summary is not None
        loaded = self.registry.loaded(f.id)
        caps = f.capabilities
        ctx = f.summary.context_length if caps.embeddings else self.n_ctx
        if loaded is not None and loaded.engine.context_length:
            ctx = loaded.engine.context_length
        extra: dict[str, Any] = {
            "capabilities": caps.names(),
            "context_length": ctx,
            "trained_context_length": f.summary.context_length,
            "architecture": f.summary.architecture,
            "size_bytes": f.size,
            "loaded": loaded is not None,
            "in_use": loaded.refs if loaded is not None else 0,
            "file": f.path.name,
            "source": "local",
        }
        slots = loaded.engine.slots_info() if loaded is not None else None
        if slots is not None:
            extra.update(slots)  # slots, busy, queue, threads, prompt cache hit rates
        if caps.embeddings:
            dims = getattr(loaded.engine, "dimensions", None) if loaded is not None else None
            extra["embedding_dimensions"] = dims or f.summary.embedding_length
        return ModelInfo(id=f.id, created=int(f.mtime), extra=extra)

    def _catalog_infos(self, present: set[str]) -> list[ModelInfo]:
        """Configured models still to be downloaded (ALLOW_DOWNLOAD): listed, not loaded."""
        if not self.allow_download:
            return []
        return [
            ModelInfo(
                id=model_id,
                created=0,
                extra={
                    "capabilities": Capabilities.for_kind(embedding).names(),
                    "loaded": False,
                    "in_use": 0,
                    "source": "catalog",
                    "downloaded": False,
                },
            )
            for model_id, embedding in self.configured
            if model_id not in present
        ]
