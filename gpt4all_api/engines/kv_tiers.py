"""Saved contexts beyond RAM: on disk under DATA_DIR (a restart keeps its conversations)
and in a Redis/Valkey shared by the replicas (any replica continues any conversation).

After a generation whose context holds at least ``MIN_PUBLISH_TOKENS`` prompt tokens, the
slot's worker saves the context (a memory copy, milliseconds) and hands it to this
engine's writer thread, which encodes it (``kv_entry``) and writes it to every tier; the
next request on that slot waits only for the copy. Entries are indexed by the hash of each
exact boundary's prompt prefix, so a later request finds the longest saved prefix of its
prompt with one look-up per tier (file names on disk, one ``MGET`` in Redis) and loads
only the entry it restores. Both tiers are bounded: the disk by ``KV_DISK_MB`` (least
recently used entries removed by the writer), Redis by its own ``maxmemory`` with an
``allkeys-*`` eviction policy (checked at start-up, with a warning when missing) and
``KV_CACHE_TTL``.

Look-ups and loads run on the slot's worker thread (never on the event loop). A tier that
fails is skipped, never an error for the request: Redis is left alone for a few seconds
after a failure, a corrupt, stale or mismatched entry is counted, removed and ignored.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from gpt4all_api.engines.cpu_slots import CpuServing
from gpt4all_api.engines.kv_entry import (
    BadEntry,
    KvNamespace,
    decode,
    encode,
    entry_hashes,
    model_identity,
    prefix_hashes,
)
from gpt4all_api.engines.prompt_cache import ContextCache
from gpt4all_api.engines.state_cache import SavedContext

logger = logging.getLogger(__name__)

#: Contexts shorter than this are not written out: evaluating them again takes about a
#: second on a small CPU, less than it is worth to keep them.
MIN_PUBLISH_TOKENS = 256
#: Tiers are asked only for boundaries this many key bytes past what the slot or RAM has.
LOOKUP_MARGIN = 256
#: Entries tried per look-up (a bad one makes the next shorter prefix the candidate).
MAX_ATTEMPTS = 3
#: Saved contexts waiting for the writer; beyond it the oldest is dropped (superseded).
MAX_PENDING = 2
#: Seconds Redis is left alone after a failure.
REDIS_RETRY_AFTER = 5.0


class Tier(Protocol):
    name: str

    def locate(self, hashes: list[str]) -> list[str | None]:
        """A handle for each hash that has an entry, else None."""

    def load(self, handle: str) -> bytes | None: ...

    def put(self, blob: bytes, hashes: list[str]) -> None: ...

    def drop(self, handle: str) -> None: ...

    def as_dict(self) -> dict[str, Any]: ...


class DiskTier:
    """Entries as files in one directory, one name per indexed hash, all hard links to one
    file (a later turn of the conversation takes the names over, and the older file is
    gone with its last name); written whole to a temporary name, then renamed."""

    name = "disk"

    def __init__(self, directory: Path, limit_bytes: int) -> None:
        self.directory = directory
        self.limit = limit_bytes
        self.bytes = 0
        self.entries = 0

    def _path(self, h: str) -> Path:
        return self.directory / f"{h}.kv"

    def locate(self, hashes: list[str]) -> list[str | None]:
        return [str(p) if p.is_file() else None for p in map(self._path, hashes)]

    def load(self, handle: str) -> bytes | None:
        try:
            with open(handle, "rb") as f:
                blob = f.read()
            os.utime(handle)  # the LRU clock
        except FileNotFoundError:
            return None
        return blob

    def put(self, blob: bytes, hashes: list[str]) -> None:
        if len(blob) > self.limit:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex
        tmp = self.directory / f".tmp-{tag}"
        try:
            tmp.write_bytes(blob)
            for i, h in enumerate(hashes):
                link = self.directory / f".lnk-{tag}-{i}"
                try:
                    os.link(tmp, link)
                except OSError:  # no hard links here: only the longest prefix is indexed
                    if h == hashes[-1]:
                        os.replace(tmp, self._path(h))
                    continue
                os.replace(link, self._path(h))
        finally:
            tmp.unlink(missing_ok=True)
        self._evict()

    def drop(self, handle: str) -> None:
        Path(handle).unlink(missing_ok=True)

    def _evict(self) -> None:
        """Remove the least recently used files (all names of each) beyond the limit, and
        leftovers of writes a crash interrupted."""
        files: dict[tuple[int, int], tuple[float, int, list[Path]]] = {}
        stale = time.time() - 600
        for entry in os.scandir(self.directory):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            if entry.name.startswith("."):
                if st.st_mtime < stale:
                    path.unlink(missing_ok=True)
                continue
            if entry.name.endswith(".kv"):
                mtime, size, paths = files.get((st.st_dev, st.st_ino), (st.st_mtime, 0, []))
                files[(st.st_dev, st.st_ino)] = (mtime, st.st_size, [*paths, path])
        total = sum(size for _, size, _ in files.values())
        kept = len(files)
        for _, size, paths in sorted(files.values(), key=lambda f: f[0]):
            if total <= self.limit:
                break
            for path in paths:
                path.unlink(missing_ok=True)
            total -= size
            kept -= 1
        self.bytes = total
        self.entries = kept

    def as_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "bytes": self.bytes, "limit_bytes": self.limit}


class RedisTier:
    """Entries in Redis/Valkey: the entry under ``...:entry:<hash of its longest prefix>``
    and one small pointer per indexed hash (``...:prefix:<hash>``), so that a look-up is one
    ``MGET`` and only the chosen entry travels."""

    name = "redis"
    PREFIX = "gpt4all-api:kv:"

    def __init__(self, url: str, ttl: int) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30
        )
        parts = urlsplit(url)
        self.where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port}"
        self.ttl = ttl or None
        self.up = True
        self.problems = 0
        self._retry_at = 0.0
        self._warned_at = -1e9

    def check(self) -> None:
        """Reachable, and bounded with eviction? Warnings only: the tier is an optimisation."""
        try:
            info = self.client.info("memory")
        except self._errors as exc:
            self._failed(exc)
            return
        maxmemory = int(info.get("maxmemory", 0))
        policy = str(info.get("maxmemory_policy", ""))
        if maxmemory == 0 or not policy.startswith("allkeys-"):
            logger.warning(
                "KV_CACHE_URL (%s): maxmemory=%d, maxmemory-policy=%s: saved contexts will fill "
                "it; set maxmemory and maxmemory-policy allkeys-lru on the server",
                self.where,
                maxmemory,
                policy or "?",
            )

    def _failed(self, exc: BaseException) -> None:
        self.up = False
        self.problems += 1
        now = time.monotonic()
        self._retry_at = now + REDIS_RETRY_AFTER
        if now - self._warned_at > 60:
            self._warned_at = now
            logger.warning("KV_CACHE_URL (%s) failed, skipped for now: %s", self.where, exc)

    def _call(self, fn: Any, default: Any) -> Any:
        if time.monotonic() < self._retry_at:
            return default
        try:
            result = fn()
        except self._errors as exc:
            self._failed(exc)
            return default
        self.up = True
        return result

    def locate(self, hashes: list[str]) -> list[str | None]:
        keys = [f"{self.PREFIX}prefix:{h}" for h in hashes]
        found = self._call(lambda: self.client.mget(keys), [None] * len(keys))
        return [v.decode() if isinstance(v, bytes) else v for v in found]

    def load(self, handle: str) -> bytes | None:
        blob = self._call(lambda: self.client.get(f"{self.PREFIX}entry:{handle}"), None)
        return bytes(blob) if blob is not None else None

    def put(self, blob: bytes, hashes: list[str]) -> None:
        def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(f"{self.PREFIX}entry:{hashes[-1]}", blob, ex=self.ttl)
            for h in hashes:
                pipe.set(f"{self.PREFIX}prefix:{h}", hashes[-1], ex=self.ttl)
            pipe.execute()

        self._call(write, None)

    def drop(self, handle: str) -> None:
        self._call(lambda: self.client.delete(f"{self.PREFIX}entry:{handle}"), None)

    def close(self) -> None:
        self.client.close()

    def as_dict(self) -> dict[str, Any]:
        return {"up": self.up, "errors": self.problems}


class _Counts:
    def __init__(self) -> None:
        self.hits = 0
        self.rejected = 0
        self.writes = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "rejected": self.rejected, "writes": self.writes}


class KvTiers:
    """The tiers of one engine: look-ups for its slots' workers, a writer thread of its own."""

    def __init__(self, ns: KvNamespace, tiers: list[Tier]) -> None:
        self.ns = ns
        self.root = ns.root
        self.tiers = tiers
        self.counts = {t.name: _Counts() for t in tiers}
        self.lookups = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pending: queue.Queue[tuple[SavedContext, list[str]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="kv-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, serving: CpuServing, path: Path, n_ctx: int, n_batch: int) -> KvTiers | None:
        """The configured tiers for the model at ``path`` (blocking: reads the file's
        identity, asks Redis), or None when neither is configured."""
        tiers: list[Tier] = []
        if serving.kv_disk_dir is not None and serving.kv_disk_mb > 0:
            tiers.append(DiskTier(serving.kv_disk_dir, serving.kv_disk_mb * 1024 * 1024))
        if serving.kv_cache_url is not None:
            redis_tier = RedisTier(serving.kv_cache_url.get_secret_value(), serving.kv_cache_ttl)
            redis_tier.check()
            tiers.append(redis_tier)
        if not tiers or not serving.prompt_cache:
            return None
        ns = KvNamespace(
            model_identity(path), n_ctx, n_batch, importlib.metadata.version("gpt4all")
        )
        return cls(ns, tiers)

    # --- the slots' side (worker threads) -----------------------------------------------

    def fetch(self, key: bytes, starts: set[int], after: int) -> SavedContext | None:
        """The saved context of the longest prefix of ``key`` ending at one of its call
        ``starts`` past key offset ``after`` (+ ``LOOKUP_MARGIN``), from the first tier that
        has a valid one; None when none has."""
        offsets = sorted(o for o in starts if after + LOOKUP_MARGIN <= o < len(key))
        if not offsets:
            return None
        self.lookups += 1
        hashes = prefix_hashes(self.root, key, offsets)
        found = [tier.locate(hashes) for tier in self.tiers]
        attempts = 0
        for i in reversed(range(len(hashes))):
            for tier, handles in zip(self.tiers, found, strict=True):
                handle = handles[i]
                if handle is None or attempts >= MAX_ATTEMPTS:
                    continue
                attempts += 1
                saved = self._load(tier, handle)
                if saved is not None:
                    return saved
        return None

    def _load(self, tier: Tier, handle: str) -> SavedContext | None:
        blob = tier.load(handle)
        if blob is None:
            return None
        counts = self.counts[tier.name]
        try:
            saved = decode(blob, self.ns)
        except BadEntry as exc:
            logger.warning("ignored a saved context in the %s tier: %s", tier.name, exc)
            with self._lock:
                counts.rejected += 1
            tier.drop(handle)
            return None
        with self._lock:
            counts.hits += 1
        return saved

    def publishable(self, cache: ContextCache) -> list[str]:
        """The hashes to index the slot's context by, if it is worth writing out (long
        enough, not just written); empty otherwise."""
        hashes = entry_hashes(self.ns, cache, MIN_PUBLISH_TOKENS)
        if not hashes:
            return []
        with self._lock:
            if hashes[-1] in self._recent:
                self._recent.move_to_end(hashes[-1])
                return []
        return hashes

    def publish(self, saved: SavedContext, hashes: list[str]) -> None:
        """Queue ``saved`` for the writer (the oldest waiting one is dropped when full)."""
        with self._lock:
            self._recent[hashes[-1]] = None
            while len(self._recent) > 256:
                self._recent.popitem(last=False)
        while self._pending.qsize() >= MAX_PENDING:
            try:
                self._pending.get_nowait()
            except queue.Empty:
                break
            self._pending.task_done()
            self.dropped += 1
        self._pending.put((saved, hashes))

    # --- the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._pending.get()
            try:
                if item is None:
                    return
                self._write(*item)
            finally:
                self._pending.task_done()

    def _write(self, saved: SavedContext, hashes: list[str]) -> None:
        blob = encode(saved, self.ns)
        for tier in self.tiers:
            try:
                tier.put(blob, hashes)
            except OSError as exc:
                logger.warning("cannot write a saved context to the %s tier: %s", tier.name, exc)
                continue
            with self._lock:
                self.counts[tier.name].writes += 1

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._pending.all_tasks_done:
            while self._pending.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pending.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (up to ``timeout``), then stop."""
        self._pending.put(None)
        self._writer.join(timeout)
        for tier in self.tiers:
            if isinstance(tier, RedisTier):
                tier.close()

    def as_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "pending": self._pending.unfinished_tasks,
            "dropped": self.dropped,
            **{t.name: {**t.as_dict(), **self.counts[t.name].as_dict()} for t in self.tiers},
        }
