"""The engine interface: what the services need from a backend, nothing more.

An engine streams ``Token``s and ends with exactly one ``Done`` carrying the backend's own
token counts and why generation ended. Stop sequences, ``n``, ``echo`` and the OpenAI
response shapes are handled once, in ``services.generation``, for every engine.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    completions: bool = True
    chat: bool = True
    embeddings: bool = False


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Resolved sampling settings (request values over configured defaults)."""

    max_tokens: int | None  # None: until end of turn or the context is full
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either a raw ``prompt`` (completions) or ``messages`` (chat), never both."""

    params: SamplingParams
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """Text of ``tokens`` generated tokens (usually one; text may be empty while a UTF-8
    sequence is incomplete). The service counts them to report exact usage when a stop
    sequence ends generation while the backend has already run ahead."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens not evaluated again because the model's context already held them
    #: (OpenAI's ``usage.prompt_tokens_details.cached_tokens``; part of ``prompt_tokens``).
    cached_tokens: int = 0


Event = Token | Done


@dataclass(slots=True)
class ModelInfo:
    """What ``/v1/models`` reports about a served model."""

    id: str
    created: int
    owned_by: str = "gpt4all-api"
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """One served model. Implementations must never block the event loop."""

    model_id: str
    capabilities: Capabilities = Capabilities()
    context_length: int | None = None
    #: Requests served at once; more wait in the admission queue (MAX_QUEUE, QUEUE_TIMEOUT).
    #: None: no limit here, for upstreams that queue and batch themselves (TGI).
    max_concurrency: int | None = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections (called once, in the lifespan)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model / close connections."""

    @abstractmethod
    def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        """Yield ``Token``s then one ``Done``.

        Setting ``stop`` ends generation early but still yields the final ``Done`` (with
        ``finish_reason`` "stop" and the real counts): that is how stop sequences end it.
        Closing the iterator early abandons the generation (client gone) and frees the model.
        Raises ``errors.APIError`` (e.g. ``ContextLengthExceeded``) before the first event
        when the request cannot be served.
        """

    def implicit_stops(self, request: GenerationRequest) -> tuple[str, ...]:
        """Strings that end generation besides the request's ``stop`` (e.g. end of turn)."""
        return ()

    async def check_prompt_fits(self, request: GenerationRequest) -> None:  # noqa: B027
        """Raise ``ContextLengthExceeded`` if the prompt cannot fit; cheap where possible."""

    async def health(self) -> dict[str, Any]:
        return {"loaded": True}

    async def info(self) -> ModelInfo:
        return ModelInfo(id=self.model_id, created=0)
