"""A streamed response: the generation's deltas as OpenAI's Responses event sequence.

Chat streaming's machinery (``services.generation.streaming.open_sse``): a producer task runs
the one choice and puts SSE frames on a bounded queue, the response body sends them, and
the first frame is awaited before the response starts, so a prompt over the context is
still an HTTP 400. The response is a ``GenerationStream``: it stops the producer and then
closes what the request holds (ticket, model lease) however the body ends.

Differences from chat: frames carry ``event:`` lines (``sse_frame``), there is no
``[DONE]``, an error after the start is an ``error`` event followed by
``response.failed``, and the finished response is handed to ``on_finished`` (the store)
before its last event is sent, so a client that reads ``response.completed`` can
retrieve it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gpt4all_api import request_context
from gpt4all_api.engines.base import Engine
from gpt4all_api.errors import APIError
from gpt4all_api.protocol.responses import Response
from gpt4all_api.services.generation.choice import run_choice
from gpt4all_api.services.generation.planning import ChoicePlan
from gpt4all_api.services.generation.streaming import GenerationStream, Put, open_sse
from gpt4all_api.services.responses.events import Event, ResponseEvents, sse_frame
from gpt4all_api.services.tools import ToolCallDelta
from gpt4all_api.shutdown import ShutdownCoordinator

logger = logging.getLogger(__name__)


async def open_response_stream(
    engine: Engine,
    plan: ChoicePlan,
    events: ResponseEvents,
    shutdown: ShutdownCoordinator,
    *,
    on_generation_end: Callable[[], None],
    on_finished: Callable[[Response], Awaitable[None]],
) -> GenerationStream:
    """Start generating; return the SSE response once ``response.created`` is there (an
    error before it is raised, for an HTTP error). ``on_generation_end`` runs once the
    generation is over, however it ends."""

    async def produce(send: Put) -> None:
        async def put(batch: list[Event]) -> None:
            for event in batch:
                await send(sse_frame(event))

        async def start() -> None:
            await put(events.start())

        async def send_text(text: str) -> None:
            if text:
                await put(events.text(text))

        async def send_tool(delta: ToolCallDelta) -> None:
            if delta.name is not None:
                await put(events.tool_call(delta.name, delta.id))
            await put(events.tool_arguments(delta.arguments))

        outcome = await run_choice(
            engine, plan.request, send_text, start, tools=plan.tools, on_tool=send_tool
        )
        request_context.note_usage(outcome.prompt_tokens, outcome.completion_tokens)
        last = events.finish(
            outcome.finish_reason,
            input_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens,
            cached_tokens=outcome.cached_tokens,
        )
        try:
            await on_finished(events.response)
        except APIError as exc:
            # Not kept as asked: the client is told, the finished events are dropped.
            await put(events.fail(exc.message, replace_finish=True))
            return
        await put(last)

    def error_frames(exc: BaseException) -> list[bytes]:
        return [sse_frame(event) for event in _failure(events, exc)]

    return await open_sse(produce, shutdown, on_generation_end, error_frames)


def _failure(events: ResponseEvents, exc: BaseException) -> list[Event]:
    """``error`` then ``response.failed`` for a failure after the stream started."""
    if isinstance(exc, APIError):
        code = "server_error" if exc.status_code >= 500 else "invalid_prompt"
        if exc.status_code == 429:
            code = "rate_limit_exceeded"
        return events.fail(exc.message, code=code, param=exc.param)
    logger.error("response stream failed: %r", exc)
    return events.fail("The server had an error while generating.")
