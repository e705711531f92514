"""Admission control: a bounded FIFO wait queue in front of each model.

A model serves ``Engine.max_concurrency`` requests at once (1 for a gpt4all instance: its
worker thread runs one generation at a time; ``None`` for upstreams with their own queue,
such as TGI, which then pass straight through). Up to ``MAX_QUEUE`` more requests wait, in
arrival order; a request beyond that is refused at once with 429 and ``Retry-After``, before
it costs the model anything, so it can neither lose nor slow down the queued ones. A request
that waits longer than ``QUEUE_TIMEOUT`` fails with 503 ``queue_timeout`` without running.

A ticket is held for the whole request (every choice of ``n``, every prompt of a list, the
full stream), which keeps the gpt4all worker's own FIFO at most one request deep.
Everything here runs on the event loop thread; no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gpt4all_api import request_context
from gpt4all_api.errors import APIError

#: Weight of the newest service time in the moving average behind ``Retry-After``.
_EWMA_ALPHA = 0.2
_RETRY_AFTER_MAX = 60


class QueueFull(APIError):
    status_code = 429
    type = "rate_limit_error"

    def __init__(self, model: str, max_queue: int, retry_after: int) -> None:
        super().__init__(
            f"The model '{model}' is busy and its queue is full ({max_queue} waiting); "
            f"retry after {retry_after} s.",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )


class QueueTimeout(APIError):
    status_code = 503
    type = "server_error"

    def __init__(self, model: str, waited: float, retry_after: int) -> None:
        super().__init__(
            f"The request waited {waited:.1f} s for the model '{model}' (the queue timeout) "
            "without being served; retry later.",
            code="queue_timeout",
            headers={"Retry-After": str(retry_after)},
        )


class Ticket:
    """The right to run one request on a model; release it once (idempotent, also as a
    context manager)."""

    __slots__ = ("_gate", "_released", "acquired_at")

    def __init__(self, gate: AdmissionGate) -> None:
        self._gate = gate
        self._released = False
        self.acquired_at = time.monotonic()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._release(time.monotonic() - self.acquired_at)

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class AdmissionGate:
    """``capacity`` requests at once (None: unlimited), at most ``max_queue`` waiting."""

    def __init__(
        self,
        model: str,
        capacity: int | None,
        max_queue: int,
        timeout: float | None,
        on_wait: Callable[[float], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.model = model
        self.capacity = capacity
        self.max_queue = max_queue
        self.timeout = timeout if timeout else None
        self._on_wait = on_wait
        self._on_reject = on_reject
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._avg_service: float | None = None

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds until a new request would likely get in (from recent service times)."""
        if self._avg_service is None:
            return 1
        capacity = self.capacity or 1
        estimate = self._avg_service * (self.waiting + 1) / capacity
        return max(1, min(_RETRY_AFTER_MAX, math.ceil(estimate)))

    async def acquire(self) -> Ticket:
        """Wait for a ticket in FIFO order; raises ``QueueFull`` / ``QueueTimeout``."""
        if self.capacity is None or (self._running < self.capacity and not self._waiters):
            self._running += 1
            self._waited(0.0)
            return Ticket(self)
        if len(self._waiters) >= self.max_queue:
            self._rejected("queue_full")
            raise QueueFull(self.model, self.max_queue, self.retry_after())
        started = time.monotonic()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except BaseException as exc:
            self._abandon(waiter)
            if isinstance(exc, TimeoutError):
                self._rejected("queue_timeout")
                raise QueueTimeout(
                    self.model, time.monotonic() - started, self.retry_after()
                ) from None
            raise
        self._waited(time.monotonic() - started)
        return Ticket(self)

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self._release(None)  # the ticket was handed over just as we gave up: pass it on
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _release(self, held: float | None) -> None:
        if held is not None:
            prev = self._avg_service
            self._avg_service = held if prev is None else prev + _EWMA_ALPHA * (held - prev)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the ticket passes straight to the next in line
                return
        self._running -= 1

    def _waited(self, seconds: float) -> None:
        if self._on_wait is not None:
            self._on_wait(seconds)

    def _rejected(self, reason: str) -> None:
        if self._on_reject is not None:
            self._on_reject(reason)


class Admission:
    """The gates of one app, one per model id, created on first use."""

    def __init__(self, max_queue: int, timeout: float | None, metrics: Any | None = None) -> None:
        self.max_queue = max_queue
        self.timeout = timeout
        self._metrics = metrics
        self._gates: dict[str, AdmissionGate] = {}

    async def admit(self, model: str, capacity: int | None) -> Ticket:
        """Wait for a ticket on ``model`` (429 at once when its queue is full); the time spent
        waiting goes to the request's access line."""
        started = time.perf_counter()
        ticket = await self.gate(model, capacity).acquire()
        request_context.note_queue_wait(time.perf_counter() - started)
        return ticket

    def gate(self, model: str, capacity: int | None) -> AdmissionGate:
        gate = self._gates.get(model)
        if gate is None:
            on_wait = on_reject = None
            if self._metrics is not None:
                wait_hist = self._metrics.queue_wait.labels(model)
                rejected = self._metrics.queue_rejected

                def on_wait(seconds: float) -> None:
                    wait_hist.observe(seconds)

                def on_reject(reason: str) -> None:
                    rejected.labels(model, reason).inc()

            gate = AdmissionGate(model, capacity, self.max_queue, self.timeout, on_wait, on_reject)
            self._gates[model] = gate
        return gate

    def snapshot(self) -> list[tuple[str, int, int]]:
        """(model, waiting, running) for every gate, for the metrics."""
        return [(m, g.waiting, g.running) for m, g in self._gates.items()]
