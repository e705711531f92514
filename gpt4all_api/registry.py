"""Which models this server serves, and their engines: loaded on demand, unloaded LRU.

``ModelManager`` (``ModelRegistry`` is the same class) knows two kinds of model:

* **files** in ``MODELS_DIR``: every ``*.gguf`` there is listed by id (the file name
  without ``.gguf``), re-listed on each lookup (a directory listing and a ``stat``; headers
  are probed once per file version, see :mod:`gpt4all_api.model_store.directory`). Chat/completion
  models (any architecture the backend supports) and embedding models (``bert``,
  ``nomic-bert``) alike are loaded when a request names them;
* **added engines** (``add()``): the GPU mode's remote chat engine. They are pinned: never
  unloaded and not counted against ``MAX_LOADED_MODELS``.

Requests hold a model with ``async with manager.acquire(name, capability) as lease``.
The lease marks the engine in use (a reference count) and its release makes it the most
recently used. Loading is single-flight: concurrent requests for a model that is not
loaded share one load. Before a load, idle models are unloaded least recently used first
until fewer than ``MAX_LOADED_MODELS`` are in memory (loaded, loading or being unloaded);
a model in use is never unloaded. When every slot is busy the load waits up to
``MODEL_WAIT_TIMEOUT`` seconds for one to become idle, then fails with 503 and
``Retry-After`` (waiting is fair to short requests; 503 keeps a flood from queueing
forever). The configured ``MODEL`` (and ``EMBEDDING_MODEL``, when a second slot is free)
are loaded at start-up but are otherwise ordinary LRU members.

With ``ALLOW_DOWNLOAD``, a name found in the gpt4all catalog but not on disk is
downloaded first (one download per model however many requests wait; progress in the
logs; checksums verified; see :mod:`gpt4all_api.model_store.catalog`).

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
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.responses import Response, StreamingResponse

from gpt4all_api.engines.base import Capabilities, Engine, ModelInfo
from gpt4all_api.errors import APIError, InvalidRequest, ModelNotFound, ServiceUnavailable
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    LocalModel,
    ModelDirectory,
    capability_names,
    model_id_for,
    validate_model_id,
)
from gpt4all_api.model_store.gguf import GGUFError
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a fetched catalog (or the failure to fetch it) is reused.
CATALOG_TTL = 600.0
CATALOG_ERROR_TTL = 30.0

__all__ = [
    "Lease",
    "ModelLoadFailed",
    "ModelManager",
    "ModelRegistry",
    "model_id_for",
    "resolve_model_path",
]


# --- the configured model directories -------------------------------------------------------


def model_directory(settings: Settings) -> ModelDirectory:
    """MODELS_DIR, then (when set) BUILTIN_MODELS_DIR, the Docker image's baked-in models."""
    builtin = [settings.builtin_models_dir] if settings.builtin_models_dir else []
    return ModelDirectory(settings.models_dir, builtin)


class ModelUnavailableError(FileNotFoundError):
    """``MODEL`` cannot be served (absent, unusable file, or an invalid name)."""


def resolve_model_path(settings: Settings) -> Path:
    """The file for ``MODEL``: a local GGUF, or (downloads allowed) where it will be."""
    try:
        wanted = validate_model_id(settings.model)
    except InvalidModelId as exc:
        raise ModelUnavailableError(f"MODEL={settings.model!r}: {exc}") from None
    files = model_directory(settings).scan()
    entry = files.get(wanted)
    if entry is not None and entry.error is not None:
        raise ModelUnavailableError(f"MODEL={settings.model!r} cannot be served: {entry.error}")
    if entry is not None:
        return entry.path
    if settings.allow_download:
        return settings.models_dir / (wanted + ".gguf")
    usable = [i for i, f in files.items() if f.usable]
    raise ModelUnavailableError(_missing_model_message(settings, usable))


