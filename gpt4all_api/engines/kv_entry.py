"""Saved contexts as self-checking byte strings, and the keys they are found by.

A saved context (``state_cache.SavedContext``: the llama.cpp state, the context's token
ids and its text-to-token map) leaves the process for the disk and the shared tiers
(``kv_tiers``). It is found again by the prompts that can continue it: each exact boundary
of its map (the end of an evaluation call) is indexed by a hash of the prompt key up to
there, computed incrementally along the key (``prefix_hashes``), seeded with the
``KvNamespace``: the model file's identity, ``n_ctx``, ``n_batch``, the backend's version
and this format. A new prompt hashes its own call boundaries the same way and asks for
the longest one first.

Restoring a state that does not belong to the context can crash the backend, so an entry
carries its namespace and a digest of everything in it, and ``decode`` refuses an entry
whose namespace, lengths, map or digest do not hold (``BadEntry``): it is ignored, never
restored. The map is then checked against the new prompt's bytes (``ContextCache.match``),
so even a hash collision cannot restore the wrong conversation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import sys
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

from gpt4all_api.engines.prompt_cache import ContextCache
from gpt4all_api.engines.state_cache import SavedContext

#: Bumped whenever the layout below changes: older entries are then ignored.
ENTRY_FORMAT = 1
MAGIC = b"gpt4all-api kv\n"
_LENGTH = struct.Struct("<I")
#: Bytes hashed from the model file besides its size: the start (header and vocabulary)
#: and evenly spaced blocks, so that identity costs milliseconds even for large files.
_HEAD_BYTES = 1 << 20
_BLOCK_BYTES = 1 << 16
_BLOCKS = 64


class BadEntry(ValueError):
    """An entry that must not be restored (corrupt, stale or of another context)."""


def model_identity(path: Path) -> str:
    """The model file's identity by content, the same on every replica's copy of the file
    (its size, its first MiB and 64 evenly spaced 64 KiB blocks; not its name or mtime)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=20)
    with path.open("rb") as f:
        digest.update(f.read(_HEAD_BYTES))
        for i in range(_BLOCKS + 1):
            f.seek(max(0, size - _BLOCK_BYTES) * i // _BLOCKS)
            digest.update(f.read(_BLOCK_BYTES))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class KvNamespace:
    """What a saved context is valid for: only a context of this model, size and batching
    (exact reuse is bit-identical only with the same ``n_batch``) on this backend."""

    model: str  # model_identity
    n_ctx: int
    n_batch: int
    backend: str  # the gpt4all bindings' version
    format: int = ENTRY_FORMAT
    byteorder: str = sys.byteorder

    @property
    def root(self) -> bytes:
        """The seed of every key hash in this namespace."""
        text = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.blake2b(text, digest_size=20).digest()


def prefix_hashes(root: bytes, key: bytes | bytearray, offsets: list[int]) -> list[str]:
    """Hex hashes of ``key[:o]`` for each offset ``o`` (ascending), one pass along the key:
    equal hashes mean equal prompt bytes and calls up to there, in the same namespace."""
    running = hashlib.blake2b(root, digest_size=20)
    out: list[str] = []
    pos = 0
    view = memoryview(key)
    for o in offsets:
        running.update(view[pos:o])
        pos = o
        out.append(running.copy().hexdigest())
    return out


def entry_hashes(ns: KvNamespace, cache: ContextCache, min_tokens: int) -> list[str]:
    """The hashes a saved context is found by: one per exact boundary of its map holding at
    least ``min_tokens`` tokens, the longest last."""
    offsets = [
        o for o, n, exact in zip(cache.offsets, cache.n_pasts, cache.exact, strict=True)
        if exact and n >= min_tokens
    ]  # fmt: skip
    return prefix_hashes(ns.root, cache.key, offsets)


def encode(saved: SavedContext, ns: KvNamespace) -> bytes:
    """The entry: magic, header length, JSON header (namespace, map, lengths, digest), then
    the map's key bytes, the token ids and the llama.cpp state."""
    tokens = saved.tokens.tobytes()
    digest = hashlib.blake2b(digest_size=32)
    for part in (saved.cache.key, tokens, saved.data):
        digest.update(part)
    cache = saved.cache
    header = json.dumps(
        {
            "namespace": asdict(ns),
            "offsets": cache.offsets,
            "n_pasts": cache.n_pasts,
            "exact": [int(e) for e in cache.exact],
            "key": len(cache.key),
            "tokens": len(saved.tokens),
            "state": len(saved.data),
            "digest": digest.hexdigest(),
        },
        separators=(",", ":"),
    ).encode()
    return b"".join(
        (MAGIC, _LENGTH.pack(len(header)), header, cache.key, tokens, bytes(saved.data))
    )


def decode(blob: bytes, ns: KvNamespace) -> SavedContext:
    """The saved context in ``blob``; ``BadEntry`` unless every check holds."""
    try:
        return _decode(memoryview(blob), ns)
    except BadEntry:
        raise
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise BadEntry(f"unreadable entry: {exc}") from None


def _decode(view: memoryview, ns: KvNamespace) -> SavedContext:
    if view[: len(MAGIC)] != MAGIC:
        raise BadEntry("not an entry")
    pos = len(MAGIC)
    (header_len,) = _LENGTH.unpack_from(view, pos)
    pos += _LENGTH.size
    header = json.loads(bytes(view[pos : pos + header_len]))
    pos += header_len
    if header["namespace"] != asdict(ns):
        raise BadEntry("saved for another model, context size, batch size or backend")
    key_len, n_tokens, state_len = (int(header[k]) for k in ("key", "tokens", "state"))
    offsets = [int(o) for o in header["offsets"]]
    n_pasts = [int(n) for n in header["n_pasts"]]
    exact = [bool(e) for e in header["exact"]]
    if min(key_len, n_tokens, state_len) < 0 or pos + key_len + 4 * n_tokens + state_len != len(
        view
    ):
        raise BadEntry("lengths do not add up")
    if not (len(offsets) == len(n_pasts) == len(exact)) or not offsets:
        raise BadEntry("no boundaries")
    if any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] > key_len:
        raise BadEntry("boundaries out of order")
    if any(b < a for a, b in itertools.pairwise(n_pasts)) or n_pasts[0] < 0:
        raise BadEntry("token counts out of order")
    if n_pasts[-1] != n_tokens or n_tokens > ns.n_ctx:
        raise BadEntry("token count does not fit the context")
    key = view[pos : pos + key_len]
    tokens = view[pos + key_len : pos + key_len + 4 * n_tokens]
    state = view[pos + key_len + 4 * n_tokens :]
    digest = hashlib.blake2b(digest_size=32)
    for part in (key, tokens, state):
        digest.update(part)
    if digest.hexdigest() != header["digest"]:
        raise BadEntry("digest mismatch")
    ids = array("i")
    ids.frombytes(tokens)
    if n_tokens and min(ids) < 0:
        raise BadEntry("negative token id")
    cache = ContextCache(bytearray(key), offsets, n_pasts, exact)
    return SavedContext(cache, ids, bytes(state))
