"""Store calls against a hung PostgreSQL (every process of a real server stopped with
SIGSTOP): each call fails within its deadline, all at once rather than in batches, the
worker threads are freed, and the store works again once the server resumes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from gpt4all_api.response_store import ResponseStore, StoredResponse, StoreTimeout
from gpt4all_api.response_store.bounded import BoundedRunner, postgres_connect_args
from tests.support.postgres import PostgresServer, paused

TIMEOUT = 1.0
#: Generous: a busy 2-core machine; what matters is one deadline, not one per batch.
SLACK = 1.5


def record(rid: str) -> StoredResponse:
    return StoredResponse(
        id=rid,
        created_at=1,
        model="tiny",
        response={"id": rid, "output": []},
        input_items=[{"id": f"msg_{rid}", "type": "message", "role": "user", "content": []}],
    )


async def timed(call: Any) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_hung_database_fails_each_call_within_its_deadline(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    async def main() -> None:
        store = ResponseStore(postgres_url, timeout=TIMEOUT, workers=2)
        await store.start()
        try:
            await store.save(record("resp_before"))
            with paused(postgres_server):
                # 10 calls on 2 threads: the first two hang in the database, the rest wait
                # for a thread; all of them end at their one deadline.
                calls = [store.get("resp_before") for _ in range(6)]
                calls += [store.save(record(f"resp_{i}")) for i in range(4)]
                results = await asyncio.gather(*(timed(c) for c in calls))
                for seconds, exc in results:
                    assert isinstance(exc, StoreTimeout), exc
                    assert TIMEOUT * 0.9 <= seconds < TIMEOUT + SLACK, seconds
                # Later calls too (the stuck threads were cut loose, not left hanging).
                seconds, exc = await timed(store.history("resp_before"))
                assert isinstance(exc, StoreTimeout) and seconds < TIMEOUT + SLACK
            # Resumed: the store serves again (broken connections were replaced).
            got = await store.get("resp_before")
            assert got is not None and got.id == "resp_before"
            await store.save(record("resp_after"))
            assert await store.get("resp_after") is not None
        finally:
            started = time.monotonic()
            await store.close()
            assert time.monotonic() - started < TIMEOUT + SLACK

    asyncio.run(main())


def test_a_caller_that_leaves_still_frees_the_thread_at_the_deadline(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    async def main() -> None:
        store = ResponseStore(postgres_url, timeout=TIMEOUT, workers=1)
        await store.start()
        try:
            with paused(postgres_server):
                task = asyncio.create_task(store.get("resp_x"))
                await asyncio.sleep(0.2)
                task.cancel()  # the client left
                with pytest.raises(asyncio.CancelledError):
                    await task
                # The one worker is free again after the first call's deadline.
                seconds, exc = await timed(store.get("resp_x"))
                assert isinstance(exc, StoreTimeout) and seconds < TIMEOUT + SLACK
            assert await store.get("resp_x") is None
        finally:
            await store.close()

    asyncio.run(main())


def test_runner_deadline_and_queue_without_a_database() -> None:
    """The runner alone: a blocking call past its deadline is a StoreTimeout, and a call
    that waited for a thread past its own deadline never runs."""
    ran: list[str] = []

    def slow() -> None:
        time.sleep(0.6)
        ran.append("slow")

    def quick() -> None:
        ran.append("quick")

    async def main() -> None:
        runner = BoundedRunner(1, 0.2)
        first = asyncio.create_task(timed(runner.run(slow)))
        second = asyncio.create_task(timed(runner.run(quick)))
        (s1, e1), (s2, e2) = await asyncio.gather(first, second)
        assert isinstance(e1, StoreTimeout) and isinstance(e2, StoreTimeout)
        assert s1 < 0.5 and s2 < 0.5
        assert await runner.run(quick, timeout=5) is None
        runner.shutdown()

    asyncio.run(main())
    assert ran == ["slow", "quick"]  # the queued call was skipped, the later one ran


def test_postgres_connect_args_bound_the_connection() -> None:
    args = postgres_connect_args(make_url("postgresql+psycopg://u@db/app"), 2.5)
    assert args["connect_timeout"] == 3
    assert args["options"] == "-c statement_timeout=2500"
    assert args["keepalives"] == 1 and args["tcp_user_timeout"] > 0
    url = make_url("postgresql+psycopg://u@db/app?connect_timeout=9&options=-c%20search_path%3Dx")
    args = postgres_connect_args(url, 5)
    assert "connect_timeout" not in args  # the URL's own value stays
    assert args["options"] == "-c search_path=x -c statement_timeout=5000"
    url = make_url("postgresql+psycopg://u@db/app?options=-c%20statement_timeout%3D0")
    assert "options" not in postgres_connect_args(url, 5)
