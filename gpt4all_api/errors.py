"""OpenAI-style errors: every failure a client can cause becomes ``{"error": {...}}``.

Handlers here turn our ``APIError``s, FastAPI's validation errors (422 -> 400 naming the
parameter), unknown routes and unexpected exceptions (500 without internals) into the
same envelope, so clients never see a traceback or a FastAPI-specific shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status and OpenAI's error fields."""

    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


class InvalidRequest(APIError):
    status_code = 400


class ModelNotFound(APIError):
    status_code = 404

    def __init__(self, model: str, available: list[str] | None = None) -> None:
        hint = f" Available models: {', '.join(available)}." if available else ""
        super().__init__(
            f"The model '{model}' does not exist or is not served here.{hint}",
            param="model",
            code="model_not_found",
        )


class ContextLengthExceeded(APIError):
    status_code = 400

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class ServiceUnavailable(APIError):
    status_code = 503
    type = "server_error"


class UpstreamError(APIError):
    """The inference upstream (TGI or an OpenAI-compatible server) failed."""

    status_code = 502
    type = "server_error"


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def send_error(
    send: Send,
    status: int,
    message: str,
    type: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    """Send an error response from pure ASGI middleware (before the app is reached)."""
    body = json.dumps(error_body(message, type, None, code)).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic adds the union member's tag (e.g. "str", "list[str]", "function-after[...]"),
    # which means nothing to a client.
    cleaned = [p for p in parts if not any(c in p for c in "[]()") and p not in ("str", "list")]
    if not cleaned:
        return None
    out = cleaned[0]
    for p in cleaned[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _most_specific(errors: list[Any]) -> dict[str, Any]:
    """Of the errors about the first bad field, the deepest one.

    For a union such as ``stop: str | list[str]`` pydantic reports one error per member;
    the deepest (``stop[0]``: too short) says more than ``stop``: not a string.
    """
    if not errors:
        return {}

    def field(e: dict[str, Any]) -> Any:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        return loc[0] if loc else None

    top = field(errors[0])
    return max((e for e in errors if field(e) == top), key=lambda e: len(e.get("loc", ())))


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    first = _most_specific(list(exc.errors()))
    param = _loc_to_param(first.get("loc", ()))
    msg = str(first.get("msg", "Invalid request"))
    if first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request."
        param = None
    elif first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        shown = f"'{param}'" if param else "the request body"
        message = f"Invalid value for {shown}: {msg.removeprefix('Value error, ')}"
    return JSONResponse(error_body(message, "invalid_request_error", param, None), status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = "Not found: no such route."
        elif exc.status_code == 405:
            message = "Method not allowed for this route."
        return JSONResponse(
            error_body(message, "invalid_request_error", None, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("The server had an error while processing your request.", "server_error"),
            status_code=500,
        )
