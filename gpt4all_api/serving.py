"""uvicorn's HTTP/1.1 protocol with the two bounds uvicorn lacks: a deadline for a
request's headers and a limit on open connections.

uvicorn times out only *idle kept-alive* connections: a client that opens a connection and
then sends its request line and headers a byte at a time (or never) holds the connection,
a file descriptor and some memory for as long as it likes, and 2000 such clients hold 2000
descriptors. Here:

- a request's headers must arrive within ``read_timeout`` seconds of its first byte (of the
  connection, for its first request): otherwise the server answers 408
  ``request_timeout`` (or, when not a byte arrived, just closes) and drops the connection.
  The body has the same time once the headers are in, enforced where it is read
  (``middleware.body_limit``), so that holds under any ASGI server;
- a connection beyond ``max_connections`` open ones is answered 503
  ``too_many_connections`` (JSON, ``Connection: close``, ``Retry-After``) as soon as its
  request arrives, and closed: it never reaches the app.

``python -m gpt4all_api`` serves with ``http_protocol(settings)``; other servers running
``gpt4all_api.asgi:app`` must bound headers and connections themselves (gunicorn's
``--timeout``/``--worker-connections``, a reverse proxy's client timeouts).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import h11
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gpt4all_api.errors import error_body, send_error
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP response written to the socket directly (no request was parsed, so
    h11 cannot send one)."""
    body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's ``H11Protocol`` with a header deadline and a connection limit."""

    def __init__(self, *args: Any, read_timeout: float, max_connections: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._deadline: asyncio.TimerHandle | None = None
        self._request_started = False  # a byte of the current request has arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning(
                "%d connections open (MAX_CONNECTIONS=%d): refusing a request",
                len(self.connections),
                self.max_connections,
            )
            self.app = self._refuse
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._request_started = True
            if self._deadline is None:  # the next request on a kept-alive connection
                self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # its headers are in
            self._disarm()
            self._request_started = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._headers_too_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._request_started:
            self.transport.write(
                _raw_response(
                    408,
                    "Request Timeout",
                    f"The request's headers did not arrive within {self.read_timeout:g} s.",
                    "request_timeout",
                )
            )
        self.transport.close()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(
            send,
            503,
            f"The server has too many open connections (at most {self.max_connections}); "
            "retry shortly.",
            "server_error",
            "too_many_connections",
            {"Connection": "close", "Retry-After": "1"},
        )


def http_protocol(settings: Settings) -> Callable[..., BoundedH11Protocol]:
    """The protocol factory for uvicorn's ``http=`` with the settings' bounds (a partial
    of a module-level class: uvicorn's reloader pickles it into its worker process)."""
    return partial(
        BoundedH11Protocol,
        read_timeout=settings.request_read_timeout,
        max_connections=settings.max_connections,
    )
