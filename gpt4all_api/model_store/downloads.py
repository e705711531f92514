"""Catalog downloads for a running server (``ALLOW_DOWNLOAD``): the cached catalog, and one
download per model however many requests wait for it.

A download runs on a daemon thread (shutdown never waits for a multi-GB transfer; ``stop()``
asks it to end at its next chunk) and reports back to the event loop; progress goes to the
log. Files are verified against the catalog's checksums before they appear in MODELS_DIR
(:func:`gpt4all_api.model_store.catalog.download_entry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path

from gpt4all_api.model_store.catalog import (
    CatalogEntry,
    CatalogError,
    LogProgress,
    download_entry,
    fetch_catalog,
)

logger = logging.getLogger(__name__)

#: How long a fetched catalog (or the failure to fetch it) is reused.
CATALOG_TTL = 600.0
CATALOG_ERROR_TTL = 30.0


class ModelDownloads:
    """The catalog at ``catalog_url`` and downloads from it into ``models_dir``."""

    def __init__(self, models_dir: Path, catalog_url: str, timeout: float) -> None:
        self.models_dir = models_dir
        self.catalog_url = catalog_url
        self.timeout = timeout
        self._catalog: tuple[float, list[CatalogEntry] | CatalogError] | None = None
        self._running: dict[str, asyncio.Future[Path]] = {}
        self._stop = threading.Event()

    async def catalog(self) -> list[CatalogEntry]:
        """The catalog's entries (cached for CATALOG_TTL); raises CatalogError offline."""
        now = time.monotonic()
        if self._catalog is not None:
            fetched, value = self._catalog
            ttl = CATALOG_ERROR_TTL if isinstance(value, CatalogError) else CATALOG_TTL
            if now - fetched < ttl:
                if isinstance(value, CatalogError):
                    raise value
                return value
        try:
            entries = await asyncio.to_thread(fetch_catalog, self.catalog_url, self.timeout)
        except CatalogError as exc:
            self._catalog = (now, exc)
            raise
        self._catalog = (now, entries)
        return entries

    async def download(self, entry: CatalogEntry) -> Path:
        """Download ``entry`` (joining a download of it already running); its final path.

        Raises ``DownloadError``. A waiter that is cancelled leaves the download running for
        the others (and for the next request).
        """
        task = self._running.get(entry.id)
        if task is None:
            task = self._start(entry)
            self._running[entry.id] = task
            task.add_done_callback(lambda _, m=entry.id: self._running.pop(m, None))
        return await asyncio.shield(task)

    def stop(self) -> None:
        """Ask running downloads to stop (the server is shutting down)."""
        self._stop.set()

    def _start(self, entry: CatalogEntry) -> asyncio.Future[Path]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Path] = loop.create_future()
        models_dir, timeout, stop = self.models_dir, self.timeout, self._stop
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
