"""The application factory: ``create_app(settings)`` wires engines, routers and handlers.

Nothing happens at import time: models are loaded and clients opened in the lifespan and
kept on ``app.state``, so tests can build as many apps as they like from settings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from gpt4all_api import __version__
from gpt4all_api.engines.base import Engine
from gpt4all_api.errors import install_error_handlers
from gpt4all_api.registry import ModelRegistry, model_id_for, resolve_model_path
from gpt4all_api.routers import chat, completions, health, models
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)


def build_chat_engine(settings: Settings) -> Engine:
    """The chat/completion engine for the configured inference mode."""
    if settings.inference_mode == "gpu":
        from gpt4all_api.engines.remote import build_remote_engine

        return build_remote_engine(settings)
    from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine

    return Gpt4AllEngine(
        model_id_for(settings.model),
        resolve_model_path(settings),
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_threads=settings.n_threads,
        allow_download=settings.allow_download,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    registry = ModelRegistry()
    app.state.registry = registry
    try:
        engine = build_chat_engine(settings)
        await engine.start()
        registry.add(engine)
        yield
    finally:
        await registry.close()


def _mount_offline_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets shipped in a wheel: /docs works without internet."""
    static = resources.files("fastapi_offline") / "static"
    app.mount("/static-docs", StaticFiles(directory=str(static)), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/static-docs/swagger-ui-bundle.js",
            swagger_css_url="/static-docs/swagger-ui.css",
            swagger_favicon_url="/static-docs/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url="/static-docs/redoc.standalone.js",
            redoc_favicon_url="/static-docs/favicon.png",
            with_google_fonts=False,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="gpt4all-api",
        version=__version__,
        description="OpenAI-compatible API for local gpt4all models (CPU) and "
        "text-generation-inference (GPU).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for module in (models, completions, chat, health):
        app.include_router(module.router)
    _mount_offline_docs(app)
    return app
