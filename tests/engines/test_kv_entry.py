"""Saved-context entries: round trip, every check that makes a bad entry ignored, and the
prefix hashes they are found by."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import pytest

from gpt4all_api.engines.kv_entry import (
    MAGIC,
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

NS = KvNamespace(model="m" * 40, n_ctx=2048, n_batch=128, backend="2.8.2")


def saved() -> SavedContext:
    cache = ContextCache()
    cache.add(b"\xffsystem", 300, exact=True)
    cache.add(b"\xfeuser", 420, exact=True)
    cache.add(b"reply", 421, exact=False)
    return SavedContext(cache, array("i", range(421)), b"state" * 1000)


def test_round_trip() -> None:
    entry = saved()
    back = decode(encode(entry, NS), NS)
    assert back.cache == entry.cache
    assert back.tokens == entry.tokens
    assert back.data == entry.data


@pytest.mark.parametrize(
    "other",
    [
        KvNamespace(model="x" * 40, n_ctx=2048, n_batch=128, backend="2.8.2"),
        KvNamespace(model="m" * 40, n_ctx=4096, n_batch=128, backend="2.8.2"),
        KvNamespace(model="m" * 40, n_ctx=2048, n_batch=64, backend="2.8.2"),
        KvNamespace(model="m" * 40, n_ctx=2048, n_batch=128, backend="3.0.0"),
        KvNamespace(model="m" * 40, n_ctx=2048, n_batch=128, backend="2.8.2", format=0),
    ],
)
def test_another_namespace_is_refused(other: KvNamespace) -> None:
    with pytest.raises(BadEntry, match="another model"):
        decode(encode(saved(), NS), other)
    assert other.root != NS.root


def _header(blob: bytes) -> tuple[int, dict]:
    start = len(MAGIC) + 4
    size = int.from_bytes(blob[len(MAGIC) : start], "little")
    return start + size, json.loads(blob[start : start + size])


def _with_header(blob: bytes, **changes: object) -> bytes:
    end, header = _header(blob)
    header.update(changes)
    text = json.dumps(header).encode()
    return MAGIC + len(text).to_bytes(4, "little") + text + blob[end:]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "digest"),
        (lambda b: b[:-10], "lengths"),
        (lambda b: b"junk" + b, "not an entry"),
        (lambda b: b[: len(MAGIC) + 2], "unreadable"),
        (lambda b: _with_header(b, offsets=[7, 7, 18]), "out of order"),
        (lambda b: _with_header(b, n_pasts=[300, 420, 400]), "out of order"),
        (lambda b: _with_header(b, n_pasts=[300, 420, 2049], tokens=2049), "lengths"),
        (lambda b: _with_header(b, exact=[1]), "no boundaries"),
        (lambda b: _with_header(b, digest=None), "digest"),
        (lambda b: _with_header(b, tokens="many"), "unreadable"),
    ],
)
def test_a_damaged_entry_is_refused(damage: object, reason: str) -> None:
    blob = encode(saved(), NS)
    with pytest.raises(BadEntry, match=reason):
        decode(damage(blob), NS)  # type: ignore[operator]


def test_prefix_hashes_do_not_depend_on_where_else_one_cuts() -> None:
    key = b"\xffabc\xfedef\xfeghi"
    one = prefix_hashes(NS.root, key, [4, 8, 12])
    assert prefix_hashes(NS.root, key, [8]) == [one[1]]
    assert prefix_hashes(NS.root, key, [12]) == [one[2]]
    assert len(set(one)) == 3
    assert prefix_hashes(KvNamespace("y" * 40, 2048, 128, "2.8.2").root, key, [4])[0] != one[0]


def test_an_entry_is_indexed_at_its_exact_boundaries_past_the_threshold() -> None:
    entry = saved()
    assert entry_hashes(NS, entry.cache, 256) == prefix_hashes(NS.root, entry.cache.key, [7, 12])
    assert entry_hashes(NS, entry.cache, 400) == prefix_hashes(NS.root, entry.cache.key, [12])
    assert entry_hashes(NS, entry.cache, 500) == []


def test_model_identity_is_by_content(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(bytes(range(256)) * 20000)
    b.write_bytes(a.read_bytes())
    c.write_bytes(a.read_bytes()[:-1] + b"\x00")
    assert model_identity(a) == model_identity(b) != model_identity(c)
