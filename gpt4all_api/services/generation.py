"""Completions and chat completions on top of any ``Engine``.

Everything OpenAI-specific that does not depend on the backend lives here: request
validation beyond the schema, resolving sampling defaults, stop sequences (held back
across token boundaries), ``n``, prompt lists, ``echo``, usage, and the JSON / SSE
response shapes. Routers only parse the body and call in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from gpt4all_api import request_context
from gpt4all_api.engines.base import (
    ChatTurn,
    Done,
    Engine,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    Token,
)
from gpt4all_api.errors import APIError, InvalidRequest, error_body
from gpt4all_api.protocol.chat import CreateChatCompletionRequest, TextContentPart
from gpt4all_api.protocol.common import SamplingFields
from gpt4all_api.protocol.completions import CreateCompletionRequest
from gpt4all_api.services.admission import Admission, Slot
from gpt4all_api.services.disconnect import until_disconnected
from gpt4all_api.services.sse import DONE, sse_event
from gpt4all_api.services.stop import StopMatcher
from gpt4all_api.settings import Settings
from gpt4all_api.shutdown import ShutdownCoordinator, ShuttingDown

logger = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["completion", "chat"]


# --- validation and parameters ----------------------------------------------------------


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not supported by this server: {why}", param=param)


def _check_common(req: SamplingFields, settings: Settings, max_tokens: int | None) -> None:
    if req.logit_bias:
        raise _unsupported("logit_bias", "the gpt4all backend cannot bias logits.")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(req, name)
        if value not in (None, 0, 0.0):
            raise _unsupported(name, "use 'repeat_penalty' (gpt4all's repetition penalty).")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    n = req.n or 1
    if n > settings.max_n:
        raise InvalidRequest(f"'n' must be at most {settings.max_n}.", param="n")
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequest(
            f"'max_tokens' must be at most {settings.max_tokens_limit} on this server.",
            param="max_tokens",
        )
    if any(len(s) > settings.max_stop_length for s in req.stop_list()):
        raise InvalidRequest(
            f"Each stop sequence may be at most {settings.max_stop_length} characters long.",
            param="stop",
        )


def sampling_params(
    req: SamplingFields, settings: Settings, max_tokens: int | None
) -> SamplingParams:
    """Request values over configured defaults."""

    def pick(value: T | None, default: T) -> T:
        return default if value is None else value

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=pick(req.temperature, settings.default_temperature),
        top_p=pick(req.top_p, settings.default_top_p),
        top_k=pick(req.top_k, settings.default_top_k),
        min_p=pick(req.min_p, settings.default_min_p),
        repeat_penalty=pick(req.repeat_penalty, settings.default_repeat_penalty),
        repeat_last_n=pick(req.repeat_last_n, settings.default_repeat_last_n),
        stop=tuple(req.stop_list()),
        seed=req.seed,
    )


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    index: int
    request: GenerationRequest
    prompt_key: int  # choices sharing a prompt count its tokens once
    echo: str = ""


def plan_completion(req: CreateCompletionRequest, settings: Settings) -> list[ChoicePlan]:
    _check_common(req, settings, req.max_tokens)
    if req.logprobs is not None:
        raise _unsupported("logprobs", "the gpt4all backend does not expose token logprobs.")
    if req.suffix:
        raise _unsupported("suffix", "insertion (fill-in-the-middle) is not available.")
    n = req.n or 1
    if req.best_of is not None and req.best_of > n:
        raise _unsupported("best_of", "'best_of' greater than 'n' needs logprobs to rank.")
    prompt = req.prompt
    if isinstance(prompt, str):
        prompts = [prompt]
    elif not prompt:
        raise InvalidRequest("'prompt' must not be empty.", param="prompt")
    elif all(isinstance(p, str) for p in prompt):
        prompts = [str(p) for p in prompt]
    else:
        raise InvalidRequest(
            "Token arrays are not supported for 'prompt': send a string or a list of strings.",
            param="prompt",
        )
    if len(prompts) > settings.max_prompts:
        raise InvalidRequest(
            f"'prompt' may hold at most {settings.max_prompts} prompts.", param="prompt"
        )
    for i, p in enumerate(prompts):
        _check_unicode(p, "prompt" if isinstance(prompt, str) else f"prompt[{i}]")
    params = sampling_params(req, settings, req.max_tokens)
    return [
        ChoicePlan(
            index=pi * n + j,
            request=GenerationRequest(params=params, prompt=p),
            prompt_key=pi,
            echo=p if req.echo else "",
        )
        for pi, p in enumerate(prompts)
        for j in range(n)
    ]


def _check_unicode(text: str, param: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``), which no model can be fed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"Invalid value for '{param}': not valid Unicode (it holds a lone surrogate).",
            param=param,
        ) from None
    return text


def _message_text(msg_index: int, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for k, part in enumerate(content):
        if not isinstance(part, TextContentPart):
            raise InvalidRequest(
                f"Content parts of type '{part.type}' are not supported; only 'text'.",
                param=f"messages[{msg_index}].content[{k}]",
            )
        parts.append(part.text)
    return "".join(parts)


def plan_chat(req: CreateChatCompletionRequest, settings: Settings) -> list[ChoicePlan]:
    both = req.max_tokens is not None and req.max_completion_tokens is not None
    if both and req.max_tokens != req.max_completion_tokens:
        raise InvalidRequest(
            "Give 'max_tokens' or 'max_completion_tokens', not two different values.",
            param="max_tokens",
        )
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else (req.max_tokens)
    )
    _check_common(req, settings, max_tokens)
    if req.logprobs:
        raise _unsupported("logprobs", "the gpt4all backend does not expose token logprobs.")
    if req.top_logprobs is not None:
        raise _unsupported("top_logprobs", "the gpt4all backend does not expose logprobs.")
    if req.tools:
        raise _unsupported("tools", "tool calling is not available.")
    if req.functions:
        raise _unsupported("functions", "function calling is not available.")
    if req.tool_choice not in (None, "none", "auto"):
        raise _unsupported("tool_choice", "tool calling is not available.")
    if req.response_format is not None and req.response_format.type != "text":
        raise _unsupported(
            "response_format", f"'{req.response_format.type}' (structured output) is not available."
        )
    if req.modalities and any(m != "text" for m in req.modalities):
        raise _unsupported("modalities", "only text output is available.")
    if req.audio is not None:
        raise _unsupported("audio", "only text output is available.")
    turns: list[ChatTurn] = []
    for i, m in enumerate(req.messages):
        if m.role in ("tool", "function") or m.tool_calls or m.function_call:
            raise _unsupported(f"messages[{i}]", "tool and function messages need tool calling.")
        role = "system" if m.role == "developer" else m.role
        content = _check_unicode(_message_text(i, m.content), f"messages[{i}].content")
        name = _check_unicode(m.name, f"messages[{i}].name") if m.name else m.name
        turns.append(ChatTurn(role=role, content=content, name=name))
    params = sampling_params(req, settings, max_tokens)
    request = GenerationRequest(params=params, messages=tuple(turns))
    return [ChoicePlan(index=j, request=request, prompt_key=0) for j in range(req.n or 1)]


# --- running one choice ------------------------------------------------------------------


@dataclass(slots=True)
class ChoiceOutcome:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens the engine reused (usage.prompt_tokens_details)


async def run_choice(
    engine: Engine,
    request: GenerationRequest,
    on_text: Callable[[str], Awaitable[None] | None],
    on_start: Callable[[], Awaitable[None]] | None = None,
) -> ChoiceOutcome:
    """Generate one choice, passing text (stop strings removed) to ``on_text``.

    ``on_start`` runs when the engine's first event arrives, i.e. once the prompt was
    accepted: streamed responses send nothing before that, so errors can still be 400s.
    """
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
                    await _maybe_await(on_text(out))
                if matcher.stopped:
                    stop_event.set()
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
            await _maybe_await(on_text(tail))
    if matcher.stopped:
        # usage counts the tokens up to the one completing the stop string, so it does not
        # depend on how far the backend ran before it saw the stop signal
        return ChoiceOutcome(
            "stop", done.prompt_tokens, min(consumed, done.completion_tokens), done.cached_tokens
        )
    return ChoiceOutcome(
        done.finish_reason, done.prompt_tokens, done.completion_tokens, done.cached_tokens
    )


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


def _usage(
    prompt_tokens: dict[int, int], completion_tokens: int, cached_tokens: dict[int, int]
) -> dict[str, Any]:
    p = sum(prompt_tokens.values())
    return {
        "prompt_tokens": p,
        "completion_tokens": completion_tokens,
        "total_tokens": p + completion_tokens,
        # prompt tokens the engine did not evaluate again (counted in prompt_tokens too);
        # per prompt, those of its first choice, the one that paid for the prompt
        "prompt_tokens_details": {"cached_tokens": sum(cached_tokens.values())},
    }


def _new_id(kind: Kind) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex


# --- non-streamed ------------------------------------------------------------------------


async def _collect(engine: Engine, kind: Kind, model: str, plans: list[ChoicePlan]) -> dict:
    choices: list[dict[str, Any]] = []
    prompt_tokens: dict[int, int] = {}
    cached_tokens: dict[int, int] = {}
    completion_tokens = 0
    for plan in plans:
        pieces: list[str] = [plan.echo] if plan.echo else []
        outcome = await run_choice(engine, plan.request, pieces.append)
        prompt_tokens[plan.prompt_key] = outcome.prompt_tokens
        cached_tokens.setdefault(plan.prompt_key, outcome.cached_tokens)
        completion_tokens += outcome.completion_tokens
        text = "".join(pieces)
        if kind == "completion":
            choices.append(
                {
                    "text": text,
                    "index": plan.index,
                    "logprobs": None,
                    "finish_reason": outcome.finish_reason,
                }
            )
        else:
            choices.append(
                {
                    "index": plan.index,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": outcome.finish_reason,
                }
            )
    usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
    request_context.note_usage(usage["prompt_tokens"], usage["completion_tokens"])
    return {
        "id": _new_id(kind),
        "object": "text_completion" if kind == "completion" else "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


# --- streamed ----------------------------------------------------------------------------


class _Chunks:
    """Builds the SSE chunks of one streamed response (same id and created in each)."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.base = {
            "id": _new_id(kind),
            "object": "text_completion" if kind == "completion" else "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def text(self, index: int, text: str, finish: FinishReason | None = None) -> bytes:
        if self.kind == "completion":
            choice: dict[str, Any] = {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            # "content" is present in every delta: clients written for openai 0.28 index
            # delta["content"] on every chunk after the first.
            choice = {
                "index": index,
                "delta": {"content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        return sse_event({**self.base, "choices": [choice]})

    def role(self, index: int) -> bytes:
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return sse_event({**self.base, "choices": [choice]})

    def usage(self, usage: dict[str, Any]) -> bytes:
        return sse_event({**self.base, "choices": [], "usage": usage})


class _GenerationStream(StreamingResponse):
    """Runs ``cleanup`` (stop the generation, free the model) however the response ends,
    even when the body iterator never started because the client had already left."""

    def __init__(
        self, content: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


async def _stream_response(
    engine: Engine,
    kind: Kind,
    model: str,
    plans: list[ChoicePlan],
    include_usage: bool,
    release: Callable[[], None] = lambda: None,
    shutdown: ShutdownCoordinator | None = None,
) -> StreamingResponse:
    """Stream the choices as SSE; ``release`` (the model's admission slot) is called once
    the generation is over, however it ends."""
    # Every prompt after the first is checked up front, and the first one by waiting for
    # its first event: a prompt that does not fit is a 400 before any byte is sent.
    seen: set[int] = {plans[0].prompt_key}
    for plan in plans[1:]:
        if plan.prompt_key not in seen:
            seen.add(plan.prompt_key)
            await engine.check_prompt_fits(plan.request)

    chunks = _Chunks(kind, model)
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
    closing = False  # the consumer is gone: the producer must not wait on the queue

    async def produce() -> None:
        prompt_tokens: dict[int, int] = {}
        cached_tokens: dict[int, int] = {}
        completion_tokens = 0
        try:
            for plan in plans:

                async def start(plan: ChoicePlan = plan) -> None:
                    if kind == "chat":
                        await queue.put(chunks.role(plan.index))
                    if plan.echo:
                        await queue.put(chunks.text(plan.index, plan.echo))

                async def send(text: str, index: int = plan.index) -> None:
                    await queue.put(chunks.text(index, text))

                outcome = await run_choice(engine, plan.request, send, start)
                prompt_tokens[plan.prompt_key] = outcome.prompt_tokens
                cached_tokens.setdefault(plan.prompt_key, outcome.cached_tokens)
                completion_tokens += outcome.completion_tokens
                await queue.put(chunks.text(plan.index, "", outcome.finish_reason))
            usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
            request_context.note_usage(usage["prompt_tokens"], usage["completion_tokens"])
            if include_usage:
                await queue.put(chunks.usage(usage))
            await queue.put(None)
        except asyncio.CancelledError:
            if closing or shutdown is None or not shutdown.expired:
                raise
            await queue.put(ShuttingDown())  # grace period over: end the stream cleanly
        except Exception as exc:  # delivered to the consumer, which decides
            await queue.put(exc)
        finally:
            release()

    producer = asyncio.ensure_future(produce())
    if shutdown is not None:
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
                    yield _error_event(item)
                    break
                yield item
                item = await queue.get()
            yield DONE
        finally:
            await cleanup()

    return _GenerationStream(body(), cleanup)


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


# --- entry points --------------------------------------------------------------------------


async def respond(
    request: Request,
    engine: Engine,
    kind: Kind,
    model: str,
    plans: list[ChoicePlan],
    stream: bool,
    include_usage: bool,
) -> JSONResponse | StreamingResponse:
    state = request.app.state
    shutdown: ShutdownCoordinator | None = getattr(state, "shutdown", None)
    if shutdown is not None:
        shutdown.refuse_if_draining()
    request_context.note_generation(model, stream=stream)
    admission: Admission | None = getattr(state, "admission", None)

    async def admit() -> Slot | None:
        if admission is None:
            return None
        return await admission.admit(engine.model_id, engine.max_concurrency)

    if stream:
        slot = await until_disconnected(request, admit(), shutdown)
        release = slot.release if slot is not None else (lambda: None)
        try:
            return await _stream_response(
                engine, kind, model, plans, include_usage, release, shutdown
            )
        except BaseException:
            release()
            raise

    async def work() -> dict:
        slot = await admit()
        try:
            return await _collect(engine, kind, model, plans)
        finally:
            if slot is not None:
                slot.release()

    return JSONResponse(await until_disconnected(request, work(), shutdown))
