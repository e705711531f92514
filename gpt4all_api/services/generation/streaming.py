"""Streaming a generation as Server-Sent Events.

A producer task runs the choices and puts SSE chunks on a bounded queue; the response body
sends them. The first event is awaited before the response starts, so a request the engine
refuses (a prompt over the context, an upstream validation error) is still an HTTP error.
After the start, a failure becomes an ``error`` event followed by ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from fastapi.responses import StreamingResponse

from gpt4all_api.engines.base import Engine
from gpt4all_api.errors import APIError, error_body
from gpt4all_api.services.generation.bodies import Chunks, UsageTally
from gpt4all_api.services.generation.choice import run_choice
from gpt4all_api.services.generation.planning import ChoicePlan, Kind
from gpt4all_api.services.sse import DONE, sse_event
from gpt4all_api.services.tools import ToolCallDelta, finish_reason
from gpt4all_api.shutdown import ShutdownCoordinator, ShuttingDown

logger = logging.getLogger(__name__)


class GenerationStream(StreamingResponse):
    """An SSE response that, however it ends (finished, failed, client gone, or never
    started because the client had already left), first stops its generation and then
    closes what the request holds (``hand_over``: its admission ticket and model lease)."""

    def __init__(
        self, content: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._cleanup = cleanup
        self._held = AsyncExitStack()

    def hand_over(self, held: AsyncExitStack) -> None:
        """Take over ``held`` (closed once the response is over)."""
        self._held = held

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._cleanup()
            finally:
                await self._held.aclose()


Put = Callable[[bytes], Awaitable[None]]


async def open_sse(
    produce: Callable[[Put], Awaitable[None]],
    shutdown: ShutdownCoordinator,
    on_generation_end: Callable[[], None],
    error_frames: Callable[[BaseException], list[bytes]],
    last_frame: bytes | None = None,
) -> GenerationStream:
    """Run ``produce(put)`` in a task of its own and send the frames it puts as an SSE
    response, returned once the first frame is there (an error before it is raised: the
    caller answers with an HTTP error). After the start, a failure is sent as
    ``error_frames(exc)``; ``last_frame`` (``[DONE]``) ends the body however it ends.
    ``on_generation_end`` is called once the producer is over, however it ends; when the
    shutdown grace period expires the producer is cancelled and the stream ends cleanly."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
    closing = False  # the consumer is gone: the producer must not wait on the queue

    async def run() -> None:
        try:
            await produce(queue.put)
            await queue.put(None)
        except asyncio.CancelledError:
            if closing or not shutdown.expired:
                raise
            await queue.put(ShuttingDown())  # grace period over: end the stream cleanly
        except Exception as exc:  # delivered to the consumer, which decides
            await queue.put(exc)
        finally:
            on_generation_end()

    producer = asyncio.ensure_future(run())
    shutdown.track_stream(producer)

    async def cleanup() -> None:
        nonlocal closing
        closing = True
        _abandon(producer)

    try:
        first = await queue.get()
    except BaseException:
        await cleanup()
        raise
    if isinstance(first, BaseException):
        await cleanup()
        raise first

    async def body() -> AsyncIterator[bytes]:
        item: bytes | BaseException | None = first
        try:
            while item is not None:
                if isinstance(item, BaseException):
                    for frame in error_frames(item):
                        yield frame
                    break
                yield item
                item = await queue.get()
            if last_frame is not None:
                yield last_frame
        finally:
            await cleanup()

    return GenerationStream(body(), cleanup)


async def open_stream(
    engine: Engine,
    kind: Kind,
    model: str,
    plans: list[ChoicePlan],
    include_usage: bool,
    shutdown: ShutdownCoordinator,
    on_generation_end: Callable[[], None],
) -> GenerationStream:
    """Start generating the choices and return their SSE response once the first chunk is
    there (see ``open_sse``)."""
    # Every prompt after the first is checked up front, and the first one by waiting for
    # its first event: a prompt that does not fit is a 400 before any byte is sent.
    seen: set[int] = {plans[0].prompt_key}
    for plan in plans[1:]:
        if plan.prompt_key not in seen:
            seen.add(plan.prompt_key)
            await engine.check_prompt_fits(plan.request)

    chunks = Chunks(kind, model)

    async def produce(put: Put) -> None:
        usage = UsageTally()
        for plan in plans:

            async def start(plan: ChoicePlan = plan) -> None:
                if kind == "chat":
                    await put(chunks.role(plan.index))
                if plan.echo:
                    await put(chunks.text(plan.index, plan.echo))

            async def send(text: str, index: int = plan.index) -> None:
                await put(chunks.text(index, text))

            async def send_tool(delta: ToolCallDelta, plan: ChoicePlan = plan) -> None:
                await put(chunks.tool(plan.index, delta, plan.tools.legacy))

            outcome = await run_choice(
                engine, plan.request, send, start, tools=plan.tools, on_tool=send_tool
            )
            usage.add(plan, outcome)
            finish = finish_reason(outcome.finish_reason, outcome.tool_calls, plan.tools.legacy)
            await put(chunks.text(plan.index, "", finish))
        body = usage.body()
        if include_usage:
            await put(chunks.usage(body))

    return await open_sse(
        produce, shutdown, on_generation_end, lambda exc: [_error_event(exc)], DONE
    )


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, APIError):
        return sse_event(exc.body())
    logger.error("stream failed: %r", exc)
    return sse_event(error_body("The server had an error while generating.", "server_error"))


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel the producer without waiting for it.

    This runs in the response's ``finally``, often inside Starlette's already-cancelled
    scope (client gone): awaiting there would re-cancel the producer at every await of its
    clean-up (closing an upstream connection, say), so it unwinds in its own task instead.
    """
    if not task.done():
        task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # already delivered through the queue; mark it retrieved
