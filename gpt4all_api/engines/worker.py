"""One thread per model instance, running its jobs one at a time in FIFO order.

The gpt4all bindings crash when one instance is used from two threads, and a generation
can only be stopped from inside its own callback; so every call into an instance goes
through its ``ModelWorker``, and each job carries a cancel flag its callbacks check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    fn: Callable[[Job], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop the job: skipped if still queued, stopped at its next callback if running."""
        self.cancelled.set()


class ModelWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # queued + running; touched only on the event loop thread
        self._thread = threading.Thread(target=self._run, name=f"model-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs queued or running (for queue limits and metrics)."""
        return self._pending

    def submit(self, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn(job)`` to run on the worker thread; await ``job.future`` for its result."""
        loop = asyncio.get_running_loop()
        job = Job(fn=fn, future=loop.create_future(), loop=loop)
        self._pending += 1
        job.future.add_done_callback(self._done)
        self._queue.put(job)
        return job

    async def run(self, fn: Callable[[Job], Any]) -> Any:
        """Run ``fn`` on the worker and wait for it; cancelling the waiter cancels the job."""
        job = self.submit(fn)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise

    def _done(self, _: asyncio.Future[Any]) -> None:
        self._pending -= 1

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                self._resolve(job, None, asyncio.CancelledError())
                continue
            try:
                result = job.fn(job)
            except BaseException as exc:
                self._resolve(job, None, exc)
            else:
                self._resolve(job, result, None)

    @staticmethod
    def _resolve(job: Job, result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if isinstance(exc, asyncio.CancelledError):
                job.future.cancel()
            elif exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            job.loop.call_soon_threadsafe(settle)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running job (callers cancel it first) and end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("worker %s did not stop within %.0fs", self.name, timeout)
