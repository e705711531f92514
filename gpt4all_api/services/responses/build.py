"""``Response`` objects: the in-progress shell echoing the request, and the finished one.

Streamed and non-streamed responses are finished by the same ``finish_response`` so both
report identical items, status and usage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpt4all_api.errors import APIError
from gpt4all_api.protocol.responses import (
    CreateResponseRequest,
    EchoedFunctionTool,
    EchoedTextConfig,
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputMessage,
    OutputText,
    Response,
    ResponseError,
    ResponseErrorCode,
    ResponseItemList,
    ResponseUsage,
    ToolChoiceFunction,
)
from gpt4all_api.response_store import InputItemPage, StoredResponse
from gpt4all_api.services.responses.translate import new_id

FinishReason = Literal["stop", "length", "tool_calls"]
OutputItem = OutputMessage | OutputFunctionCall


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made; ``call_id`` None: one is made up (``call_...``)."""

    name: str
    arguments: str
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """What a finished generation produced, whatever the backend."""

    text: str
    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  #: prompt tokens reused from the conversation cache
    tool_calls: tuple[ToolCall, ...] = ()


def start_response(
    request: CreateResponseRequest,
    *,
    model: str,
    temperature: float,
    top_p: float,
) -> Response:
    """The ``in_progress`` response echoing the request's settings (resolved sampling)."""
    choice = request.tool_choice
    tool_choice: str | dict[str, Any]
    if isinstance(choice, ToolChoiceFunction):
        tool_choice = {"type": "function", "name": choice.name}
    else:
        tool_choice = choice if isinstance(choice, str) else "auto"
    return Response(
        id=new_id("resp"),
        created_at=int(time.time()),
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=model,
        parallel_tool_calls=(
            request.parallel_tool_calls if request.parallel_tool_calls is not None else True
        ),
        previous_response_id=request.previous_response_id,
        store=request.store if request.store is not None else True,
        temperature=temperature,
        text=EchoedTextConfig(
            format=request.text_format().model_dump(mode="json", by_alias=True, exclude_none=True)
        ),
        tool_choice=tool_choice,
        tools=[
            EchoedFunctionTool(
                name=t.name, description=t.description, parameters=t.parameters, strict=t.strict
            )
            for t in request.function_tools()
        ],
        top_p=top_p,
        truncation=request.truncation or "disabled",
        user=request.user,
        metadata=request.metadata or {},
    )


def output_items(result: GenerationResult) -> list[OutputItem]:
    """The output items of a finished generation: its text (if any, or if there is nothing
    else), then one item per function call."""
    incomplete = result.finish_reason == "length"
    items: list[OutputItem] = []
    if result.text or not result.tool_calls:
        items.append(
            OutputMessage(
                id=new_id("msg"),
                content=[OutputText(text=result.text)],
                status="incomplete" if incomplete else "completed",
            )
        )
    for call in result.tool_calls:
        items.append(
            OutputFunctionCall(
                id=new_id("fc"),
                call_id=call.call_id or new_id("call"),
                name=call.name,
                arguments=call.arguments,
                status="incomplete" if incomplete else "completed",
            )
        )
    return items


def finish_response(
    base: Response,
    output: Sequence[OutputItem],
    *,
    finish_reason: FinishReason,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
) -> Response:
    """``completed``, or ``incomplete`` (max_output_tokens) when generation hit its limit."""
    incomplete = finish_reason == "length"
    return base.model_copy(
        update={
            "status": "incomplete" if incomplete else "completed",
            "completed_at": None if incomplete else int(time.time()),
            "incomplete_details": IncompleteDetails(reason="max_output_tokens")
            if incomplete
            else None,
            "output": list(output),
            "usage": ResponseUsage(
                input_tokens=input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
            ),
        }
    )


def complete_response(base: Response, result: GenerationResult) -> Response:
    """The finished non-streamed response for a generation result."""
    return finish_response(
        base,
        output_items(result),
        finish_reason=result.finish_reason,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cached_tokens=result.cached_tokens,
    )


def failed_response(
    base: Response,
    message: str,
    code: ResponseErrorCode = "server_error",
    output: Sequence[OutputItem] = (),
) -> Response:
    return base.model_copy(
        update={
            "status": "failed",
            "error": ResponseError(code=code, message=message),
            "output": list(output),
        }
    )


def stored_record(
    response: Response, input_items: list[dict[str, Any]], owner: str | None = None
) -> StoredResponse:
    """What to save for a finished response (when ``store`` is true), and whose it is."""
    return StoredResponse(
        id=response.id,
        created_at=response.created_at,
        model=response.model,
        response=response.to_json(),
        input_items=input_items,
        previous_response_id=response.previous_response_id,
        owner=owner,
    )


def item_list(page: InputItemPage) -> ResponseItemList:
    """A store page as ``ResponseItemList`` (the schema wants string ids: "" when empty)."""
    return ResponseItemList(
        data=page.data,
        first_id=page.first_id or "",
        last_id=page.last_id or "",
        has_more=page.has_more,
    )


def response_not_found(response_id: str, param: str | None = None) -> APIError:
    """404 in OpenAI's shape; ``param`` "previous_response_id" when continuing."""
    what = "Previous response" if param == "previous_response_id" else "Response"
    return APIError(
        f"{what} with id '{response_id}' not found.",
        param=param,
        code="response_not_found",
        status_code=404,
    )
