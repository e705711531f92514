"""Graceful shutdown: drain, give in-flight work a grace period, then end it cleanly.

On SIGTERM (``__main__`` hooks uvicorn's shutdown; any other server reaches the lifespan
shutdown instead) the coordinator starts *draining*: uvicorn stops accepting connections,
``/health`` answers 503 and new generation requests are refused with 503. Requests already
in flight (running or queued) get ``GRACEFUL_SHUTDOWN_SECONDS`` to finish. When the grace
period *expires*, whatever is left is cancelled: a non-streamed or still-queued request
gets a 503 ``server_shutting_down`` error, a stream gets that error as an SSE event and then
``[DONE]``. Only then does the lifespan free the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gpt4all_api.errors import APIError

logger = logging.getLogger(__name__)


class ShuttingDown(APIError):
    status_code = 503
    type = "server_error"

    def __init__(self) -> None:
        super().__init__(
            "The server is shutting down; retry the request (another instance may serve it).",
            code="server_shutting_down",
            headers={"Connection": "close", "Retry-After": "1"},
        )


class ShutdownCoordinator:
    def refuse_if_draining(self) -> None:
        """New requests are turned away (503) once draining has begun."""
        if self.draining:
            raise ShuttingDown()

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.draining = False
        self.expired = False
        self._expired_event: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._streams: set[asyncio.Task[object]] = set()

    def _event(self) -> asyncio.Event:
        if self._expired_event is None:
            self._expired_event = asyncio.Event()
            if self.expired:
                self._expired_event.set()
        return self._expired_event

    def begin(self, grace_seconds: float | None = None) -> None:
        """Start draining (idempotent); in-flight work is cancelled after the grace period."""
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        if not self.draining:
            self.draining = True
            logger.info("shutting down: draining, in-flight requests get %.1f s to finish", grace)
        if self.expired:
            return
        if grace <= 0:
            self.expire()
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + grace
        if self._timer is None or when < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self.expire)

    def expire(self) -> None:
        """End of the grace period: cancel the streams and wake every waiting request."""
        if self.expired:
            return
        self.expired = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._streams:
            logger.warning("grace period over: cancelling %d stream(s)", len(self._streams))
        for task in list(self._streams):
            task.cancel()
        self._event().set()

    async def wait_expired(self) -> None:
        await self._event().wait()

    def track_stream(self, task: asyncio.Task[object]) -> None:
        """A stream's producer: cancelled when the grace period expires."""
        if self.expired:
            task.cancel()
            return
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    async def wait_streams(self, timeout: float) -> None:
        """Give cancelled streams a moment to send their last events."""
        if self._streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*self._streams, return_exceptions=True)
