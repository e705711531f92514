"""The engines in memory: leases, least-recently-used unloading, single-flight loading.

``ModelRegistry`` serves two kinds of model:

* **files** in the models directory (``model_store.directory.ModelDirectory``): looked up by
  id (the file name without ``.gguf``) on each request and loaded when a request names
  one, through the engine factory;
* **pinned engines** (``pin()``): the GPU mode's remote chat engine, never unloaded and not
  counted against ``MAX_LOADED_MODELS``.

Requests hold a model with ``async with registry.acquire(name, capability) as engine``.
The lease marks the engine in use (a reference count) and its release makes it the most
recently used. Loading is single-flight: concurrent requests for a model that is not
loaded share one load. Before a load, idle models are unloaded least recently used first
until fewer than ``MAX_LOADED_MODELS`` are in memory (loaded, loading or being unloaded);
a model in use is never unloaded. When every place is busy the load waits up to
``MODEL_WAIT_TIMEOUT`` seconds for one to become idle, then fails with 503 and
``Retry-After`` (waiting is fair to short requests; 503 keeps a flood from queueing
forever). With downloads allowed, a name found in the catalog but not on disk is
downloaded first (``model_store.downloads``).

Errors: a name that could be a path is 400 ``invalid_model_name``; an unknown model 404
``model_not_found`` (the message lists what is available); the wrong kind of model 400
``model_not_supported``; a corrupt or unsupported file 400 ``model_load_failed`` with the
reason (remembered per file version: fixing or replacing the file clears it); a failed
download 502 ``model_download_failed``. None of them affects the other models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from gpt4all_api.engines.base import Capabilities, Capability, Engine
from gpt4all_api.errors import APIError, InvalidRequest, ModelNotFound, ServiceUnavailable
from gpt4all_api.model_store.catalog import CatalogError, DownloadError, find_entry
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    LocalModel,
    ModelDirectory,
    validate_model_id,
)
from gpt4all_api.model_store.downloads import ModelDownloads
from gpt4all_api.model_store.gguf import GGUFError

logger = logging.getLogger(__name__)

__all__ = ["ModelLoadFailed", "ModelRegistry"]


class ModelLoadFailed(APIError):
    """The file exists but cannot be served (corrupt, truncated, unsupported)."""

    status_code = 400

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(
            f"The model '{model_id}' cannot be loaded: {reason}",
            param="model",
            code="model_load_failed",
        )


def check_capability(model_id: str, caps: Capabilities, capability: Capability | None) -> None:
    """400 ``model_not_supported`` when the model cannot serve ``capability``."""
    if capability is None or caps.supports(capability):
        return
    if caps.embeddings:
        message = (
            f"The model '{model_id}' is an embedding model and does not support "
            f"{capability}: use it with /v1/embeddings, or name a chat model."
        )
    elif capability == "embeddings":
        message = (
            f"The model '{model_id}' is a chat/completion model and cannot create "
            "embeddings: name an embedding model (see /v1/models)."
        )
    else:
        message = f"The model '{model_id}' does not support {capability}."
    raise InvalidRequest(message, param="model", code="model_not_supported")


@dataclass(eq=False)
class Loaded:
    """An engine in memory and who holds it."""

    model_id: str
    engine: Engine
    entry: LocalModel | None  # None: a pinned engine
    refs: int = 0
    last_used: float = 0.0

    @property
    def pinned(self) -> bool:
        return self.entry is None


class ModelRegistry:
    """Local GGUF models loaded on demand (bounded, LRU) plus pinned engines."""

    def __init__(
        self,
        directory: ModelDirectory,
        build_engine: Callable[[LocalModel], Engine],
        *,
        max_loaded: int,
        wait_timeout: float,
        local_chat: bool,
        downloads: ModelDownloads | None = None,
    ) -> None:
        self.directory = directory
        self.max_loaded = max_loaded
        self.wait_timeout = wait_timeout
        #: In GPU mode chat runs upstream; local files serve embeddings only.
        self.local_chat = local_chat
        self.downloads = downloads
        self._build_engine = build_engine
        self._loaded: dict[str, Loaded] = {}
        self._loading: set[str] = set()
        self._closing = 0
        self._load_tasks: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[str, int] = {}
        self._room = asyncio.Lock()
        self._freed = asyncio.Event()
        self._failures: dict[tuple[str, tuple[Any, ...]], str] = {}
        self._background: set[asyncio.Future[None]] = set()
        #: Counters (tests, metrics): engines started / closed by this registry.
        self.loads = 0
        self.unloads = 0

    # --- what is in memory -----------------------------------------------------------------

    def pin(self, engine: Engine) -> None:
        """Serve an already started engine (never unloaded, not counted)."""
        self._loaded[engine.model_id] = Loaded(engine.model_id, engine, None, 0, time.monotonic())

    @property
    def engines(self) -> dict[str, Engine]:
        """The engines in memory now, by id (pinned engines first)."""
        return {e.engine.model_id: e.engine for e in self._ordered()}

    def load_states(self) -> list[tuple[str, bool, float | None]]:
        """(model, loaded, last load seconds) of the engines in memory, for /metrics."""
        return [(model_id, e.loaded, e.load_seconds) for model_id, e in self.engines.items()]

    def slot_states(self) -> list[tuple[str, dict[str, Any]]]:
        """(model, ``Engine.slots_info()``) of the engines in memory that have slots."""
        states = [(model_id, e.slots_info()) for model_id, e in self.engines.items()]
        return [(model_id, info) for model_id, info in states if info is not None]

    def loaded(self, model_id: str) -> Loaded | None:
        """The local model ``model_id`` if it is in memory now (for listings)."""
        found = self._loaded.get(model_id)
        return found if found is not None and not found.pinned else None

    @property
    def pinned(self) -> list[Engine]:
        return [e.engine for e in self._loaded.values() if e.pinned]

    def _ordered(self) -> list[Loaded]:
        return sorted(self._loaded.values(), key=lambda e: not e.pinned)

    def find_pinned(self, name: str) -> Loaded | None:
        """A pinned engine named ``name`` (matched exactly: its id is ours, not a path)."""
        for loaded in self._loaded.values():
            if loaded.pinned and name in (loaded.model_id, loaded.model_id + ".gguf"):
                return loaded
        return None

    def served(self, entry: LocalModel) -> bool:
        """Whether a file in the models directory is served in this mode."""
        return entry.usable and (self.local_chat or entry.capabilities.embeddings)

    async def scan(self, only: str | None = None) -> dict[str, LocalModel]:
        """The models directory (or just ``only``), probing new files off the event loop."""
        if self.directory.needs_probe(only):
            return await asyncio.to_thread(self.directory.scan, only)
        return self.directory.scan(only)

    async def available_ids(self) -> list[str]:
        """Every model a request may name (for 'not found' messages)."""
        files = await self.scan()
        local = [i for i, f in files.items() if self.served(f) and i not in self._loaded]
        loaded = [i for i, e in self._loaded.items() if not e.pinned]
        return [e.model_id for e in self._loaded.values() if e.pinned] + sorted([*local, *loaded])

    # --- leases ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, name: str, capability: Capability | None) -> AsyncIterator[Engine]:
        """Hold ``name`` (loading it if needed) until the block ends."""
        loaded = await self._checkout(name, capability)
        try:
            yield loaded.engine
        finally:
            loaded.refs = max(0, loaded.refs - 1)
            loaded.last_used = time.monotonic()
            self._freed.set()

    def _take(self, loaded: Loaded) -> Loaded:
        loaded.refs += 1
        loaded.last_used = time.monotonic()
        return loaded

    async def _checkout(self, name: str, capability: Capability | None) -> Loaded:
        pinned = self.find_pinned(name)
        if pinned is not None:
            check_capability(pinned.model_id, pinned.engine.capabilities, capability)
            return self._take(pinned)
        try:
            model_id = validate_model_id(name)
        except InvalidModelId as exc:
            raise InvalidRequest(str(exc), param="model", code="invalid_model_name") from None
        entry = await self._find(model_id, name, capability)
        while True:
            loaded = self._loaded.get(model_id)
            stale = loaded is not None and loaded.entry is not None and loaded.entry != entry
            if loaded is not None and stale and loaded.refs == 0:
                # Replaced on disk: unload the old version and load the new one. (A replaced
                # file still in use keeps serving until it is idle.)
                self._detach(loaded)
                closing = asyncio.ensure_future(self._close(loaded, "file changed on disk"))
                self._background.add(closing)
                closing.add_done_callback(self._background.discard)
                continue
            if loaded is not None:
                return self._take(loaded)
            task = self._load_tasks.get(model_id)
            if task is None:
                task = asyncio.ensure_future(self._load(entry))
                self._load_tasks[model_id] = task
                task.add_done_callback(lambda t, m=model_id: self._forget_load(m, t))
            self._waiters[model_id] = self._waiters.get(model_id, 0) + 1
            try:
                # Shielded: a client that goes away does not abort a load others wait for.
                await asyncio.shield(task)
            finally:
                self._waiters[model_id] -= 1
                if not self._waiters[model_id]:
                    del self._waiters[model_id]

    def _forget_load(self, model_id: str, task: asyncio.Future[None]) -> None:
        if self._load_tasks.get(model_id) is task:
            del self._load_tasks[model_id]
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it; nobody waiting is fine too

    async def _find(self, model_id: str, name: str, capability: Capability | None) -> LocalModel:
        entry = (await self.scan(model_id)).get(model_id)
        if entry is None or (entry.usable and not self.served(entry)):
            if entry is None and self.downloads is not None:
                entry = await self._download(model_id, name, capability)
            else:
                raise ModelNotFound(name, await self.available_ids())
        if entry.error is not None:
            raise ModelLoadFailed(model_id, entry.error)
        check_capability(model_id, entry.capabilities, capability)
        failure = self._failures.get((model_id, entry.signature))
        if failure is not None:
            raise ModelLoadFailed(model_id, failure)
        return entry

    async def _download(
        self, model_id: str, name: str, capability: Capability | None
    ) -> LocalModel:
        assert self.downloads is not None
        try:
            entries = await self.downloads.catalog()
        except CatalogError as exc:
            available = await self.available_ids()
            raise APIError(
                f"The model '{name}' is not in MODELS_DIR, and downloading it failed: {exc}. "
                f"Available models: {', '.join(available) or 'none'}.",
                status_code=404,
                param="model",
                code="model_not_found",
            ) from None
        entry = find_entry(entries, model_id)
        if entry is None or not (self.local_chat or entry.embedding):
            raise ModelNotFound(name, await self.available_ids())
        # before fetching gigabytes
        check_capability(model_id, Capabilities.for_kind(entry.embedding), capability)
        try:
            await self.downloads.download(entry)
        except DownloadError as exc:
            raise APIError(
                f"Downloading the model '{model_id}' failed: {exc}",
                status_code=502,
                type="server_error",
                param="model",
                code="model_download_failed",
            ) from None
        found = (await self.scan(model_id)).get(model_id)
        if found is None:
            raise ModelNotFound(name, await self.available_ids())
        return found

    # --- loading and unloading ------------------------------------------------------------

    def in_memory(self) -> int:
        """Local models loaded, loading or being unloaded (what MAX_LOADED_MODELS bounds)."""
        loaded = sum(1 for e in self._loaded.values() if not e.pinned)
        return loaded + len(self._loading) + self._closing

    def _idle_lru(self) -> Loaded | None:
        idle = [
            e
            for e in self._loaded.values()
            if not e.pinned and e.refs == 0 and not self._waiters.get(e.model_id)
        ]
        return min(idle, key=lambda e: e.last_used, default=None)

    def _busy_error(self) -> ServiceUnavailable:
        busy = ", ".join(e.model_id for e in self._loaded.values() if not e.pinned) or "none"
        return ServiceUnavailable(
            f"All {self.max_loaded} model places (MAX_LOADED_MODELS) are busy serving other "
            f"requests (loaded: {busy}); try again shortly.",
            code="model_capacity_exhausted",
            headers={"Retry-After": "5"},
        )

    async def _reserve(self, model_id: str) -> None:
        """Make room for one more model (evicting idle LRU ones) and count it as loading."""
        deadline = time.monotonic() + self.wait_timeout
        try:
            await asyncio.wait_for(self._room.acquire(), max(self.wait_timeout, 1.0))
        except TimeoutError:
            raise self._busy_error() from None
        try:
            while self.in_memory() >= self.max_loaded:
                victim = self._idle_lru()
                if victim is not None:
                    self._detach(victim)
                    await self._close(victim, "least recently used, idle")
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._busy_error()
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), remaining)
            self._loading.add(model_id)
        finally:
            self._room.release()

    def _detach(self, loaded: Loaded) -> None:
        """Take ``loaded`` out of service at once (it still counts until closed)."""
        if self._loaded.get(loaded.model_id) is loaded:
            del self._loaded[loaded.model_id]
        self._closing += 1

    async def _close(self, loaded: Loaded, why: str) -> None:
        try:
            await loaded.engine.close()
            logger.info("unloaded model %s (%s)", loaded.model_id, why)
        except Exception:
            logger.exception("unloading %s failed", loaded.model_id)
        finally:
            self._closing -= 1
            self.unloads += 1
            self._freed.set()

    async def _load(self, entry: LocalModel) -> None:
        key = (entry.id, entry.signature)
        await self._reserve(entry.id)
        try:
            try:
                self.directory.check_still_inside(entry)
            except (OSError, GGUFError) as exc:
                raise ModelLoadFailed(entry.id, str(exc)) from exc
            engine = self._build_engine(entry)
            started = time.perf_counter()
            try:
                await engine.start()
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                self._failures[key] = reason
                logger.error("model %s failed to load: %s", entry.id, reason)
                raise ModelLoadFailed(entry.id, reason) from exc
            self._loaded[entry.id] = Loaded(entry.id, engine, entry, 0, time.monotonic())
            self.loads += 1
            logger.info(
                "loaded model %s in %.2fs (%d of MAX_LOADED_MODELS=%d in memory)",
                entry.id,
                time.perf_counter() - started,
                sum(1 for e in self._loaded.values() if not e.pinned),
                self.max_loaded,
            )
        finally:
            self._loading.discard(entry.id)
            self._freed.set()

    async def close(self) -> None:
        """Unload everything (the lifespan's end); running downloads are told to stop."""
        if self.downloads is not None:
            self.downloads.stop()
        for task in list(self._load_tasks.values()):
            task.cancel()
        for loaded in reversed(list(self._loaded.values())):
            try:
                await loaded.engine.close()
            except Exception:
                logger.exception("closing %s failed", loaded.model_id)
        self._loaded.clear()
