"""``GET /health``: answers at once, even during a generation (no model call involved)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gpt4all_api.registry import ModelRegistry
from gpt4all_api.routers.deps import get_registry

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and model status")
async def health(
    request: Request, registry: Annotated[ModelRegistry, Depends(get_registry)]
) -> JSONResponse:
    models: dict[str, Any] = {}
    healthy = True
    for model_id in registry.ids:
        status = await registry.get(model_id).health()
        models[model_id] = status
        healthy = healthy and bool(status.get("loaded", False))
    shutdown = getattr(request.app.state, "shutdown", None)
    draining = shutdown is not None and shutdown.draining
    body = {
        "status": "shutting_down" if draining else "ok" if healthy else "unavailable",
        "models": models,
        "inference_mode": request.app.state.settings.inference_mode,
    }
    # 503 while shutting down: load balancers stop sending new requests here.
    return JSONResponse(body, status_code=200 if healthy and not draining else 503)
