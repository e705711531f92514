"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gpt4all_api.protocol.chat import CreateChatCompletionRequest, CreateChatCompletionResponse
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.routers.deps import get_registry, get_settings
from gpt4all_api.services.generation import plan_chat, respond
from gpt4all_api.settings import Settings

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=CreateChatCompletionResponse,
    summary="Create a chat completion (streamed as SSE when stream is true)",
)
async def create_chat_completion(
    body: CreateChatCompletionRequest,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    registry: Annotated[ModelRegistry, Depends(get_registry)],
) -> JSONResponse | StreamingResponse:
    plans = plan_chat(body, settings)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # The lease holds the model (loaded on demand, never unloaded while held) until the
    # response is complete: for a stream, until its body ends.
    async with registry.acquire(body.model, "chat") as lease:
        engine = lease.engine
        response = await respond(
            request, engine, "chat", engine.model_id, plans, bool(body.stream), include_usage
        )
        return lease.keep_until_sent(response)
