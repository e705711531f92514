"""Make ``/openapi.json`` describe what the server really answers.

FastAPI documents a 422 ``HTTPValidationError`` the service never sends (validation errors
become OpenAI-style 400s) and nothing about the errors it does send. This rewrites every
operation's responses: the OpenAI error envelope for 400 / 401 / 404 / 413 / 429 / 503,
``text/event-stream`` next to JSON for the generation routes, and the bearer scheme when
API keys are configured. The fuzz test (schemathesis) holds responses to this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from gpt4all_api.protocol.chat import CreateChatCompletionStreamResponse
from gpt4all_api.protocol.completions import CreateCompletionResponse

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_DESCRIPTIONS = {
    "400": "Invalid request (the parameter is named in `error.param`).",
    "401": "Missing or wrong API key (`Authorization: Bearer <key>`).",
    "404": "No such model (`model_not_found`).",
    "413": "Request body larger than MAX_BODY_BYTES.",
    "429": "The model's queue is full (MAX_QUEUE); see `Retry-After`.",
    "503": "Model busy (queue timeout, or no memory to load it), or the server is shutting "
    "down; see `Retry-After`.",
}
#: Generation routes and the model of their stream chunks (component name, model).
_GENERATION: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("/v1/completions", "post"): ("CreateCompletionStreamResponse", CreateCompletionResponse),
    ("/v1/chat/completions", "post"): (
        "CreateChatCompletionStreamResponse",
        CreateChatCompletionStreamResponse,
    ),
}
_PUBLIC = {"/health"}


def _error(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }


def _add_component(schemas: dict[str, Any], name: str, model: type[BaseModel]) -> str:
    """``model``'s schema (as parsed: fields with defaults may be absent) under ``name``."""
    doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for key, sub in doc.pop("$defs", {}).items():
        schemas.setdefault(key, sub)
    doc["title"] = name
    schemas.setdefault(name, doc)
    return f"#/components/schemas/{name}"


def _sse_schema(chunk_ref: str) -> dict[str, Any]:
    """One SSE event (OpenAPI < 3.2: ``schema`` describes each event): ``data`` is a JSON
    chunk, an error (a stream that fails after it started), or the final ``[DONE]``."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "oneOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [{"$ref": chunk_ref}, _ERROR_REF]},
                    },
                ]
            }
        },
        "description": "With `stream: true`: `data: {chunk}` events, then `data: [DONE]`.",
    }


def rewrite_openapi(schema: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            responses.pop("422", None)
            codes: list[str] = []
            if "requestBody" in op:
                # a body names a model: unknown (404), or busy loading / full memory (503)
                codes += ["400", "404", "413", "503"]
            if "{" in path:
                codes += ["400", "404"]  # a malformed id, or an unknown one
            if (path, method) in _GENERATION:
                codes += ["429", "503"]
                chunk_ref = _add_component(schemas, *_GENERATION[(path, method)])
                ok = responses.get("200", {}).setdefault("content", {})
                ok["text/event-stream"] = {"schema": _sse_schema(chunk_ref)}
            if auth and path not in _PUBLIC:
                codes.append("401")
                op["security"] = [{"bearerAuth": []}]
            for code in codes:
                responses.setdefault(code, _error(code))
    if auth:
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the keys in API_KEYS / API_KEYS_FILE.",
        }
    text = repr(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
    return schema


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite_openapi(generate(), auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
