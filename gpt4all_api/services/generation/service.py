"""``GenerationService``: the one owner of a completions or chat request, from admission to
release.

Built once by ``create_app`` with its collaborators (the model registry, the admission
queues, the shutdown coordinator, the settings). For each request it runs, as one unit:

1. refuse if the server is draining (503);
2. plan the choices (validation: 400s before anything is held);
3. acquire the model from the registry (a lease: loaded on demand, never unloaded while
   held);
4. admit the request through the model's queue (a ticket: 429 when full), watching for the
   client leaving and for the end of the shutdown grace period while it waits;
5. generate: non-streamed, collect every choice and answer JSON; streamed, open the SSE
   stream (errors before its first event are still HTTP errors);
6. release: the ticket and the lease are closed by one ``AsyncExitStack``, either here when
   the request ends, or, for a stream, by the response once its body is over
   (``GenerationStream.hand_over``), however it ends.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gpt4all_api import request_context
from gpt4all_api.engines.base import Capability, Engine
from gpt4all_api.protocol.chat import CreateChatCompletionRequest
from gpt4all_api.protocol.completions import CreateCompletionRequest
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.services.admission import Admission, Ticket
from gpt4all_api.services.disconnect import until_disconnected
from gpt4all_api.services.generation.bodies import collect
from gpt4all_api.services.generation.planning import (
    ChoicePlan,
    Kind,
    include_usage,
    plan_chat,
    plan_completion,
)
from gpt4all_api.services.generation.streaming import open_stream
from gpt4all_api.settings import Settings
from gpt4all_api.shutdown import ShutdownCoordinator

_CAPABILITY: dict[Kind, Capability] = {"completion": "completions", "chat": "chat"}


class GenerationService:
    """Serves ``/v1/completions`` and ``/v1/chat/completions``."""

    def __init__(
        self,
        registry: ModelRegistry,
        admission: Admission,
        shutdown: ShutdownCoordinator,
        settings: Settings,
    ) -> None:
        self.registry = registry
        self.admission = admission
        self.shutdown = shutdown
        self.settings = settings

    async def complete(self, request: Request, body: CreateCompletionRequest) -> Response:
        self.shutdown.refuse_if_draining()
        plans = plan_completion(body, self.settings)
        return await self._serve(
            request, "completion", body.model, plans, bool(body.stream), include_usage(body)
        )

    async def chat(self, request: Request, body: CreateChatCompletionRequest) -> Response:
        self.shutdown.refuse_if_draining()
        plans = plan_chat(body, self.settings)
        return await self._serve(
            request, "chat", body.model, plans, bool(body.stream), include_usage(body)
        )

    async def _serve(
        self,
        request: Request,
        kind: Kind,
        model: str,
        plans: list[ChoicePlan],
        stream: bool,
        usage_chunk: bool,
    ) -> Response:
        async with AsyncExitStack() as held:
            engine = await held.enter_async_context(self.registry.acquire(model, _CAPABILITY[kind]))
            request_context.note_generation(engine.model_id, stream=stream)
            if not stream:
                body = await until_disconnected(
                    request, self._collect(engine, kind, plans), self.shutdown
                )
                return JSONResponse(body)
            ticket = await until_disconnected(request, self._admit(engine), self.shutdown)
            held.callback(ticket.release)
            response = await open_stream(
                engine,
                kind,
                engine.model_id,
                plans,
                usage_chunk,
                self.shutdown,
                on_generation_end=ticket.release,
            )
            # From here the response owns the ticket and the lease: it closes them when its
            # body is over (the ticket already when the generation ends).
            response.hand_over(held.pop_all())
            return response

    async def _admit(self, engine: Engine) -> Ticket:
        return await self.admission.admit(engine.model_id, engine.max_concurrency)

    async def _collect(self, engine: Engine, kind: Kind, plans: list[ChoicePlan]) -> dict:
        async with await self._admit(engine):
            return await collect(engine, kind, engine.model_id, plans)
