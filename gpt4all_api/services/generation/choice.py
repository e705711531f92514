"""Running one choice on an engine: stop sequences held back across token boundaries, exact
usage when a stop sequence ends generation, timings for the access log."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from gpt4all_api import request_context
from gpt4all_api.engines.base import (
    Done,
    Engine,
    FinishReason,
    GenerationRequest,
    Token,
    ToolCall,
)
from gpt4all_api.errors import APIError
from gpt4all_api.services.stop import StopMatcher
from gpt4all_api.services.tools import ContentDelta, ToolCallDelta, ToolCallStream, ToolRequest


@dataclass(slots=True)
class ChoiceOutcome:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int = 0
    cached_tokens: int = 0  #: prompt tokens reused from the engine's cache


async def run_choice(
    engine: Engine,
    request: GenerationRequest,
    on_text: Callable[[str], Awaitable[None] | None],
    on_start: Callable[[], Awaitable[None]] | None = None,
    tools: ToolRequest | None = None,
    on_tool: Callable[[ToolCallDelta], Awaitable[None] | None] | None = None,
) -> ChoiceOutcome:
    """Generate one choice, passing text (stop strings removed) to ``on_text``.

    ``on_start`` runs when the engine's first event arrives, i.e. once the prompt was
    accepted: streamed responses send nothing before that, so errors can still be 400s.
    With ``tools``, the text goes through ``ToolCallStream`` first: content reaches
    ``on_text``, call pieces ``on_tool``.
    """
    calls = ToolCallStream(tools or ToolRequest(), engine.parses_tool_calls)

    async def deliver(deltas: list[ContentDelta | ToolCallDelta]) -> None:
        for d in deltas:
            if isinstance(d, ContentDelta):
                await _maybe_await(on_text(d.text))
            elif on_tool is not None:
                await _maybe_await(on_tool(d))

    async def text_out(text: str) -> None:
        if calls.parses_text:
            await deliver(calls.text(text))
        else:  # the per-token path of completions and chat without tools: no detour
            await _maybe_await(on_text(text))

    stop_event = threading.Event()
    matcher = StopMatcher([*request.params.stop, *engine.implicit_stops(request)])
    done: Done | None = None
    consumed = 0
    first_token_at: float | None = None
    async with aclosing(engine.stream(request, stop_event)) as events:
        async for event in events:
            if on_start is not None:
                await on_start()
                on_start = None
            if isinstance(event, Token):
                if first_token_at is None:
                    first_token_at = request_context.note_first_token()
                if matcher.stopped:
                    continue  # the backend ran ahead of the stop; not part of the answer
                consumed += event.tokens
                request_context.note_tokens(event.tokens)
                out = matcher.feed(event.text)
                if out:
                    await text_out(out)
                if matcher.stopped:
                    stop_event.set()
            elif isinstance(event, ToolCall):
                consumed += event.tokens
                await deliver(calls.tool_call(event))
            else:
                done = event
    if first_token_at is not None and done is not None:
        elapsed = time.perf_counter() - first_token_at
        request_context.note_decode(elapsed, done.completion_tokens - 1)
    if done is None:
        raise APIError(
            "The generation ended without a result.", status_code=500, type="server_error"
        )
    if not matcher.stopped:
        tail = matcher.flush()
        if tail:
            await text_out(tail)
    await deliver(calls.finish())
    if matcher.stopped:
        # usage counts the tokens up to the one completing the stop string, so it does not
        # depend on how far the backend ran before it saw the stop signal
        return ChoiceOutcome(
            "stop",
            done.prompt_tokens,
            min(consumed, done.completion_tokens),
            calls.calls,
            done.cached_tokens,
        )
    return ChoiceOutcome(
        done.finish_reason,
        done.prompt_tokens,
        done.completion_tokens,
        calls.calls,
        done.cached_tokens,
    )


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value
