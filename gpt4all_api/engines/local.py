"""What every in-process gpt4all model shares: its worker thread and load/unload cycle.

Each instance lives on its own ``ModelWorker`` (the bindings are not thread-safe; separate
instances on separate threads are fine): it is loaded, used and closed on that thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gpt4all_api.engines.base import Engine
from gpt4all_api.engines.worker import Job, ModelWorker

T = TypeVar("T")


class ModelLoadError(RuntimeError):
    """The model file could not be loaded (bad file, unsupported architecture, ...)."""


def check_loaded(model: Any, handle: Any, name: str) -> None:
    """gpt4all returns from a failed load without an error; ask the backend instead."""
    from gpt4all._pyllmodel import llmodel

    if not llmodel.llmodel_isModelLoaded(handle):
        model.close()
        raise ModelLoadError(f"cannot load {name}: the backend rejected the file")


class LocalEngine(Engine):
    """A model file run in-process; subclasses say how to load it (``_start_worker``)."""

    max_concurrency = 1  # one worker thread: one call at a time

    def __init__(self, model_id: str, path: Path) -> None:
        self.model_id = model_id
        self.path = path
        self.load_seconds: float | None = None
        self._model: Any = None
        self._worker: ModelWorker | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def worker(self) -> ModelWorker:
        if self._worker is None:
            raise RuntimeError("engine not started")
        return self._worker

    async def _start_worker(self, load: Callable[[Job], T]) -> T:
        """Start the worker and run ``load`` on it (timed); a failed load stops the worker."""
        self._worker = ModelWorker(self.model_id)
        started = time.perf_counter()
        try:
            result = await self._worker.run(load)
        except BaseException:
            self._worker.stop()
            self._worker = None
            raise
        self.load_seconds = time.perf_counter() - started
        return result

    async def close(self) -> None:
        worker, model = self._worker, self._model
        self._worker, self._model = None, None
        if worker is None:
            return

        def unload(_: Job) -> None:
            if model is not None:
                model.close()

        try:
            await worker.run(unload)
        finally:
            await asyncio.to_thread(worker.stop)

    async def health(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "queue": self._worker.pending if self._worker else 0}
