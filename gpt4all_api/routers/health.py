"""``GET /health``: liveness and model status (see ``services.health``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gpt4all_api.routers.deps import get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and model status")
async def health(services: Annotated[AppServices, Depends(get_services)]) -> JSONResponse:
    body, status = await services.health.status()
    return JSONResponse(body, status_code=status)
