"""gpt4all's model catalog (``models3.json``) and verified downloads from it.

The catalog lists GGUF files by ``filename`` with a download ``url``, a ``filesize`` and an
``md5sum`` (some entries also carry a ``sha256sum``); embedding models are flagged with
``embeddingModel``. Everything in it is untrusted input: file names must be plain model
names (:func:`gpt4all_api.model_store.directory.validate_model_id`) and URLs http(s) or file.

A download streams into a hidden ``.part`` file in the models directory, is checked
against every size and checksum the catalog gives, then against the GGUF header
(truncation, architecture), and only then renamed into place (atomic): an interrupted or
corrupt download never leaves a ``*.gguf`` behind. ``CATALOG_URL`` may point at a mirror
(``http(s)://`` or ``file://``) for machines without internet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from gpt4all_api.model_store.directory import InvalidModelId, model_id_for, validate_model_id
from gpt4all_api.model_store.gguf import GGUFError, check_supported, probe_gguf

logger = logging.getLogger(__name__)

DEFAULT_CATALOG_URL = "https://gpt4all.io/models/models3.json"
_DEFAULT_DOWNLOAD_BASE = "https://gpt4all.io/models/gguf/"
_CHUNK = 1 << 20

#: ``progress(done_bytes, total_bytes_or_None)``, called as a download goes.
Progress = Callable[[int, int | None], None]


class CatalogError(RuntimeError):
    """The catalog cannot be read (offline, bad URL, not a catalog)."""


class DownloadError(RuntimeError):
    """A download failed or did not verify; nothing was left in the models directory."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    id: str  # file name without .gguf
    filename: str
    name: str
    url: str
    filesize: int | None
    md5sum: str | None
    sha256sum: str | None
    embedding: bool
    ram_required_gb: float | None
    description: str


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _hex_or_none(value: Any, length: int) -> str | None:
    if isinstance(value, str) and len(value) == length:
        try:
            int(value, 16)
        except ValueError:
            return None
        return value.lower()
    return None


def _url_ok(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https", "file")


def parse_catalog(data: Any) -> list[CatalogEntry]:
    """Entries of a ``models3.json`` document; unsafe or malformed entries are skipped."""
    if not isinstance(data, list):
        raise CatalogError("the catalog is not a JSON list of models")
    entries: list[CatalogEntry] = []
    for raw in data:
        if not isinstance(raw, dict):
            continue
        filename = raw.get("filename")
        if not isinstance(filename, str) or not filename.endswith(".gguf"):
            continue
        try:
            model_id = validate_model_id(filename)
        except InvalidModelId:
            logger.warning("catalog: skipping entry with unsafe file name %r", filename)
            continue
        url = raw.get("url") or _DEFAULT_DOWNLOAD_BASE + filename
        if not isinstance(url, str) or not _url_ok(url):
            logger.warning("catalog: skipping %s: unsupported URL %r", filename, url)
            continue
        entries.append(
            CatalogEntry(
                id=model_id,
                filename=filename,
                name=str(raw.get("name") or model_id),
                url=url,
                filesize=_int_or_none(raw.get("filesize")),
                md5sum=_hex_or_none(raw.get("md5sum"), 32),
                sha256sum=_hex_or_none(raw.get("sha256sum"), 64),
                embedding=bool(raw.get("embeddingModel", False)),
                ram_required_gb=_float_or_none(raw.get("ramrequired")),
                description=str(raw.get("description") or ""),
            )
        )
    return entries


def _file_path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path))


def fetch_catalog(url: str, timeout: float = 10.0) -> list[CatalogEntry]:
    """Download and parse the catalog at ``url`` (http(s)://, file:// or a local path)."""
    try:
        if url.startswith(("http://", "https://")):
            response = httpx.get(url, timeout=timeout, follow_redirects=True)
            response.raise_for_status()
            data = response.json()
        else:
            path = _file_path(url) if url.startswith("file:") else Path(url)
            data = json.loads(path.read_text(encoding="utf-8"))
    except (httpx.HTTPError, OSError) as exc:
        raise CatalogError(f"the model catalog at {url} cannot be reached ({exc})") from exc
    except ValueError as exc:
        raise CatalogError(f"the model catalog at {url} is not valid JSON ({exc})") from exc
    return parse_catalog(data)


def find_entry(entries: list[CatalogEntry], name: str) -> CatalogEntry | None:
    model_id = model_id_for(name)
    return next((e for e in entries if e.id == model_id), None)


