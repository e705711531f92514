"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gpt4all_api.protocol.chat import CreateChatCompletionRequest, CreateChatCompletionResponse
from gpt4all_api.routers.deps import get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=CreateChatCompletionResponse,
    summary="Create a chat completion (streamed as SSE when stream is true)",
)
async def create_chat_completion(
    body: CreateChatCompletionRequest,
    request: Request,
    services: Annotated[AppServices, Depends(get_services)],
) -> Response:
    return await services.generation.chat(request, body)
