"""Slots: the model instances of one CPU engine, and which request runs on which.

A slot is one gpt4all instance (weights mapped from the file, shared between instances by
the page cache; its own KV cache) with its own worker thread and ``ContextCache``. The
engine hands a request to the idle slot whose context shares the longest prefix with the
prompt, then the least recently used one, and splits the CPU threads among the slots that
are running, so that a lone client gets all of them.

Slot state is touched on the event loop (``busy``, ``last_used``, ``wanted_threads``) or
on the slot's own worker thread while it is busy (the model, ``cache``, ``threads``):
an idle slot's worker runs nothing, so the loop may read its cache to choose.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gpt4all_api.engines.prompt_cache import ContextCache
from gpt4all_api.engines.worker import ModelWorker
from gpt4all_api.settings import Settings
from gpt4all_api.structured import DecodeResult


def default_parallel() -> int:
    """One slot per core, at most 4: two 1-thread instances decode ~1.46x faster together
    than one 2-thread instance on 2 cores; past 4 each slot's KV cache costs more than
    the cores give back."""
    return max(1, min(4, os.cpu_count() or 1))


def default_threads() -> int:
    """gpt4all's own default (n_threads unset): min(4, cores), as many as slots."""
    return default_parallel()


@dataclass(frozen=True, slots=True)
class CpuServing:
    """How a CPU chat model is served (PARALLEL, PROMPT_CACHE*, STATE_CACHE_MB, and the
    saved-context tiers beyond RAM: KV_DISK_MB under DATA_DIR, KV_CACHE_URL)."""

    parallel: int = 1
    prompt_cache: bool = True
    prompt_cache_exact: bool = True
    state_cache_mb: int = 0
    kv_disk_dir: Path | None = None
    kv_disk_mb: int = 0
    kv_cache_url: SecretStr | None = None
    kv_cache_ttl: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CpuServing:
        parallel = settings.parallel if settings.parallel is not None else default_parallel()
        return cls(
            parallel=parallel,
            prompt_cache=settings.prompt_cache,
            prompt_cache_exact=settings.prompt_cache_exact,
            state_cache_mb=settings.state_cache_mb,
            kv_disk_dir=settings.data_dir / "kv",
            kv_disk_mb=settings.kv_disk_mb,
            kv_cache_url=settings.kv_cache_url,
            kv_cache_ttl=settings.kv_cache_ttl,
        )


class Slot:
    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.worker = ModelWorker(f"{name}#{index}")
        self.model: Any = None  # the GPT4All instance, once loaded
        self.cache = ContextCache()
        self.busy = False
        self.last_used = 0.0
        self.wanted_threads = 1  # written on the loop, read by the worker between evaluations
        self.threads = 0  # last count set on the context (worker thread only)
        self.scratch: Any = None  # its StateScratch, made on first save (worker thread)

    def apply_threads(self) -> None:
        """Worker thread: take the thread share the pool gave this slot (the backend reads
        it at its next evaluation, so this runs before each call and between tokens)."""
        wanted = self.wanted_threads
        if wanted != self.threads and self.model is not None:
            from gpt4all._pyllmodel import llmodel

            llmodel.llmodel_setThreadCount(self.model.model.model, wanted)
            self.threads = wanted


class SlotPool:
    """Hands idle slots out (longest reusable prefix, then LRU) and shares the threads."""

    def __init__(self, slots: list[Slot], total_threads: int) -> None:
        self.slots = slots
        self.total_threads = total_threads
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> int:
        return sum(s.busy for s in self.slots)

    async def acquire(self, score: Callable[[Slot], int]) -> Slot:
        """The idle slot with the highest ``score`` (reusable tokens), then the least
        recently used; waits while all are busy."""
        while True:
            idle = [s for s in self.slots if not s.busy and s.model is not None]
            if idle:
                slot = max(idle, key=lambda s: (score(s), -s.last_used))
                slot.busy = True
                slot.last_used = time.monotonic()
                self._rebalance()
                return slot
            if not any(s.model is not None for s in self.slots):
                raise RuntimeError("no model instance is loaded")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, slot: Slot) -> None:
        slot.busy = False
        slot.last_used = time.monotonic()
        self._rebalance()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _rebalance(self) -> None:
        running = [s for s in self.slots if s.busy]
        share, extra = divmod(self.total_threads, max(1, len(running)))
        for i, s in enumerate(sorted(running, key=lambda s: s.last_used)):
            s.wanted_threads = max(1, share + (1 if i < extra else 0))
        for s in self.slots:
            if not s.busy:
                s.wanted_threads = self.total_threads


@dataclass(slots=True)
class CacheStats:
    """Prompt reuse counters (for /health, /v1/models and the lead's /metrics)."""

    requests: int = 0
    hits: int = 0  # requests that reused at least one token
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def note(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.requests += 1
        self.hits += cached_tokens > 0
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "hit_rate": round(self.hits / self.requests, 4) if self.requests else 0.0,
            "token_hit_rate": (
                round(self.cached_tokens / self.prompt_tokens, 4) if self.prompt_tokens else 0.0
            ),
        }


class StructuredStats:
    """Structured replies (``structured.decode``) and what the decoder did for them; noted
    on the slots' worker threads, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outputs = 0
        self.repairs = 0
        self.rollbacks = 0
        self.tokens = 0

    def note(self, result: DecodeResult) -> None:
        with self._lock:
            self.outputs += 1
            self.repairs += result.repairs
            self.rollbacks += result.rollbacks
            self.tokens += result.completion_tokens

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                "outputs": self.outputs,
                "repairs": self.repairs,
                "rollbacks": self.rollbacks,
                "tokens": self.tokens,
            }
