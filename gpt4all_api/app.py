"""The application factory: ``create_app(settings)`` builds the services (``wiring``), the
routers, the middleware and the docs.

Nothing happens at import time: models are loaded and clients opened in the lifespan, so
tests can build as many apps as they like from settings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from gpt4all_api import __version__
from gpt4all_api.errors import install_error_handlers
from gpt4all_api.middleware.access import AccessLogMiddleware
from gpt4all_api.middleware.auth import APIKeyMiddleware
from gpt4all_api.middleware.body_limit import BodyLimitMiddleware
from gpt4all_api.openapi import install_openapi
from gpt4all_api.routers import chat, completions, embeddings, health, models, responses
from gpt4all_api.settings import Settings
from gpt4all_api.wiring import AppServices, build_services

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: AppServices = app.state.services
    try:
        await services.start()
        yield
    finally:
        # Under `python -m gpt4all_api` the grace period already ran (see __main__); under
        # other servers, streams still open are ended now with an error event and [DONE].
        await services.close()


#: Where Swagger UI's "Authorize" returns after an OAuth2 login (public, as /docs is).
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


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
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

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
    services = build_services(settings)
    app.state.services = services  # the routers' dependencies (routers/deps.py) read it
    install_error_handlers(app)
    for module in (models, completions, chat, responses, embeddings, health):
        app.include_router(module.router)
    _mount_offline_docs(app)
    _install_middleware(app, services)
    return app


def _install_middleware(app: FastAPI, services: AppServices) -> None:
    """/metrics, the OpenAPI document, and the middleware stack."""
    settings, metrics = services.settings, services.metrics
    if metrics is not None:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type=metrics.content_type)

    keys = settings.all_api_keys()
    install_openapi(app, auth=bool(keys))
    # add_middleware wraps: the last added runs first.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout=settings.request_read_timeout,
    )
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
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