def _missing_model_message(settings: Settings, available: list[str]) -> str:
    return (
        f"MODEL={settings.model!r} is not in MODELS_DIR={settings.models_dir} "
        f"(available: {', '.join(available) or 'none'}) and ALLOW_DOWNLOAD is off. Run "
        "`python -m gpt4all_api.model_store fetch-default` or put the GGUF file there."
    )


# --- errors ----------------------------------------------------------------------------------


class ModelLoadFailed(APIError):
    """The file exists but cannot be served (corrupt, truncated, unsupported)."""

    status_code = 400

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(
            f"The model '{model_id}' cannot be loaded: {reason}",
            param="model",
            code="model_load_failed",
        )


def _invalid_name(exc: InvalidModelId) -> InvalidRequest:
    return InvalidRequest(str(exc), param="model", code="invalid_model_name")


# --- leases ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Slot:
    model_id: str
    engine: Engine
    entry: LocalModel | None  # None: an added (pinned) engine
    refs: int = 0
    last_used: float = 0.0

    @property
    def pinned(self) -> bool:
        return self.entry is None


class Lease:
    """A model held for one request: ``async with manager.acquire(...) as lease``.

    Leaving the block releases it, unless the response was handed to
    :meth:`keep_until_sent`: a streamed response then releases it when its body ends
    (finished, failed or the client went away).
    """

    def __init__(self, manager: ModelManager, name: str, capability: str | None) -> None:
        self._manager = manager
        self._name = name
        self._capability = capability
        self._slot: _Slot | None = None
        self._kept = False

    @property
    def engine(self) -> Engine:
        if self._slot is None:
            raise RuntimeError("lease not acquired")
        return self._slot.engine

    async def __aenter__(self) -> Lease:
        self._slot = await self._manager._checkout(self._name, self._capability)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._kept:
            self.release()

    def release(self) -> None:
        """Give the model back (idempotent)."""
        slot, self._slot = self._slot, None
        if slot is not None:
            self._manager._checkin(slot)

    def keep_until_sent(self, response: Response) -> Response:
        """Hold the model until a streamed ``response`` has been sent; returns it."""
        if isinstance(response, StreamingResponse) and self._slot is not None:
            wrapped = _release_after(response.body_iterator, self)
            # An iterator that is never started never runs its finally: release on GC too.
            weakref.finalize(wrapped, self.release)
            response.body_iterator = wrapped
            self._kept = True
        return response


async def _release_after(iterator: Any, lease: Lease) -> AsyncIterator[Any]:
    try:
        async for chunk in iterator:
            yield chunk
    finally:
        lease.release()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# --- the manager -----------------------------------------------------------------------------


EngineFactory = Callable[[LocalModel], Engine]


