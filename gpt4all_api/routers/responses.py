"""``/v1/responses``: create (streamed as SSE when ``stream`` is true), retrieve, delete,
and list a stored response's input items."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.responses import Response as HTTPResponse

from gpt4all_api.protocol.responses import (
    CreateResponseRequest,
    DeletedResponse,
    Response,
    ResponseItemList,
)
from gpt4all_api.routers.deps import get_caller, get_services
from gpt4all_api.wiring import AppServices

router = APIRouter(tags=["responses"])

Services = Annotated[AppServices, Depends(get_services)]
#: Stored responses belong to the API key that stored them.
Caller = Annotated[bytes | None, Depends(get_caller)]


@router.post(
    "/v1/responses",
    response_model=Response,
    summary="Create a response (streamed as SSE events when stream is true)",
)
async def create_response(
    body: CreateResponseRequest, request: Request, services: Services, caller: Caller
) -> HTTPResponse:
    return await services.responses.create(request, body, caller)


@router.get(
    "/v1/responses/{response_id}", response_model=Response, summary="Retrieve a stored response"
)
async def get_response(response_id: str, services: Services, caller: Caller) -> JSONResponse:
    return JSONResponse(await services.responses.retrieve(response_id, caller))


@router.delete(
    "/v1/responses/{response_id}",
    response_model=DeletedResponse,
    summary="Delete a stored response",
)
async def delete_response(response_id: str, services: Services, caller: Caller) -> DeletedResponse:
    return await services.responses.delete(response_id, caller)


@router.get(
    "/v1/responses/{response_id}/input_items",
    response_model=ResponseItemList,
    summary="List a stored response's input items",
)
async def list_input_items(
    response_id: str,
    services: Services,
    caller: Caller,
    after: Annotated[str | None, Query(description="List items after this item id.")] = None,
    before: Annotated[str | None, Query(description="List items before this item id.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (1-100).")] = 20,
    order: Annotated[Literal["asc", "desc"], Query(description="Item order.")] = "desc",
) -> ResponseItemList:
    return await services.responses.input_items(
        response_id, caller, after=after, before=before, limit=limit, order=order
    )
