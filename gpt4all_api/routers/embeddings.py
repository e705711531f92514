"""``POST /v1/embeddings``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gpt4all_api.protocol.embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.routers.deps import get_registry, get_settings
from gpt4all_api.services.embeddings import create_embeddings, embedding_inputs
from gpt4all_api.settings import Settings

router = APIRouter(tags=["embeddings"])


@router.post(
    "/v1/embeddings",
    response_model=CreateEmbeddingResponse,
    summary="Create embeddings (float or base64; long texts are chunked and averaged)",
)
async def create_embedding(
    body: CreateEmbeddingRequest,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    registry: Annotated[ModelRegistry, Depends(get_registry)],
) -> JSONResponse:
    texts = embedding_inputs(body, settings)
    async with registry.acquire(body.model, "embeddings") as lease:
        result = await create_embeddings(request, lease.engine, body, texts)  # type: ignore[arg-type]
    return JSONResponse(result)
