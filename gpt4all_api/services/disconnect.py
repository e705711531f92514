"""Work that must stop when the client does: non-streamed requests are cancelled (and with
them the model call) when the connection drops or the shutdown grace period ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, TypeVar

from fastapi import Request

from gpt4all_api.errors import APIError
from gpt4all_api.shutdown import ShutdownCoordinator, ShuttingDown

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def until_disconnected(
    request: Request, work: Awaitable[T], shutdown: ShutdownCoordinator | None = None
) -> T:
    """Run ``work``, cancelling it (and so the model call) if the client goes away or the
    shutdown grace period ends first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    waiters: set[asyncio.Future[Any]] = {task, watcher}
    if shutdown is not None:
        waiters.add(asyncio.ensure_future(shutdown.wait_expired()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        for waiter in waiters - {task}:
            waiter.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError, APIError):
            await task
        if shutdown is not None and shutdown.expired:
            logger.warning("shutdown grace period over; request cancelled")
            raise ShuttingDown()
        logger.info("client disconnected; request cancelled")
        raise APIError("Client disconnected.", status_code=499, type="client_disconnected")
    return task.result()
