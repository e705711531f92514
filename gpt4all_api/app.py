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
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from gpt4all_api import __version__
from gpt4all_api.engines.remote import build_remote_engine
from gpt4all_api.errors import install_error_handlers
from gpt4all_api.metrics import Metrics
from gpt4all_api.middleware.auth import APIKeyMiddleware
from gpt4all_api.middleware.body_limit import BodyLimitMiddleware
from gpt4all_api.middleware.request_context import RequestContextMiddleware
from gpt4all_api.openapi import install_openapi
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.routers import chat, completions, embeddings, health, models
from gpt4all_api.services.admission import Admission
from gpt4all_api.settings import Settings
from gpt4all_api.shutdown import ShutdownCoordinator

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    registry = ModelRegistry(settings)
    app.state.registry = registry
    try:
        if settings.inference_mode == "gpu":
            engine = build_remote_engine(settings)
            await engine.start()
            registry.add(engine)
        # Loads MODEL (CPU mode) and EMBEDDING_MODEL now; any other GGUF file in MODELS_DIR
        # loads when a request names it (see registry.ModelManager).
        await registry.start()
        yield
    finally:
        # Under `python -m gpt4all_api` the grace period already ran (see __main__); under
        # other servers, streams still open are ended now with an error event and [DONE].
        shutdown: ShutdownCoordinator = app.state.shutdown
        shutdown.begin(0)
        await shutdown.wait_streams(5.0)
        await registry.close()
        logger.info("models freed")


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
    for module in (models, completions, chat, embeddings, health):
        app.include_router(module.router)
    _mount_offline_docs(app)
    _install_hardening(app, settings)
    return app


def _model_states(app: FastAPI) -> list[tuple[str, bool, float | None]]:
    """(model, loaded, last load seconds) of the registry's engines, for /metrics."""
    registry = getattr(app.state, "registry", None)
    engines = getattr(registry, "engines", None) or {}  # the models in memory now
    return [
        (model_id, bool(getattr(e, "loaded", True)), getattr(e, "load_seconds", None))
        for model_id, e in list(engines.items())
    ]


def _install_hardening(app: FastAPI, settings: Settings) -> None:
    """Admission queues, graceful shutdown, metrics, and the middleware stack."""
    app.state.shutdown = ShutdownCoordinator(settings.graceful_shutdown_seconds)
    metrics = Metrics() if settings.metrics_enabled else None
    app.state.metrics = metrics
    app.state.admission = Admission(settings.max_queue, settings.queue_timeout or None, metrics)
    if metrics is not None:
        metrics.watch_state(app.state.admission.snapshot, lambda: _model_states(app))

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type=metrics.content_type)

    keys = settings.all_api_keys()
    install_openapi(app, auth=bool(keys))
    # add_middleware wraps: the last added runs first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if keys:
        public = ["/metrics"] if settings.metrics_public else []
        app.add_middleware(APIKeyMiddleware, keys=keys, extra_public=public)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
