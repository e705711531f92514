"""ResponseStore against real databases: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gpt4all_api.response_store import (
    InvalidCursor,
    ResponseNotStored,
    ResponseStore,
    StoredResponse,
    database_url,
)
from gpt4all_api.settings import Settings

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: the store creates it.
        return f"sqlite:///{tmp_path / 'data' / 'responses.sqlite3'}"
    return request.getfixturevalue("postgres_url")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def with_store(url: str, body: Callable[[ResponseStore], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        store = ResponseStore(url, **kw)
        await store.start()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def message(item_id: str, role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [{"type": kind, "text": text}],
    }


def record(rid: str, prev: str | None, said: str, answer: str, n: int = 1) -> StoredResponse:
    inputs = [message(f"msg_{rid}_in{i}", "user", f"{said} {i}") for i in range(n)]
    output = [message(f"msg_{rid}_out", "assistant", answer)]
    return StoredResponse(
        id=rid,
        created_at=1_700_000_000,
        model="tiny",
        response={"id": rid, "object": "response", "output": output, "metadata": {"k": "é"}},
        input_items=inputs,
        previous_response_id=prev,
    )


def test_save_get_roundtrip(store_url: str) -> None:
    async def body(store: ResponseStore) -> None:
        rec = record("resp_a", None, "Grüße 🌍", "hi")
        saved = await store.save(rec)
        assert saved.ancestors == ()
        got = await store.get("resp_a")
        assert got is not None
        assert got.response == rec.response
        assert got.input_items == rec.input_items
        assert (got.model, got.created_at, got.previous_response_id) == (
            "tiny",
            1_700_000_000,
            None,
        )
        assert await store.get("resp_missing") is None
        # Saving the same id again replaces the row.
        await store.save(record("resp_a", None, "again", "there"))
        got = await store.get("resp_a")
        assert got is not None and got.response["output"][0]["content"][0]["text"] == "there"
        assert await store.count() == 1

    with_store(store_url, body)


def test_history_rebuilds_the_chain_in_order(store_url: str) -> None:
    async def body(store: ResponseStore) -> None:
        await store.save(record("resp_1", None, "one", "a1", n=2))
        await store.save(record("resp_2", "resp_1", "two", "a2"))
        third = await store.save(record("resp_3", "resp_2", "three", "a3"))
        assert third.ancestors == ("resp_1", "resp_2")
        items = await store.history("resp_3")
        texts = [i["content"][0]["text"] for i in items]
        assert texts == ["one 0", "one 1", "a1", "two 0", "a2", "three 0", "a3"]
        # A branch from the middle sees only its own line.
        await store.save(record("resp_2b", "resp_1", "other", "b2"))
        texts = [i["content"][0]["text"] for i in await store.history("resp_2b")]
        assert texts == ["one 0", "one 1", "a1", "other 0", "b2"]
        with pytest.raises(ResponseNotStored) as exc:
            await store.history("resp_nope")
        assert exc.value.response_id == "resp_nope"

    with_store(store_url, body)


def test_delete(store_url: str) -> None:
    async def body(store: ResponseStore) -> None:
        await store.save(record("resp_1", None, "one", "a1"))
        await store.save(record("resp_2", "resp_1", "two", "a2"))
        assert await store.delete("resp_1") is True
        assert await store.delete("resp_1") is False
        assert await store.get("resp_1") is None
        assert await store.get("resp_2") is not None
        # The continuation's history names the missing response.
        with pytest.raises(ResponseNotStored) as exc:
            await store.history("resp_2")
        assert exc.value.response_id == "resp_1"

    with_store(store_url, body)


def test_list_input_items_pages(store_url: str) -> None:
    async def body(store: ResponseStore) -> None:
        await store.save(record("resp_p", None, "q", "a", n=5))
        ids = [f"msg_resp_p_in{i}" for i in range(5)]

        async def page_ids(**kw: Any) -> tuple[list[str], bool, str | None, str | None]:
            page = await store.list_input_items("resp_p", **kw)
            assert page is not None
            return [i["id"] for i in page.data], page.has_more, page.first_id, page.last_id

        assert await page_ids() == (ids[::-1], False, ids[4], ids[0])  # default: desc
        assert await page_ids(order="asc", limit=2) == (ids[:2], True, ids[0], ids[1])
        assert await page_ids(order="asc", limit=2, after=ids[1]) == (
            ids[2:4],
            True,
            ids[2],
            ids[3],
        )
        assert await page_ids(order="asc", limit=2, after=ids[3]) == (
            [ids[4]],
            False,
            ids[4],
            ids[4],
        )
        assert await page_ids(order="asc", after=ids[4]) == ([], False, None, None)
        assert await page_ids(order="desc", limit=2, after=ids[3]) == (
            [ids[2], ids[1]],
            True,
            ids[2],
            ids[1],
        )
        assert await page_ids(order="asc", limit=2, before=ids[4]) == (
            ids[2:4],
            True,
            ids[2],
            ids[3],
        )
        assert await page_ids(order="asc", after=ids[0], before=ids[3]) == (
            ids[1:3],
            False,
            ids[1],
            ids[2],
        )
        with pytest.raises(InvalidCursor) as exc:
            await store.list_input_items("resp_p", after="msg_unknown")
        assert exc.value.param == "after"
        assert await store.list_input_items("resp_unknown") is None

    with_store(store_url, body)


def test_max_age_expires_idle_conversations_only(store_url: str) -> None:
    clock = Clock()

    async def body(store: ResponseStore) -> None:
        await store.save(record("resp_old", None, "old", "x"))
        await store.save(record("resp_live1", None, "live", "y"))
        clock.now += 1.5 * 86400
        # Continuing the live conversation marks its beginning as used too.
        await store.save(record("resp_live2", "resp_live1", "more", "z"))
        clock.now += 0.6 * 86400  # resp_old: 2.1 days idle; the live chain: 0.6 days
        assert await store.get("resp_old") is None  # invisible at once
        assert [i["content"][0]["text"] for i in await store.history("resp_live2")] == [
            "live 0", "y", "more 0", "z",
        ]  # fmt: skip
        assert await store.prune() == 1  # and removed
        assert await store.count() == 2
        assert await store.delete("resp_old") is False

    with_store(store_url, body, max_age_days=2, clock=clock)


def test_max_count_removes_least_recently_used_newest_first(store_url: str) -> None:
    clock = Clock()

    async def body(store: ResponseStore) -> None:
        for rid, prev in [("resp_a1", None), ("resp_a2", "resp_a1"), ("resp_b1", None)]:
            await store.save(record(rid, prev, rid, rid))
            clock.now += 10
        await store.save(record("resp_b2", "resp_b1", "b2", "b2"))  # 4 > 3: one goes
        # Conversation a is the least recently used; of it, the newest response goes first.
        assert await store.get("resp_a2") is None
        assert await store.get("resp_a1") is not None
        assert len(await store.history("resp_b2")) == 4
        clock.now += 10
        await store.save(record("resp_c1", None, "c", "c"))
        assert await store.get("resp_a1") is None
        assert await store.count() == 3

    with_store(store_url, body, max_count=3, clock=clock)


def test_schema_creation_is_idempotent_and_safe_concurrently(store_url: str) -> None:
    """Several processes starting at once (here: threads, each with its own engine)."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start_one() -> None:
        async def main() -> None:
            store = ResponseStore(store_url)
            barrier.wait()
            await store.start()
            await store.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    async def body(store: ResponseStore) -> None:
        await store.save(record("resp_x", None, "x", "x"))

    with_store(store_url, body)
    with_store(store_url, body)  # a restart finds the table and its rows


