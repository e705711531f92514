"""The Responses API's serving logic without HTTP: input translation, ``Response`` building,
the streamed event sequence. Routes and the generation wiring call these."""

from gpt4all_api.services.responses.build import (
    FinishReason,
    GenerationResult,
    ToolCall,
    complete_response,
    failed_response,
    finish_response,
    item_list,
    output_items,
    response_not_found,
    start_response,
    stored_record,
)
from gpt4all_api.services.responses.events import ResponseEvents, sse_frame
from gpt4all_api.services.responses.translate import (
    chat_messages,
    chat_request,
    input_item_resources,
    new_id,
)

__all__ = [
    "FinishReason",
    "GenerationResult",
    "ResponseEvents",
    "ToolCall",
    "chat_messages",
    "chat_request",
    "complete_response",
    "failed_response",
    "finish_response",
    "input_item_resources",
    "item_list",
    "new_id",
    "output_items",
    "response_not_found",
    "sse_frame",
    "start_response",
    "stored_record",
]
