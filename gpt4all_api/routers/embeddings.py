"""``POST /v1/embeddings``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gpt4all_api.protocol.embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse
from gpt4all_api.routers.deps import get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["embeddings"])


@router.post(
    "/v1/embeddings",
    response_model=CreateEmbeddingResponse,
    summary="Create embeddings (float or base64; long texts are chunked and averaged)",
)
async def create_embedding(
    body: CreateEmbeddingRequest,
    request: Request,
    services: Annotated[AppServices, Depends(get_services)],
) -> JSONResponse:
    return JSONResponse(await services.embeddings.create(request, body))
