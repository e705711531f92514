"""Saved contexts of recent conversations, beyond the live slots (STATE_CACHE_MB).

When a request is about to overwrite a slot's context that holds more than it can reuse,
the slot's state (its KV cache, through ``llmodel_save_state_data``) and its text-to-token
map are kept here first, LRU, bounded in bytes. A later request that continues one of
these conversations further than any idle slot can restores it into its slot
(``llmodel_restore_state_data``: a copy, milliseconds, against seconds to evaluate again).

The C API restores the llama.cpp state but not gpt4all's token list (``PromptContext.tokens``,
which the backend checks ``n_past`` against and tokenizes and penalizes from). It is a
``std::vector<int32_t>`` right after the model pointer in the handle's ``LLModelWrapper``
(gpt4all 2.8.2): ``restore`` checks that layout against the pointer and size the bindings
report and declines when it does not hold, so the worst case is evaluating again. When
the vector's storage is too small (a slot that never held that many tokens, e.g. a fresh one
restoring a conversation saved by another process), it is replaced by a ``malloc``'ed one:
libstdc++'s and libc++'s ``std::allocator`` free with ``free()``, so the vector later frees
it as its own.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gpt4all_api.engines.prompt_cache import Boundary, ContextCache

logger = logging.getLogger(__name__)

#: Contexts shorter than this are cheaper to evaluate again than to keep.
MIN_SAVE_TOKENS = 64


@functools.cache
def _c_api() -> Any:
    """The state functions of the C library, typed (once)."""
    from gpt4all._pyllmodel import llmodel

    llmodel.llmodel_get_state_size.argtypes = [ctypes.c_void_p]
    llmodel.llmodel_get_state_size.restype = ctypes.c_uint64
    llmodel.llmodel_save_state_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    llmodel.llmodel_save_state_data.restype = ctypes.c_uint64
    llmodel.llmodel_restore_state_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    llmodel.llmodel_restore_state_data.restype = ctypes.c_uint64
    return llmodel


class StateScratch:
    """A slot's save buffer: as large as the backend's bound (it counts the whole logits
    buffer, hundreds of MB) but an anonymous mapping, so only written pages use memory,
    and they are given back after each save."""

    def __init__(self, handle: int) -> None:
        self.api = _c_api()
        self.size = int(self.api.llmodel_get_state_size(handle))
        self._map = mmap.mmap(-1, self.size)
        self._view = (ctypes.c_char * self.size).from_buffer(self._map)

    def save(self, handle: int) -> bytes:
        written = int(self.api.llmodel_save_state_data(handle, ctypes.addressof(self._view)))
        if written > self.size:  # pragma: no cover - the backend's own bound
            raise RuntimeError("state larger than its bound")
        data = self._map[:written]
        self._map.madvise(mmap.MADV_DONTNEED)
        return data

    def close(self) -> None:
        del self._view
        self._map.close()


def _token_vector(lm: Any) -> Any | None:
    """The (start, finish, end_of_storage) words of the handle's token vector, if the
    layout is the expected one."""
    ctx = lm.context
    if ctx is None or not ctx.tokens:
        return None
    words = (ctypes.c_uint64 * 4).from_address(lm.model)
    start = ctypes.cast(ctx.tokens, ctypes.c_void_p).value
    if words[1] != start or (words[2] - words[1]) // 4 != ctx.tokens_size:
        return None
    return words


@functools.cache
def _libc() -> Any | None:
    """``malloc``/``free`` of the C library the backend's allocator uses (POSIX only)."""
    if os.name != "posix":  # pragma: no cover - Linux and macOS are served
        return None
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free.restype = None
    return libc


def token_room(lm: Any, n_ctx: int) -> int:
    """Most token ids ``restore`` can put into the slot's context: ``n_ctx`` when its token
    vector can be checked (and so grown), else 0. A slot that never evaluated anything has
    no vector storage to check it by: the engine evaluates one token first."""
    words = _token_vector(lm)
    if words is None:
        return 0
    capacity = (words[3] - words[1]) // 4
    return max(capacity, n_ctx) if _libc() is not None else capacity


