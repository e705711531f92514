"""``POST /v1/completions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gpt4all_api.protocol.completions import CreateCompletionRequest, CreateCompletionResponse
from gpt4all_api.routers.deps import get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=CreateCompletionResponse,
    summary="Create a completion (streamed as SSE when stream is true)",
)
async def create_completion(
    body: CreateCompletionRequest,
    request: Request,
    services: Annotated[AppServices, Depends(get_services)],
) -> Response:
    return await services.generation.complete(request, body)
