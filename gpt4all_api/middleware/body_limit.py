"""Request body limits: size (``MAX_BODY_BYTES``: 413 ``request_too_large``) and time
(``REQUEST_READ_TIMEOUT``: 408 ``request_timeout``).

A declared ``Content-Length`` over the limit is refused before anything is read; a body
without one (chunked) is read and counted, and refused as soon as it passes the limit. A
body that has not fully arrived ``timeout`` seconds after the headers (a client that
declared 1000 bytes and sent 9) is answered 408 with ``Connection: close``, so the server
drops the connection instead of holding it for as long as the client likes. An accepted
body is buffered (it is at most the limit, and every route reads it whole anyway) and
replayed to the app; later ``receive`` calls go to the server, so the app still hears
about a client that disconnects.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt4all_api.errors import send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def _too_large(self, send: Send) -> None:
        limit = self.max_bytes
        message = f"The request body is too large: this server accepts at most {limit} bytes."
        await _refuse(send, 413, message, "request_too_large")

    async def _too_slow(self, send: Send) -> None:
        message = f"The request body did not arrive within {self.timeout:g} s."
        await _refuse(send, 408, message, "request_timeout")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            try:
                if deadline is None:
                    message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                await self._too_slow(send)
                return
            if message["type"] != "http.request":  # disconnected before the body was in
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    """The body is not read any further: the connection closes after the answer."""
    await send_error(send, status, message, "invalid_request_error", code, {"Connection": "close"})