class _Hashes:
    def __init__(self, entry: CatalogEntry) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False) if entry.md5sum else None
        self.sha256 = hashlib.sha256() if entry.sha256sum else None

    def update(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        if self.sha256 is not None:
            self.sha256.update(data)


def _stream_http(url: str, timeout: float, sink: Callable[[bytes], None], total: list[int]) -> None:
    with httpx.stream(
        "GET",
        url,
        timeout=httpx.Timeout(timeout, read=max(timeout, 60.0)),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},
    ) as response:
        response.raise_for_status()
        length = response.headers.get("content-length")
        if length and length.isdigit():
            total[0] = int(length)
        for chunk in response.iter_raw(_CHUNK):
            sink(chunk)


def _stream_file(url: str, sink: Callable[[bytes], None], total: list[int]) -> None:
    path = _file_path(url)
    total[0] = path.stat().st_size
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sink(chunk)


def download_entry(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    progress: Progress | None = None,
    timeout: float = 30.0,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Download ``entry`` into ``models_dir`` and verify it; returns the final path.

    ``should_stop`` is polled between chunks: returning True abandons the download.
    """
    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create MODELS_DIR {models_dir}: {exc}") from exc
    final = models_dir / entry.filename
    part = models_dir / f".{entry.filename}.{os.getpid()}.{secrets.token_hex(4)}.part"
    hashes = _Hashes(entry)
    total: list[int] = [entry.filesize or 0]
    done = 0
    started = time.monotonic()
    try:
        with part.open("wb") as fh:

            def sink(data: bytes) -> None:
                nonlocal done
                if should_stop is not None and should_stop():
                    raise DownloadError(f"{entry.filename}: download cancelled")
                fh.write(data)
                hashes.update(data)
                done += len(data)
                if progress is not None:
                    progress(done, total[0] or entry.filesize)

            if entry.url.startswith("file:"):
                _stream_file(entry.url, sink, total)
            else:
                _stream_http(entry.url, timeout, sink, total)
            fh.flush()
            os.fsync(fh.fileno())
        if entry.filesize is not None and done != entry.filesize:
            raise DownloadError(
                f"{entry.filename}: expected {entry.filesize} bytes, received {done}"
            )
        if hashes.md5 is not None and hashes.md5.hexdigest() != entry.md5sum:
            raise DownloadError(
                f"{entry.filename}: MD5 mismatch (expected {entry.md5sum}, "
                f"got {hashes.md5.hexdigest()})"
            )
        if hashes.sha256 is not None and hashes.sha256.hexdigest() != entry.sha256sum:
            raise DownloadError(
                f"{entry.filename}: SHA-256 mismatch (expected {entry.sha256sum}, "
                f"got {hashes.sha256.hexdigest()})"
            )
        if hashes.md5 is None and hashes.sha256 is None:
            logger.warning("%s: the catalog gives no checksum; only the size and GGUF header "
                           "were checked", entry.filename)  # fmt: skip
        try:
            check_supported(probe_gguf(part), entry.filename)
        except GGUFError as exc:
            raise DownloadError(f"{entry.filename}: downloaded file is not usable: {exc}") from exc
        os.replace(part, final)
    except DownloadError:
        raise
    except httpx.HTTPStatusError as exc:
        raise DownloadError(
            f"{entry.filename}: download failed: HTTP {exc.response.status_code} from {entry.url}"
        ) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise DownloadError(f"{entry.filename}: download from {entry.url} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    logger.info(
        "downloaded %s (%d bytes in %.1fs), checksum verified",
        entry.filename,
        done,
        elapsed,
    )
    return final


class LogProgress:
    """A ``Progress`` that logs every 10% (or every 10 s) — for the server's logs."""

    def __init__(self, name: str, log: logging.Logger = logger) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        self.last_time = self.started
        self.last_decile = -1

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        decile = done * 10 // total if total else -1
        if decile == self.last_decile and now - self.last_time < 10:
            return
        if total is None and now - self.last_time < 10:
            return
        self.last_decile, self.last_time = decile, now
        rate = done / max(now - self.started, 1e-6) / 1e6
        if total:
            self.log.info(
                "downloading %s: %d%% (%.1f / %.1f MB, %.1f MB/s)",
                self.name,
                done * 100 // total,
                done / 1e6,
                total / 1e6,
                rate,
            )
        else:
            self.log.info("downloading %s: %.1f MB (%.1f MB/s)", self.name, done / 1e6, rate)
