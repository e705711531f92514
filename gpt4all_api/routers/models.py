"""``GET /v1/models`` and ``GET /v1/models/{model}``.

Every usable model is listed: the GGUF files in MODELS_DIR (chat/completion and embedding
models, loaded or not) and, with ALLOW_DOWNLOAD, configured models still to be fetched.
Extra fields say what each can do: ``capabilities``, ``context_length``,
``architecture``, ``size_bytes``, ``loaded``, ``in_use``, ``source``. Files that cannot be
served (corrupt, truncated, unsupported) are left out, with a warning in the log; naming
one in a request gives 400 ``model_load_failed`` with the reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from gpt4all_api.engines.base import ModelInfo
from gpt4all_api.protocol.models import ListModelsResponse, Model
from gpt4all_api.routers.deps import get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["models"])


def _model(info: ModelInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": info.owned_by,
        **info.extra,
    }


@router.get("/v1/models", response_model=ListModelsResponse, summary="List the served models")
async def list_models(services: Annotated[AppServices, Depends(get_services)]) -> dict:
    return {"object": "list", "data": [_model(i) for i in await services.listing.infos()]}


@router.get("/v1/models/{model:path}", response_model=Model, summary="Describe one model")
async def get_model(model: str, services: Annotated[AppServices, Depends(get_services)]) -> dict:
    return _model(await services.listing.info(model))
