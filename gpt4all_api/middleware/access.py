"""Request id, access log line and HTTP metrics for every request.

``X-Request-ID`` from the client is kept when it is short and made of safe characters,
otherwise a new id is generated; either way it is returned in the response and attached to
every log record written while serving the request. When the response is done, one access
line is logged (method, path, route, status, duration; model, tokens, time to first
token, tokens/s and queue wait when the request generated text) and the metrics are
updated. Paths with parameters are logged as their route template: no response ids.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt4all_api import request_context
from gpt4all_api.metrics import Metrics

access_logger = logging.getLogger("gpt4all_api.access")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
#: Fields the access line's text already shows ("POST /v1/completions 200").
_IN_MESSAGE = frozenset({"method", "path", "status"})


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _SAFE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str | None:
    """The matched route's template (low cardinality), or None when nothing matches.

    FastAPI records API routes in ``scope["route"]``; plain routes (``/openapi.json``, the
    docs' static mount) and requests answered by middleware are matched here.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        try:
            match, _ = route.matches(scope)
        except Exception:  # a route that cannot judge this scope
            continue
        if match is Match.FULL:
            path = getattr(route, "path", None)
            return path if isinstance(path, str) else None
    return None


def _logged_path(path: str, route: str | None) -> str:
    """The route template where the path holds parameters (``/v1/responses/{response_id}``):
    a stored response's id is all it takes to read it when no API keys are set, so ids stay
    out of the logs; other paths as requested (printable, at most 200 characters)."""
    if route is not None and "{" in route:
        return route
    path = path[:200]
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        ctx, token = request_context.begin(request_id)
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        if self.metrics is not None:
            self.metrics.in_progress.inc()
        failed = True
        try:
            await self.app(scope, receive, send_with_id)
            failed = False
        finally:
            seconds = time.perf_counter() - ctx.started
            if self.metrics is not None:
                self.metrics.in_progress.dec()
            if status is None:  # no response: the app failed, or the client left first
                status = 500 if failed else 499
            self._finish(scope, route_of(scope), status, seconds, ctx)
            request_context.end(token)

    def _finish(
        self,
        scope: Scope,
        route: str | None,
        status: int,
        seconds: float,
        ctx: request_context.RequestContext,
    ) -> None:
        method = scope.get("method", "")
        if self.metrics is not None:
            self.metrics.observe_request(method, route or "unmatched", status, seconds, ctx)
        fields: dict[str, object] = {
            "method": method,
            "path": _logged_path(scope.get("path", ""), route),
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "client": (scope.get("client") or (None,))[0],
        }
        if ctx.model is not None:
            ttft, rate = ctx.ttft, ctx.tokens_per_second
            fields.update(
                model=ctx.model,
                stream=ctx.stream,
                prompt_tokens=ctx.prompt_tokens,
                completion_tokens=ctx.completion_tokens,
                ttft_ms=None if ttft is None else round(ttft * 1000, 1),
                tokens_per_s=None if rate is None else round(rate, 1),
                queue_ms=None if ctx.queue_seconds is None else round(ctx.queue_seconds * 1000, 1),
            )
        access_logger.info(
            "%s %s %s",
            method,
            fields["path"],
            status,
            extra={"fields": fields, "request_id": ctx.request_id, "in_message": _IN_MESSAGE},
        )
