"""Saved contexts beyond RAM on the real backend: written to disk and to a real Redis after
a turn, restored by another engine (a restart, another replica) into a fresh slot, with
the same context and answer as a fresh evaluation; bad entries ignored; tiers bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gpt4all_api.engines.base import ChatTurn, Done
from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine
from gpt4all_api.engines.kv_tiers import MIN_PUBLISH_TOKENS, DiskTier
from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE
from tests.engines.test_gpt4all_cpu import _engine, chat, context, run
from tests.support.server import free_port
from tests.support.tinymodel import build_tiny_model

#: System prompts past the publishing threshold (the tiny model: one token per byte).
LONG_SYSTEM = ChatTurn("system", "You answer questions about the sea. " * 12)
SMOL_SYSTEM = ChatTurn("system", "You answer questions about the sea, briefly. " * 30)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def engine(
    loop: asyncio.AbstractEventLoop, path: Path, *, n_ctx: int = 1024, **serving: Any
) -> Gpt4AllEngine:
    return _engine(loop, path, n_ctx, **serving)


def disk(directory: Path, mb: int = 64) -> dict[str, Any]:
    return {"kv_disk_dir": directory, "kv_disk_mb": mb}


def shared(url: str) -> dict[str, Any]:
    return {"kv_cache_url": SecretStr(url), "kv_cache_ttl": 3600}


def first_turn(
    loop: asyncio.AbstractEventLoop, eng: Gpt4AllEngine, system: ChatTurn = LONG_SYSTEM
) -> tuple[tuple[ChatTurn, ...], Done, str]:
    turns = (system, ChatTurn("user", "Why is it salty?"))
    text, done = run(loop, eng, chat(*turns))
    assert done is not None and done.prompt_tokens >= MIN_PUBLISH_TOKENS
    assert eng.tiers is not None and eng.tiers.flush()
    follow = (*turns, ChatTurn("assistant", text), ChatTurn("user", "And why blue?"))
    return follow, done, text


def fresh_answer(
    loop: asyncio.AbstractEventLoop, path: Path, turns: tuple[ChatTurn, ...], n_ctx: int = 1024
) -> tuple[str, list[int]]:
    """The answer and context of an engine with no tiers at all."""
    eng = engine(loop, path, n_ctx=n_ctx)
    try:
        text, done = run(loop, eng, chat(*turns))
        assert done is not None and done.cached_tokens == 0
        return text, context(eng, done.prompt_tokens)
    finally:
        loop.run_until_complete(eng.close())


def restored_answer(
    loop: asyncio.AbstractEventLoop, eng: Gpt4AllEngine, turns: tuple[ChatTurn, ...]
) -> tuple[str, Done, list[int]]:
    text, done = run(loop, eng, chat(*turns))
    assert done is not None
    return text, done, context(eng, done.prompt_tokens)


def test_a_restart_continues_from_disk(
    loop: asyncio.AbstractEventLoop, tiny_path: Path, tmp_path: Path
) -> None:
    a = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    follow, done, _ = first_turn(loop, a)
    loop.run_until_complete(a.close())
    assert len(list((tmp_path / "kv").glob("*.kv"))) >= 1

    b = engine(loop, tiny_path, **disk(tmp_path / "kv"))  # the restarted process
    try:
        text, again, ids = restored_answer(loop, b, follow)
        assert again.cached_tokens == done.prompt_tokens  # the whole first prompt
        assert b.tiers is not None and b.tiers.counts["disk"].hits == 1
    finally:
        loop.run_until_complete(b.close())
    assert (text, ids) == fresh_answer(loop, tiny_path, follow)


def test_smol_another_replica_continues_through_redis(
    loop: asyncio.AbstractEventLoop, default_models_dir: Path, redis_url: str
) -> None:
    path = default_models_dir / DEFAULT_CHAT_MODEL_FILE
    a = engine(loop, path, **shared(redis_url))
    b = engine(loop, path, **shared(redis_url))
    try:
        follow, done, _ = first_turn(loop, a, SMOL_SYSTEM)
        text, again, ids = restored_answer(loop, b, follow)
        assert again.cached_tokens == done.prompt_tokens
        assert b.tiers is not None and b.tiers.counts["redis"].hits == 1
        assert b.slots_info()["kv_tiers"]["redis"]["up"] is True
    finally:
        loop.run_until_complete(a.close())
        loop.run_until_complete(b.close())
    assert (text, ids) == fresh_answer(loop, path, follow)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_bad_entry_is_ignored_and_removed(
    loop: asyncio.AbstractEventLoop, tiny_path: Path, tmp_path: Path, damage: str
) -> None:
    a = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    follow, _, _ = first_turn(loop, a)
    loop.run_until_complete(a.close())
    for f in (tmp_path / "kv").glob("*.kv"):
        blob = bytearray(f.read_bytes())
        if damage == "flip":
            blob[-100] ^= 0xFF  # in the llama.cpp state: only the digest can tell
        elif damage == "truncate":
            del blob[len(blob) // 2 :]
        else:
            blob[:] = b"not an entry at all"
        f.unlink()  # a new inode: the hard links are separate files now
        f.write_bytes(bytes(blob))

    b = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    try:
        text, again, ids = restored_answer(loop, b, follow)
        assert again.cached_tokens == 0
        assert b.tiers is not None and b.tiers.counts["disk"].rejected >= 1
        assert b.tiers.counts["disk"].hits == 0
    finally:
        loop.run_until_complete(b.close())
    assert (text, ids) == fresh_answer(loop, tiny_path, follow)


def test_another_context_size_does_not_see_the_entry(
    loop: asyncio.AbstractEventLoop, tiny_path: Path, tmp_path: Path
) -> None:
    a = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    follow, _, _ = first_turn(loop, a)
    loop.run_until_complete(a.close())
    b = engine(loop, tiny_path, n_ctx=2048, **disk(tmp_path / "kv"))
    try:
        _, again, _ = restored_answer(loop, b, follow)
        assert again.cached_tokens == 0
        assert b.tiers is not None and b.tiers.counts["disk"].rejected == 0
    finally:
        loop.run_until_complete(b.close())


def test_a_later_turn_takes_the_names_over(
    loop: asyncio.AbstractEventLoop, tiny_path: Path, tmp_path: Path
) -> None:
    """One file per conversation on disk: the next turn's entry replaces the previous one
    under every prefix it shares, and a branch from an earlier turn still finds it."""
    a = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    try:
        follow, done, _ = first_turn(loop, a)
        _, second = run(loop, a, chat(*follow))
        assert a.tiers is not None and a.tiers.flush() and second is not None
        files = {f.stat().st_ino for f in (tmp_path / "kv").glob("*.kv")}
        assert len(files) == 1
    finally:
        loop.run_until_complete(a.close())
    b = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    try:
        branch = (*follow[:3], ChatTurn("user", "Something else?"))
        _, again, _ = restored_answer(loop, b, branch)
        assert again.cached_tokens == done.prompt_tokens
    finally:
        loop.run_until_complete(b.close())


def test_short_contexts_are_not_written(
    loop: asyncio.AbstractEventLoop, tiny_path: Path, tmp_path: Path
) -> None:
    a = engine(loop, tiny_path, **disk(tmp_path / "kv"))
    try:
        _, done = run(loop, a, chat(ChatTurn("user", "Hi")))
        assert done is not None and done.prompt_tokens < MIN_PUBLISH_TOKENS
        assert a.tiers is not None and a.tiers.flush()
        assert not list((tmp_path / "kv").glob("*.kv"))
    finally:
        loop.run_until_complete(a.close())


def test_an_unreachable_redis_is_skipped(loop: asyncio.AbstractEventLoop, tiny_path: Path) -> None:
    a = engine(loop, tiny_path, **shared(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        follow, _, _ = first_turn(loop, a)
        _, again, _ = restored_answer(loop, a, follow)
        assert again.cached_tokens > 0  # the slot's own context; Redis just skipped
        info = a.slots_info()["kv_tiers"]["redis"]
        assert info["up"] is False and info["errors"] >= 1
    finally:
        loop.run_until_complete(a.close())


def test_disk_tier_is_bounded(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, limit_bytes=2500)
    for i in range(5):
        tier.put(bytes([i]) * 1000, [f"{i}a", f"{i}b"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["3a.kv", "3b.kv", "4a.kv", "4b.kv"]
    assert tier.as_dict() == {"entries": 2, "bytes": 2000, "limit_bytes": 2500}
    assert tier.load(tier.locate(["4a"])[0] or "") == bytes([4]) * 1000
    tier.put(b"x" * 3000, ["big"])  # larger than the bound: not kept
    assert tier.locate(["big", "3a"]) == [None, str(tmp_path / "3a.kv")]
