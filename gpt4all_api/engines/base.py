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

from gpt4all_api.structured import OutputConstraint

FinishReason = Literal["stop", "length"]

#: What a model can be used for; one name per endpoint family. Requests name the one they
#: need (``ModelRegistry.acquire``), so a misspelt capability is a type error, not a 500.
Capability = Literal["completions", "chat", "embeddings"]
CAPABILITY_NAMES: tuple[Capability, ...] = ("completions", "chat", "embeddings")


@dataclass(frozen=True, slots=True)
class Capabilities:
    completions: bool = True
    chat: bool = True
    embeddings: bool = False

    @classmethod
    def for_kind(cls, embedding: bool) -> Capabilities:
        """A text-generation model (completions and chat) or an embedding model."""
        return cls(completions=not embedding, chat=not embedding, embeddings=embedding)

    def supports(self, capability: Capability) -> bool:
        return bool(getattr(self, capability))

    def names(self) -> list[Capability]:
        """The capabilities as ``/v1/models`` lists them."""
        return [name for name in CAPABILITY_NAMES if self.supports(name)]


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
class ToolCallPart:
    """A call in the history (an assistant turn's ``tool_calls``); ``arguments`` is the
    JSON string the client sent."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str  # system, user, assistant or tool (developer -> system, function -> tool)
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCallPart, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One callable function (from ``tools`` or the legacy ``functions``).

    ``parameters`` is a JSON Schema object (``{"type": "object", ...}``; an empty-object
    schema when the client gave none)."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``mode`` none / auto / required, or ``named`` with ``name`` the forced function."""

    mode: Literal["none", "auto", "required", "named"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either a raw ``prompt`` (completions) or ``messages`` (chat), never both.

    ``tools`` is empty when the request has none or ``tool_choice`` is none (tools are then
    not even shown to the model). ``response_format`` is the client's object
    (``{"type": "json_object"}`` / ``{"type": "json_schema", "json_schema": {...}}``), None
    for plain text; engines that cannot honour it refuse it before the first event.
    """

    params: SamplingParams
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    #: What the reply must be, for engines that hold it there themselves (CPU): a JSON
    #: value (``response_format``) or one call of an allowed tool (``required``/named).
    #: None in GPU mode, where the upstream gets ``response_format`` and ``tool_choice``.
    constraint: OutputConstraint | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """Text of ``tokens`` generated tokens (usually one; text may be empty while a UTF-8
    sequence is incomplete). The service counts them to report exact usage when a stop
    sequence ends generation while the backend has already run ahead."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call parsed by the backend itself (TGI, an OpenAI upstream).

    Engines whose ``parses_tool_calls`` is False (the CPU engine) never yield these: they
    yield the model's raw text as ``Token``s and the service parses it. ``arguments`` is
    a JSON string; ``id`` the upstream's (the service assigns one when empty)."""

    index: int
    id: str
    name: str
    arguments: str
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens not evaluated again because the model's context already held them
    #: (OpenAI's ``usage.prompt_tokens_details.cached_tokens``; part of ``prompt_tokens``).
    cached_tokens: int = 0


Event = Token | ToolCall | Done


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
    #: Seconds the last ``start()`` took (local models), for /metrics.
    load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        """Whether the engine can serve now (weights loaded, upstream answering)."""
        return True

    #: True: the backend parses tool calls and yields ``ToolCall`` events; False: it yields
    #: raw text and ``services.tools`` parses calls out of it.
    parses_tool_calls: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections (called once, in the lifespan)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model / close connections."""

    @abstractmethod
    def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        """Yield ``Token``s (and ``ToolCall``s where ``parses_tool_calls``) then one ``Done``.

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

    def slots_info(self) -> dict[str, Any] | None:
        """Model instances, their use and prompt reuse (CPU chat models), read without
        blocking (for /metrics at scrape time); None where the engine has no slots."""
        return None

    async def info(self) -> ModelInfo:
        return ModelInfo(id=self.model_id, created=0)
