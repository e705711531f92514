"""What start-up checks and loads: MODEL must be servable, EMBEDDING_MODEL should be.

``preflight`` runs before the server binds (``python -m gpt4all_api``) and turns the common
mistakes (no model file, a broken one, an unsafe name) into one line instead of a traceback;
``load_configured_models`` runs in the lifespan and loads the configured models so the
first request does not pay for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from gpt4all_api.errors import APIError, ModelNotFound
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    ModelDirectory,
    legacy_models_hint,
    validate_model_id,
)
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.response_store import ResponseStore
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)


class ModelUnavailableError(FileNotFoundError):
    """``MODEL`` cannot be served (absent, unusable file, or an invalid name)."""


def model_directory(settings: Settings) -> ModelDirectory:
    """MODELS_DIR, then (when set) BUILTIN_MODELS_DIR, the Docker image's baked-in models."""
    builtin = [settings.builtin_models_dir] if settings.builtin_models_dir else []
    return ModelDirectory(settings.models_dir, builtin)


def resolve_model_path(settings: Settings) -> Path:
    """The file for ``MODEL``: a local GGUF, or (downloads allowed) where it will be."""
    try:
        wanted = validate_model_id(settings.model)
    except InvalidModelId as exc:
        raise ModelUnavailableError(f"MODEL={settings.model!r}: {exc}") from None
    files = model_directory(settings).scan()
    entry = files.get(wanted)
    if entry is not None and entry.error is not None:
        raise ModelUnavailableError(f"MODEL={settings.model!r} cannot be served: {entry.error}")
    if entry is not None:
        return entry.path
    if settings.allow_download:
        return settings.models_dir / (wanted + ".gguf")
    usable = [i for i, f in files.items() if f.usable]
    raise ModelUnavailableError(missing_model_message(settings, usable))


def missing_model_message(settings: Settings, available: list[str]) -> str:
    """One line; it says where models from before the move out of the package now go."""
    hint = legacy_models_hint(settings.models_dir)
    if hint is not None:
        return f"MODEL={settings.model!r} is not in MODELS_DIR={settings.models_dir}: {hint}"
    return (
        f"MODEL={settings.model!r} is not in MODELS_DIR={settings.models_dir} "
        f"(available: {', '.join(available) or 'none'}) and ALLOW_DOWNLOAD is off. Run "
        "`python -m gpt4all_api.model_store fetch-default` or put the GGUF file there."
    )


def preflight(settings: Settings) -> str | None:
    """Problems that would make start-up fail, as one clear line (no traceback)."""
    if settings.inference_mode == "cpu":
        try:
            resolve_model_path(settings)
        except FileNotFoundError as exc:
            return str(exc)
    return response_store_problem(settings)


def response_store_problem(settings: Settings) -> str | None:
    """The response store's database (DATABASE_URL, or SQLite under DATA_DIR) must open."""
    store = ResponseStore.from_settings(settings)
    try:
        store.probe()
    except (SQLAlchemyError, OSError) as exc:
        return store.problem(exc)
    return None


async def load_configured_models(registry: ModelRegistry, settings: Settings) -> None:
    """Load MODEL (CPU mode; failure stops start-up) and EMBEDDING_MODEL (failure is logged:
    /v1/embeddings answers with the error)."""
    if registry.local_chat:
        try:
            async with registry.acquire(settings.model, "chat"):
                pass
        except ModelNotFound:
            if not settings.allow_download:
                files = await registry.scan()
                available = [i for i, f in files.items() if registry.served(f)]
                raise ModelUnavailableError(missing_model_message(settings, available)) from None
            raise RuntimeError(
                f"MODEL={settings.model!r} is neither in MODELS_DIR={settings.models_dir} nor "
                f"in the catalog at {settings.catalog_url}."
            ) from None
        except APIError as exc:
            raise RuntimeError(
                f"MODEL={settings.model!r} cannot be served: {exc.message}"
            ) from None
    if not settings.embedding_model:
        return
    if registry.in_memory() >= registry.max_loaded:
        logger.info(
            "EMBEDDING_MODEL=%s will be loaded on first use (MAX_LOADED_MODELS=%d)",
            settings.embedding_model,
            registry.max_loaded,
        )
        return
    try:
        async with registry.acquire(settings.embedding_model, "embeddings"):
            pass
    except APIError as exc:
        logger.error(
            "EMBEDDING_MODEL=%s is not available, /v1/embeddings will answer with an "
            "error for it: %s",
            settings.embedding_model,
            exc.message,
        )