SECOND_PROCESS = """
import asyncio, json, sys
from gpt4all_api.response_store import ResponseStore, StoredResponse

async def main():
    store = ResponseStore(sys.argv[1])
    await store.start()
    history = await store.history("resp_first")
    await store.save(StoredResponse(
        id="resp_second", created_at=1, model="tiny", previous_response_id="resp_first",
        input_items=[{"id": "msg_q2", "type": "message", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": "and then?"}]}],
        response={"id": "resp_second", "output": [{"id": "msg_a2", "type": "message",
                  "role": "assistant", "status": "completed",
                  "content": [{"type": "output_text", "text": "then this"}]}]},
    ))
    await store.close()
    print(json.dumps(history))

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_share_one_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Replica A stores a response; replica B (another process) reads its history and
    continues it; A then rebuilds the whole conversation."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")

    async def first(store: ResponseStore) -> None:
        await store.save(record("resp_first", None, "hello", "hi there"))

    with_store(url, first)
    proc = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    seen_by_b = json.loads(proc.stdout)
    assert [i["content"][0]["text"] for i in seen_by_b] == ["hello 0", "hi there"]

    async def last(store: ResponseStore) -> list[str]:
        return [i["content"][0]["text"] for i in await store.history("resp_second")]

    assert with_store(url, last) == ["hello 0", "hi there", "and then?", "then this"]


def test_database_url_from_settings(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "d")  # type: ignore[call-arg]
    assert database_url(settings) == f"sqlite:///{(tmp_path / 'd' / 'responses.sqlite3')}"
    assert not (tmp_path / "d").exists()  # nothing is created before start()
    pg = Settings(_env_file=None, database_url="postgres://u:p%40ss@db:5432/app")  # type: ignore[call-arg]
    assert database_url(pg) == "postgresql+psycopg://u:p%40ss@db:5432/app"
    store = ResponseStore.from_settings(pg)
    assert "p%40ss" not in store.describe() and "***" in store.describe()
    assert store.dialect == "postgresql"


def test_default_sqlite_store_creates_its_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "nested" / "data")  # type: ignore[call-arg]

    async def main() -> None:
        store = ResponseStore.from_settings(settings)
        await store.start()
        await store.save(record("resp_d", None, "d", "d"))
        await store.close()

    run(main)
    assert (tmp_path / "nested" / "data" / "responses.sqlite3").is_file()


def owned(rid: str, prev: str | None, owner: str | None) -> StoredResponse:
    return dataclasses.replace(record(rid, prev, rid, rid), owner=owner)


def test_a_response_is_only_its_owners(store_url: str) -> None:
    """Another owner finds nothing: get, input items, history and delete all miss; no owner
    (API keys not configured) sees every row."""

    async def body(store: ResponseStore) -> None:
        alice, bob = store.owner_of(b"\x01" * 32), store.owner_of(b"\x02" * 32)
        assert alice is not None and bob is not None and alice != bob
        await store.save(owned("resp_a1", None, alice))
        await store.save(owned("resp_a2", "resp_a1", alice))
        assert await store.get("resp_a1", bob) is None
        assert await store.list_input_items("resp_a1", owner=bob) is None
        with pytest.raises(ResponseNotStored):
            await store.history("resp_a2", bob)
        assert await store.delete("resp_a1", bob) is False
        # Bob continuing Alice's response does not inherit her conversation.
        saved = await store.save(owned("resp_b1", "resp_a2", bob))
        assert saved.ancestors == ("resp_a2",)
        with pytest.raises(ResponseNotStored) as exc:
            await store.history("resp_b1", bob)
        assert exc.value.response_id == "resp_a2"
        # Alice's own view, and the unfiltered one, are intact.
        got = await store.get("resp_a1", alice)
        assert got is not None and got.owner == alice
        assert len(await store.history("resp_a2", alice)) == 4
        assert await store.get("resp_a1") is not None
        assert await store.delete("resp_a1", alice) is True
        assert await store.get("resp_a1") is None

    with_store(store_url, body)


def test_owner_identity_is_stable_per_database_and_not_the_key(
    store_url: str, tmp_path: Path
) -> None:
    digest = b"\x07" * 32

    async def identity(store: ResponseStore) -> str | None:
        return store.owner_of(digest)

    first = with_store(store_url, identity)
    assert with_store(store_url, identity) == first  # a restart (or another replica)
    assert first is not None and len(first) == 64 and digest.hex() not in first
    elsewhere = with_store(f"sqlite:///{tmp_path / 'other.sqlite3'}", identity)
    assert elsewhere != first  # salted per database

    async def without_keys(store: ResponseStore) -> str | None:
        return store.owner_of(None)

    assert with_store(store_url, without_keys) is None


OLD_SCHEMA = """
CREATE TABLE gpt4all_api_responses (
    id VARCHAR(128) NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL,
    last_used_at DOUBLE PRECISION NOT NULL,
    model VARCHAR(512) NOT NULL,
    previous_response_id VARCHAR(128),
    ancestors {json} NOT NULL,
    input_items {json} NOT NULL,
    response {json} NOT NULL
)
"""


def test_a_database_of_the_previous_version_is_migrated(store_url: str) -> None:
    """The table as the first release created it, with a row: start-up adds the owner
    column and the salt; the old row has no owner, so only a store without API keys sees it."""
    from sqlalchemy import create_engine, text

    from gpt4all_api.response_store.store import normalize_url

    engine = create_engine(normalize_url(store_url))
    json_type = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
    if engine.dialect.name == "sqlite":
        Path(engine.url.database or "").parent.mkdir(parents=True, exist_ok=True)
    item = json.dumps([message("msg_old", "user", "old")])
    with engine.begin() as conn:
        conn.execute(text(OLD_SCHEMA.format(json=json_type)))
        conn.execute(
            text(
                "INSERT INTO gpt4all_api_responses VALUES "
                "('resp_old', 1, 1e12, 'tiny', NULL, '[]', :items, :resp)"
            ),
            {"items": item, "resp": json.dumps({"id": "resp_old", "output": []})},
        )
    engine.dispose()

    async def body(store: ResponseStore) -> None:
        old = await store.get("resp_old")
        assert old is not None and old.owner is None
        assert old.input_items[0]["content"][0]["text"] == "old"
        assert await store.get("resp_old", store.owner_of(b"\x01" * 32)) is None
        await store.save(owned("resp_new", None, store.owner_of(b"\x01" * 32)))

    with_store(store_url, body)
    with_store(store_url, body)  # migrating again changes nothing