class ModelManager:
    """Local GGUF models loaded on demand (bounded, LRU) plus pinned added engines."""

    def __init__(
        self, settings: Settings | None = None, *, engine_factory: EngineFactory | None = None
    ) -> None:
        self.settings = settings
        self.directory = model_directory(settings) if settings else None
        self.max_loaded = settings.max_loaded_models if settings else 64
        self.wait_timeout = settings.model_wait_timeout if settings else 30.0
        #: In GPU mode chat runs upstream; local files serve embeddings only.
        self.local_chat = settings is None or settings.inference_mode == "cpu"
        self._factory = engine_factory or self._default_factory
        self._slots: dict[str, _Slot] = {}
        self._loading: set[str] = set()
        self._closing = 0
        self._load_tasks: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[str, int] = {}
        self._room = asyncio.Lock()
        self._freed = asyncio.Event()
        self._failures: dict[tuple[str, tuple[Any, ...]], str] = {}
        self._downloads: dict[str, asyncio.Future[Path]] = {}
        self._download_stop = threading.Event()
        self._catalog: tuple[float, Any] | None = None
        self._background: set[asyncio.Future[None]] = set()
        #: Counters (tests, metrics): engines started / closed by this manager.
        self.loads = 0
        self.unloads = 0

    # --- compatibility surface (health, routers) --------------------------------------------

    def add(self, engine: Engine) -> None:
        """Serve an already started engine (pinned: never unloaded, not counted)."""
        self._slots[engine.model_id] = _Slot(engine.model_id, engine, None, 0, time.monotonic())

    @property
    def ids(self) -> list[str]:
        """Ids of the models in memory now (added engines first)."""
        return [s.engine.model_id for s in self._ordered_slots()]

    @property
    def engines(self) -> dict[str, Engine]:
        """The engines in memory now, by id (added engines first)."""
        return {s.engine.model_id: s.engine for s in self._ordered_slots()}

    # Read by code written for the single-model registry (e.g. metrics); prefer ``engines``.
    _engines = engines

    def _ordered_slots(self) -> list[_Slot]:
        return sorted(self._slots.values(), key=lambda s: not s.pinned)

    def _pinned(self, name: str) -> _Slot | None:
        """An added engine named ``name`` (matched exactly: its id is ours, not a path)."""
        for slot in self._slots.values():
            if slot.pinned and name in (slot.engine.model_id, slot.engine.model_id + ".gguf"):
                return slot
        return None

    def get(self, name: str, capability: str | None = None) -> Engine:
        """A model in memory now, without holding it (for status pages, not requests)."""
        slot = self._pinned(name) or self._slots.get(model_id_for(name))
        if slot is None:
            raise ModelNotFound(name, self.ids)
        self._check_capability(slot.engine.model_id, slot.engine.capabilities, capability)
        return slot.engine

    def acquire(self, name: str, capability: str | None = None) -> Lease:
        """Hold ``name`` (loading it if needed) for a request; use with ``async with``."""
        return Lease(self, name, capability)

    # --- listing --------------------------------------------------------------------------

    async def scan(self) -> dict[str, LocalModel]:
        """Every ``*.gguf`` in MODELS_DIR by id, usable or not (error set)."""
        return await self._scan()

    async def _scan(self, only: str | None = None) -> dict[str, LocalModel]:
        directory = self.directory
        if directory is None:
            return {}
        if directory.needs_probe(only):
            return await asyncio.to_thread(directory.scan, only)
        return directory.scan(only)

    def _served(self, entry: LocalModel) -> bool:
        return entry.usable and (self.local_chat or entry.capabilities.embeddings)

    async def available_ids(self) -> list[str]:
        files = await self._scan()
        local = [i for i, f in files.items() if self._served(f) and i not in self._slots]
        return [s.model_id for s in self._slots.values() if s.pinned] + sorted(
            [*local, *(i for i, s in self._slots.items() if not s.pinned)]
        )

    async def infos(self) -> list[ModelInfo]:
        """Every usable model: added engines, then local files (configured ones first)."""
        out = [await s.engine.info() for s in self._slots.values() if s.pinned]
        pinned = {s.model_id for s in self._slots.values() if s.pinned}
        files = await self._scan()
        configured = self._configured_ids()

        def order(f: LocalModel) -> tuple[int, str]:
            return (configured.index(f.id) if f.id in configured else len(configured), f.id)

        for f in sorted(files.values(), key=order):
            if f.id not in pinned and self._served(f):
                out.append(self._file_info(f))
        out.extend(self._catalog_infos(set(files) | pinned))
        return out

    async def info(self, name: str) -> ModelInfo:
        pinned = self._pinned(name)
        if pinned is not None:
            return await pinned.engine.info()
        try:
            model_id = validate_model_id(name)
        except InvalidModelId:  # a lookup by a name no model can have: not found
            raise ModelNotFound(name, await self.available_ids()) from None
        for info in await self.infos():
            if info.id == model_id:
                return info
        raise ModelNotFound(name, await self.available_ids())

    def _configured_ids(self) -> list[str]:
        s = self.settings
        if s is None:
            return []
        return [model_id_for(n) for n in (s.model, s.embedding_model) if n]

    def _file_info(self, f: LocalModel) -> ModelInfo:
        assert f.summary is not None
        slot = self._slots.get(f.id)
        loaded = slot is not None and not slot.pinned
        caps = f.capabilities
        if caps.embeddings:
            ctx = f.summary.context_length
        else:
            ctx = self.settings.n_ctx if self.settings else f.summary.context_length
        if loaded and slot is not None and slot.engine.context_length:
            ctx = slot.engine.context_length
        extra: dict[str, Any] = {
            "capabilities": capability_names(caps),
            "context_length": ctx,
            "trained_context_length": f.summary.context_length,
            "architecture": f.summary.architecture,
            "size_bytes": f.size,
            "loaded": loaded,
            "in_use": slot.refs if loaded and slot is not None else 0,
            "file": f.path.name,
            "source": "local",
        }
        if caps.embeddings:
            dims = getattr(slot.engine, "dimensions", None) if loaded and slot else None
            extra["embedding_dimensions"] = dims or f.summary.embedding_length
        return ModelInfo(id=f.id, created=int(f.mtime), extra=extra)

    def _catalog_infos(self, present: set[str]) -> list[ModelInfo]:
        """Configured models still to be downloaded (ALLOW_DOWNLOAD): listed, not loaded."""
        s = self.settings
        if s is None or not s.allow_download:
            return []
        out = []
        wanted = [(s.model, False)] if self.local_chat else []
        if s.embedding_model:
            wanted.append((s.embedding_model, True))
        for name, embedding in wanted:
            model_id = model_id_for(name)
            if model_id in present:
                continue
            caps = Capabilities(completions=not embedding, chat=not embedding, embeddings=embedding)
            out.append(
                ModelInfo(
                    id=model_id,
                    created=0,
                    extra={
                        "capabilities": capability_names(caps),
                        "loaded": False,
                        "in_use": 0,
                        "source": "catalog",
                        "downloaded": False,
                    },
                )
            )
        return out

    # --- acquiring ------------------------------------------------------------------------

    @staticmethod
    def _check_capability(model_id: str, caps: Capabilities, capability: str | None) -> None:
        if capability is None or getattr(caps, capability):
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

    def _take(self, slot: _Slot) -> _Slot:
        slot.refs += 1
        slot.last_used = time.monotonic()
        return slot

    def _checkin(self, slot: _Slot) -> None:
        slot.refs = max(0, slot.refs - 1)
        slot.last_used = time.monotonic()
        self._freed.set()

    async def _checkout(self, name: str, capability: str | None) -> _Slot:
        pinned = self._pinned(name)
        if pinned is not None:
            self._check_capability(pinned.engine.model_id, pinned.engine.capabilities, capability)
            return self._take(pinned)
        try:
            model_id = validate_model_id(name)
        except InvalidModelId as exc:
            raise _invalid_name(exc) from None
        entry = await self._find(model_id, name, capability)
        while True:
            slot = self._slots.get(model_id)
            stale = slot is not None and slot.entry is not None and slot.entry != entry
            if slot is not None and stale and slot.refs == 0:
                # Replaced on disk: unload the old version and load the new one. (A replaced
                # file still in use keeps serving until it is idle.)
                self._detach(slot)
                closing = asyncio.ensure_future(self._close(slot, "file changed on disk"))
                self._background.add(closing)
                closing.add_done_callback(self._background.discard)
                continue
            if slot is not None:
                return self._take(slot)
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

    async def _find(self, model_id: str, name: str, capability: str | None) -> LocalModel:
        entry = (await self._scan(model_id)).get(model_id)
        if entry is None or (entry.usable and not self._served(entry)):
            if entry is None and self._can_download():
                entry = await self._download(model_id, name, capability)
            else:
                raise ModelNotFound(name, await self.available_ids())
        if entry.error is not None:
            raise ModelLoadFailed(model_id, entry.error)
        self._check_capability(model_id, entry.capabilities, capability)
        failure = self._failures.get((model_id, entry.signature))
        if failure is not None:
            raise ModelLoadFailed(model_id, failure)
        return entry

    # --- loading and unloading ------------------------------------------------------------

    def _in_memory(self) -> int:
        loaded = sum(1 for s in self._slots.values() if not s.pinned)
        return loaded + len(self._loading) + self._closing

    def _idle_lru(self) -> _Slot | None:
        idle = [
            s
            for s in self._slots.values()
            if not s.pinned and s.refs == 0 and not self._waiters.get(s.model_id)
        ]
        return min(idle, key=lambda s: s.last_used, default=None)

    def _busy_error(self) -> ServiceUnavailable:
        busy = ", ".join(s.model_id for s in self._slots.values() if not s.pinned) or "none"
        return ServiceUnavailable(
            f"All {self.max_loaded} model slots (MAX_LOADED_MODELS) are busy serving other "
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
            while self._in_memory() >= self.max_loaded:
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

    def _detach(self, slot: _Slot) -> None:
        """Take ``slot`` out of service at once (it still counts until closed)."""
        if self._slots.get(slot.model_id) is slot:
            del self._slots[slot.model_id]
        self._closing += 1

    async def _close(self, slot: _Slot, why: str) -> None:
        try:
            await slot.engine.close()
            logger.info("unloaded model %s (%s)", slot.model_id, why)
        except Exception:
            logger.exception("unloading %s failed", slot.model_id)
        finally:
            self._closing -= 1
            self.unloads += 1
            self._freed.set()

    async def _load(self, entry: LocalModel) -> None:
        key = (entry.id, entry.signature)
        await self._reserve(entry.id)
        try:
            try:
                assert self.directory is not None
                self.directory.check_still_inside(entry)
            except (OSError, GGUFError) as exc:
                raise ModelLoadFailed(entry.id, str(exc)) from exc
            engine = self._factory(entry)
            started = time.perf_counter()
            try:
                await engine.start()
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                self._failures[key] = reason
                logger.error("model %s failed to load: %s", entry.id, reason)
                raise ModelLoadFailed(entry.id, reason) from exc
            self._slots[entry.id] = _Slot(entry.id, engine, entry, 0, time.monotonic())
            self.loads += 1
            logger.info(
                "loaded model %s in %.2fs (%d of MAX_LOADED_MODELS=%d in memory)",
                entry.id,
                time.perf_counter() - started,
                sum(1 for s in self._slots.values() if not s.pinned),
                self.max_loaded,
            )
        finally:
            self._loading.discard(entry.id)
            self._freed.set()

    def _default_factory(self, entry: LocalModel) -> Engine:
        s = self.settings or Settings()
        if entry.capabilities.embeddings:
            from gpt4all_api.engines.embed import EmbeddingEngine

            return EmbeddingEngine(
                entry.id,
                entry.path,
                n_threads=s.embedding_n_threads,
                context_length=entry.summary.context_length if entry.summary else None,
            )
        from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine

        return Gpt4AllEngine(
            entry.id,
            entry.path,
            n_ctx=s.n_ctx,
            n_batch=s.n_batch,
            n_threads=s.n_threads,
            allow_download=False,
        )

    # --- downloads ------------------------------------------------------------------------

    def _can_download(self) -> bool:
        return bool(self.settings and self.settings.allow_download)

    async def catalog(self) -> list[Any]:
        """The catalog's entries (cached for CATALOG_TTL); raises CatalogError offline."""
        from gpt4all_api.model_store.catalog import CatalogError, fetch_catalog

        assert self.settings is not None
        now = time.monotonic()
        if self._catalog is not None:
            fetched, value = self._catalog
            ttl = CATALOG_ERROR_TTL if isinstance(value, CatalogError) else CATALOG_TTL
            if now - fetched < ttl:
                if isinstance(value, CatalogError):
                    raise value
                return value
        try:
            entries = await asyncio.to_thread(
                fetch_catalog, self.settings.catalog_url, self.settings.catalog_timeout
            )
        except CatalogError as exc:
            self._catalog = (now, exc)
            raise
        self._catalog = (now, entries)
        return entries

    async def _download(self, model_id: str, name: str, capability: str | None) -> LocalModel:
        from gpt4all_api.model_store.catalog import CatalogError, DownloadError, find_entry

        assert self.settings is not None
        try:
            entries = await self.catalog()
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
        if entry is None:
            raise ModelNotFound(name, await self.available_ids())
        caps = Capabilities(
            completions=not entry.embedding, chat=not entry.embedding, embeddings=entry.embedding
        )
        if not (self.local_chat or entry.embedding):
            raise ModelNotFound(name, await self.available_ids())
        self._check_capability(model_id, caps, capability)  # before fetching gigabytes
        task = self._downloads.get(model_id)
        if task is None:
            task = self._start_download(entry)
            self._downloads[model_id] = task
            task.add_done_callback(lambda t, m=model_id: self._downloads.pop(m, None))
        try:
            await asyncio.shield(task)
        except DownloadError as exc:
            raise APIError(
                f"Downloading the model '{model_id}' failed: {exc}",
                status_code=502,
                type="server_error",
                param="model",
                code="model_download_failed",
            ) from None
        found = (await self._scan(model_id)).get(model_id)
        if found is None:
            raise ModelNotFound(name, await self.available_ids())
        return found

    def _start_download(self, entry: Any) -> asyncio.Future[Path]:
        """Download on a daemon thread (shutdown never waits for a multi-GB transfer)."""
        from gpt4all_api.model_store.catalog import LogProgress, download_entry

        assert self.settings is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Path] = loop.create_future()
        models_dir, timeout = self.settings.models_dir, self.settings.catalog_timeout
        stop = self._download_stop
        size = f"{entry.filesize / 1e6:.1f} MB" if entry.filesize else "unknown size"
        logger.info("downloading %s (%s) from %s", entry.filename, size, entry.url)

        def settle(result: Path | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def run() -> None:
            try:
                path = download_entry(
                    entry,
                    models_dir,
                    progress=LogProgress(entry.filename),
                    timeout=timeout,
                    should_stop=stop.is_set,
                )
            except BaseException as exc:
                logger.error("download of %s failed: %s", entry.filename, exc)
                result: tuple[Path | None, BaseException | None] = (None, exc)
            else:
                result = (path, None)
            with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown)
                loop.call_soon_threadsafe(settle, *result)

        threading.Thread(target=run, name=f"download-{entry.id}", daemon=True).start()
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        return future

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the configured models (MODEL must work; EMBEDDING_MODEL failing is logged)."""
        s = self.settings
        if s is None:
            return
        if self.local_chat:
            try:
                async with self.acquire(s.model, "chat"):
                    pass
            except ModelNotFound:
                if not s.allow_download:
                    available = [i for i, f in (await self._scan()).items() if self._served(f)]
                    raise FileNotFoundError(_missing_model_message(s, available)) from None
                raise RuntimeError(
                    f"MODEL={s.model!r} is neither in MODELS_DIR={s.models_dir} nor in the "
                    f"catalog at {s.catalog_url}."
                ) from None
            except APIError as exc:
                raise RuntimeError(f"MODEL={s.model!r} cannot be served: {exc.message}") from None
        if not s.embedding_model:
            return
        if self._in_memory() >= self.max_loaded:
            logger.info(
                "EMBEDDING_MODEL=%s will be loaded on first use (MAX_LOADED_MODELS=%d)",
                s.embedding_model,
                self.max_loaded,
            )
            return
        try:
            async with self.acquire(s.embedding_model, "embeddings"):
                pass
        except APIError as exc:
            logger.error(
                "EMBEDDING_MODEL=%s is not available, /v1/embeddings will answer with an "
                "error for it: %s",
                s.embedding_model,
                exc.message,
            )

    async def close(self) -> None:
        self._download_stop.set()
        for task in list(self._load_tasks.values()):
            task.cancel()
        for slot in reversed(list(self._slots.values())):
            try:
                await slot.engine.close()
            except Exception:
                logger.exception("closing %s failed", slot.model_id)
        self._slots.clear()


#: The name the routers and the app factory use.
ModelRegistry = ModelManager