def _grow(lm: Any, words: Any, capacity: int) -> bool:
    """Replace the token vector's storage by a ``malloc``'ed one of ``capacity`` ids holding
    the same ids, and free the old one (the vector frees the new one as its own)."""
    libc = _libc()
    new = libc.malloc(capacity * 4) if libc is not None else None
    if not new:
        return False
    size = words[2] - words[1]
    ctypes.memmove(new, words[1], size)
    old = words[1]
    words[1], words[2], words[3] = new, new + size, new + capacity * 4
    lm.context.tokens = ctypes.cast(new, ctypes.POINTER(ctypes.c_int32))
    libc.free(old)
    return True


@dataclass(slots=True)
class SavedContext:
    cache: ContextCache
    tokens: array  # the context's token ids up to cache.n_past
    data: bytes  # the llama.cpp state

    @property
    def nbytes(self) -> int:
        return len(self.data) + len(self.tokens) * 4 + len(self.cache.key)


class StateStore:
    """LRU of saved contexts, shared by the slots of one engine (their worker threads)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._items: OrderedDict[int, SavedContext] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()
        self.bytes = 0
        self.saves = 0
        self.restores = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, saved: SavedContext) -> None:
        if saved.nbytes > self.limit:
            return
        with self._lock:
            key = bytes(saved.cache.key)
            for k, other in list(self._items.items()):
                if key.startswith(bytes(other.cache.key)):  # an earlier turn of it
                    self._drop(k)
            self._items[self._next] = saved
            self._next += 1
            self.bytes += saved.nbytes
            self.saves += 1
            while self.bytes > self.limit and self._items:
                self._drop(next(iter(self._items)))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def _drop(self, k: int) -> None:
        self.bytes -= self._items.pop(k).nbytes

    def take(
        self, key: bytes, starts: set[int], exact_only: bool, better_than: int, capacity: int
    ) -> tuple[SavedContext, Boundary] | None:
        """Remove and return the saved context reaching furthest into ``key`` (more than
        ``better_than`` tokens, at most ``capacity``)."""
        with self._lock:
            best: tuple[int, SavedContext, Boundary] | None = None
            for k, saved in self._items.items():
                b = saved.cache.match(key, starts, exact_only, max_n_past=capacity)
                if b.n_past > better_than and (best is None or b.n_past > best[2].n_past):
                    best = (k, saved, b)
            if best is None:
                return None
            self._drop(best[0])
            self.restores += 1
            return best[1], best[2]

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries": len(self._items),
            "bytes": self.bytes,
            "limit_bytes": self.limit,
            "saves": self.saves,
            "restores": self.restores,
        }


def save(lm: Any, scratch: StateScratch, cache: ContextCache) -> SavedContext | None:
    """The slot's context up to its cache's last boundary, or None if not worth it."""
    n = cache.n_past
    if n < MIN_SAVE_TOKENS or lm.context is None or lm.context.tokens_size < n:
        return None
    tokens = array("i")
    tokens.frombytes(ctypes.string_at(lm.context.tokens, n * 4))
    return SavedContext(cache.copy(), tokens, scratch.save(lm.model))


def restore(lm: Any, saved: SavedContext, boundary: Boundary, n_ctx: int) -> bool:
    """Put ``saved`` back into the slot's context up to ``boundary``; False if the token
    vector cannot take it (nothing was changed then)."""
    words = _token_vector(lm)
    n = boundary.n_past
    if words is None or n > len(saved.tokens):
        return False
    if (words[3] - words[1]) // 4 < n and not _grow(lm, words, max(n, n_ctx)):
        return False
    api = _c_api()
    api.llmodel_restore_state_data(lm.model, saved.data)  # read only: no copy needed
    ctypes.memmove(words[1], saved.tokens.buffer_info()[0], n * 4)
    words[2] = words[1] + 4 * n
    lm.context.tokens_size = n
    lm.context.n_past = n
    return True
