"""Responses API input -> the chat machinery's input, and request input -> stored items.

Input items are first normalised into the item resources ``input_items`` lists and the store
keeps (every item with an id, one shape per kind); stored history and new input then go
through one translation into chat-completions messages. Chat messages are the hand-off
because they already carry what tool calling needs (an assistant message with
``tool_calls``, a ``tool`` message with ``tool_call_id``), so a response is served by the
same chat path, tools included.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import (
    ChatCompletionMessageToolCall,
    ChatMessage,
    CreateChatCompletionRequest,
)
from gpt4all_api.protocol.responses import (
    CreateResponseRequest,
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputTextPart,
    MessageItem,
    OutputTextPart,
    RefusalPart,
    ToolChoiceFunction,
)

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    """An OpenAI-style id: ``resp_``, ``msg_``, ``fc_``, ``call_`` + 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def _part_text(part: Any) -> str:
    if isinstance(part, InputTextPart | OutputTextPart):
        return part.text
    if isinstance(part, RefusalPart):
        return part.refusal
    raise InvalidRequest(f"Content of type '{part.type}' is not supported.")  # validated before


def _text(content: str | list[Any]) -> str:
    return content if isinstance(content, str) else "".join(_part_text(p) for p in content)


def input_item_resources(request: CreateResponseRequest) -> list[Item]:
    """The request's ``input`` as stored items, in the official item resource shapes.

    Call after ``validate_request``. Ids a client sent with its items are kept (when unique),
    so output items fed back keep theirs; the rest get new ones.
    """
    items = request.input
    if isinstance(items, str):
        items = [MessageItem(role="user", content=items)]
    out: list[Item] = []
    seen: set[str] = set()

    def item_id(given: str | None, prefix: str) -> str:
        value = given if given and given not in seen else new_id(prefix)
        seen.add(value)
        return value

    for item in items:
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                content: list[Item] = []
                for part in [item.content] if isinstance(item.content, str) else item.content:
                    if isinstance(part, RefusalPart):
                        content.append({"type": "refusal", "refusal": part.refusal})
                    else:
                        text = part if isinstance(part, str) else _part_text(part)
                        content.append(
                            {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                        )
            else:
                texts = [item.content] if isinstance(item.content, str) else item.content
                content = [
                    {"type": "input_text", "text": t if isinstance(t, str) else _part_text(t)}
                    for t in texts
                ]
            out.append(
                {
                    "id": item_id(item.id, "msg"),
                    "type": "message",
                    "role": item.role,
                    "status": "completed",
                    "content": content,
                }
            )
        elif isinstance(item, FunctionCallItem):
            out.append(
                {
                    "id": item_id(item.id, "fc"),
                    "type": "function_call",
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                    "status": "completed",
                }
            )
        elif isinstance(item, FunctionCallOutputItem):
            out.append(
                {
                    "id": item_id(item.id, "fco"),
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": _text(item.output),
                    "status": "completed",
                }
            )
    return out


def _content_text(item: Item) -> str:
    content = item.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", p.get("refusal", ""))) for p in content)


def chat_messages(
    *,
    instructions: str | None,
    history: Sequence[Item],
    input_items: Sequence[Item],
) -> list[ChatMessage]:
    """Instructions, the stored history (``ResponseStore.history``) and this request's items
    (``input_item_resources``) as chat-completions messages.

    Consecutive function calls become one assistant message with several ``tool_calls``
    (joined to the assistant text right before them); outputs become ``tool`` messages.
    An output whose ``call_id`` matches no earlier call is a 400 naming the input item.
    """
    messages: list[ChatMessage] = []
    if instructions:
        messages.append(ChatMessage(role="developer", content=instructions))
    calls: set[str] = set()
    offset = len(history)
    for n, item in enumerate([*history, *input_items]):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(ChatMessage(role=item["role"], content=_content_text(item)))
        elif kind == "function_call":
            call = ChatCompletionMessageToolCall.model_validate(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
            calls.add(item["call_id"])
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                where = f"input[{n - offset}].call_id" if n >= offset else "previous_response_id"
                raise InvalidRequest(
                    f"No function call with call_id '{item['call_id']}' precedes this "
                    "function_call_output.",
                    param=where,
                )
            messages.append(
                ChatMessage(role="tool", tool_call_id=item["call_id"], content=item["output"])
            )
    return messages


def chat_request(
    request: CreateResponseRequest, messages: list[ChatMessage]
) -> CreateChatCompletionRequest:
    """The chat completion that serves this response: same sampling, tools and format."""
    tools = [
        {
            "type": "function",
            "function": {
                k: v
                for k, v in {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "strict": t.strict,
                }.items()
                if v is not None
            },
        }
        for t in request.function_tools()
    ]
    choice = request.tool_choice
    tool_choice: str | dict[str, Any] | None
    if isinstance(choice, ToolChoiceFunction):
        tool_choice = {"type": "function", "function": {"name": choice.name}}
    else:
        tool_choice = choice if isinstance(choice, str) else None
    fmt = request.text_format()
    response_format: dict[str, Any] | None = None
    if isinstance(fmt, FormatJsonObject):
        response_format = {"type": "json_object"}
    elif isinstance(fmt, FormatJsonSchema):
        schema = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.description is not None:
            schema["description"] = fmt.description
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        response_format = {"type": "json_schema", "json_schema": schema}
    return CreateChatCompletionRequest.model_validate(
        {
            "model": request.model,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "max_completion_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": bool(request.stream),
            "user": request.user,
            "tools": tools or None,
            "tool_choice": tool_choice if tools or tool_choice == "none" else None,
            "parallel_tool_calls": request.parallel_tool_calls if tools else None,
            "response_format": response_format,
        }
    )
