"""Per-request facts (id, timings, tokens) shared by the middleware, services and logging.

The request-context middleware puts a ``RequestContext`` in a context variable for each
HTTP request; tasks started while serving it (stream producers, watchers) inherit the same
object, so the generation service can note tokens and the time to first token, and the
middleware reads them back for the access log line and the metrics. Outside a request
every helper here is a no-op.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float  # time.perf_counter() when the request arrived
    model: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None  # None: not known (yet), e.g. a stream dropped early
    completion_tokens: int = 0
    first_token_at: float | None = None
    decode_seconds: float = 0.0  # summed over choices: first token to end of generation
    decode_tokens: int = 0  # tokens generated after each choice's first
    queue_seconds: float | None = None

    @property
    def ttft(self) -> float | None:
        """Seconds from arrival to the first generated token (queue wait included)."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Decoding speed: tokens after each choice's first / the time they took."""
        if self.decode_tokens < 1 or self.decode_seconds <= 0:
            return None
        return self.decode_tokens / self.decode_seconds


_current: ContextVar[RequestContext | None] = ContextVar("gpt4all_api_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def begin(request_id: str) -> tuple[RequestContext, object]:
    """Start a request's context; returns it and a token for :func:`end`."""
    ctx = RequestContext(request_id=request_id, started=time.perf_counter())
    return ctx, _current.set(ctx)


def end(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def note_generation(model: str, *, stream: bool) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.model = model
        ctx.stream = stream


def note_first_token() -> float:
    """Record the first generated token of the request (the first call wins)."""
    now = time.perf_counter()
    ctx = _current.get()
    if ctx is not None and ctx.first_token_at is None:
        ctx.first_token_at = now
    return now


def note_decode(seconds: float, tokens_after_first: int) -> None:
    ctx = _current.get()
    if ctx is not None and seconds > 0 and tokens_after_first > 0:
        ctx.decode_seconds += seconds
        ctx.decode_tokens += tokens_after_first


def note_tokens(n: int) -> None:
    """Tokens as they are generated (a cut-off response still reports what it produced)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.completion_tokens += n


def note_prompt_tokens(n: int) -> None:
    """The prompt's tokens as soon as the engine has evaluated it, so a request that ends
    before its usage is known (a client that drops a stream) still logs them. The first
    prompt's count: ``note_usage`` replaces it with the request's total."""
    ctx = _current.get()
    if ctx is not None and ctx.prompt_tokens is None:
        ctx.prompt_tokens = n


def note_usage(prompt_tokens: int, completion_tokens: int) -> None:
    """The response's final usage (replaces the running count)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.prompt_tokens = prompt_tokens
        ctx.completion_tokens = completion_tokens


def note_queue_wait(seconds: float) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.queue_seconds = (ctx.queue_seconds or 0.0) + seconds
