"""Store calls that end within a deadline, also against a database that hangs.

A PostgreSQL server that stops answering (stopped, overloaded, behind a dead link) would
stall a blocking query, its thread and every call queued behind it without bound. Each
layer gets a bound of its own:

- the caller: ``BoundedRunner.run`` gives up after the deadline (``StoreTimeout``, which
  the service answers with 503), also while the call still waits for a worker thread;
- the worker thread: a call past its deadline has its connection's socket shut down, so
  the blocked driver returns at once (SQLAlchemy then replaces the connection) and the
  thread is free for the next call; a call whose deadline passed before it started never
  starts;
- the connection: ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (a peer
  that vanished), a server-side ``statement_timeout`` (a slow but live server), and a
  bounded wait for a pooled connection (``pool_timeout``, set by the store);
- a pooled connection is pinged once it is assigned to a call (not before, as SQLAlchemy's
  own pre-ping would), so a ping that hangs is cut off with the call.

A cut-off write may still be applied once the server resumes (its COMMIT may already sit
in the server's socket buffer): the client was told it failed, so at worst a response
it cannot know the id of is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError

T = TypeVar("T")

#: TCP keepalive probes: an idle connection to a vanished peer fails after ~11 s.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
#: Milliseconds sent data may stay unacknowledged before the kernel drops the connection.
TCP_USER_TIMEOUT_MS = 10_000


class StoreTimeout(TimeoutError):
    """The database did not answer a store call within its deadline."""


class _Call:
    """One store call: the connection it uses, so it can be cut off from another thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: Any = None
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def attach(self, connection: Any) -> None:
        with self._lock:
            if self._abandoned:
                raise StoreTimeout(f"no answer from the database within {self.timeout:g} s")
            self._connection = connection

    def detach(self) -> None:
        with self._lock:
            self._connection = None

    def abandon(self) -> None:
        """Past the deadline: cut the connection off (the driver's blocked call returns)."""
        with self._lock:
            self._abandoned = True
            connection, self._connection = self._connection, None
        if connection is not None:
            _shut_down(connection)


def _shut_down(connection: Any) -> None:
    """Shut the socket down under the driver: its blocked read or write fails at once. The
    descriptor stays the driver's (a duplicate is shut down and closed)."""
    try:
        fd = os.dup(connection.fileno())
    except (OSError, AttributeError, ValueError):
        return  # closed already, or not a socket-backed connection
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class BoundedRunner:
    """Runs a store's blocking calls on its own threads, each within a deadline."""

    def __init__(self, workers: int, timeout: float) -> None:
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="response-store")
        self._local = threading.local()  # the call running on each worker thread

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` on a worker thread; ``StoreTimeout`` after ``timeout`` seconds
        (default: the runner's). A caller that is cancelled earlier leaves the call
        running until its deadline, then cuts it off too."""
        limit = self.timeout if timeout is None else timeout
        call = _Call(limit)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + limit
        future = loop.run_in_executor(self._executor, self._enter, call, fn, args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            raise StoreTimeout(f"no answer from the database within {limit:g} s") from None
        finally:
            if not future.done():
                loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), call.abandon)
                future.add_done_callback(_consume)

    def _enter(self, call: _Call, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if call.abandoned:  # waited for a thread past its deadline: never start
            raise StoreTimeout(f"no answer from the database within {call.timeout:g} s")
        self._local.call = call
        try:
            return fn(*args)
        finally:
            self._local.call = None

    def watch(self, engine: Engine) -> None:
        """Attach each pooled connection to the call that checks it out, then ping it (a
        broken connection is replaced, SQLAlchemy's pessimistic disconnect handling)."""
        dialect = engine.dialect

        def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            call: _Call | None = getattr(self._local, "call", None)
            if call is not None:
                call.attach(dbapi_connection)
            try:
                dialect.do_ping(dbapi_connection)
            except dialect.loaded_dbapi.Error as exc:
                raise DisconnectionError(str(exc)) from exc

        def on_checkin(_dbapi_connection: Any, _record: Any) -> None:
            call: _Call | None = getattr(self._local, "call", None)
            if call is not None:
                call.detach()

        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)

    def shutdown(self) -> None:
        """Blocking: wait for the running calls (each ends by its deadline)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _consume(future: asyncio.Future[Any]) -> None:
    """Read the outcome of a call nobody waits for any more (no 'never retrieved' noise)."""
    if not future.cancelled():
        future.exception()


def postgres_connect_args(url: URL, timeout: float) -> dict[str, Any]:
    """libpq settings bounding a PostgreSQL connection (values in the URL win)."""
    ms = max(1, round(timeout * 1000))
    args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's smallest
        **KEEPALIVE,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    args = {k: v for k, v in args.items() if k not in url.query}
    options = url.query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    if "statement_timeout" not in options:
        args["options"] = f"{options} -c statement_timeout={ms}".strip()
    return args
