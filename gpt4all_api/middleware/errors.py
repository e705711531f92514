"""Sending an OpenAI-style error from pure ASGI middleware (before the app is reached)."""

from __future__ import annotations

import json

from starlette.types import Send

from gpt4all_api.errors import error_body


async def send_error(
    send: Send,
    status: int,
    message: str,
    type: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    body = json.dumps(error_body(message, type, None, code)).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
