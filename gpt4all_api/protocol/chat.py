"""``/v1/chat/completions`` wire types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from gpt4all_api.protocol.common import (
    REQUEST_CONFIG,
    CompletionUsage,
    SamplingFields,
)
from gpt4all_api.protocol.strings import TextChecked

#: OpenAI: "a-z, A-Z, 0-9, underscores and dashes, with a maximum length of 64".
FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
ChatFinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class TextContentPart(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["text"]
    text: str


class OtherContentPart(BaseModel):
    """Image, audio, file or refusal parts: parsed so they can be refused with a clear 400."""

    model_config = REQUEST_CONFIG

    type: str


ContentPart = TextContentPart | OtherContentPart


class FunctionCall(BaseModel):
    """A call as the model made it: ``arguments`` is a JSON string (OpenAI's wire form)."""

    model_config = REQUEST_CONFIG

    name: str
    arguments: str


class ChatCompletionMessageToolCall(BaseModel):
    model_config = REQUEST_CONFIG

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """Any role's message; the role-specific rules (a ``tool`` message needs a
    ``tool_call_id`` answering an earlier call, ...) are checked by ``services.tools``."""

    model_config = REQUEST_CONFIG

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    function_call: FunctionCall | None = None
    tool_call_id: str | None = None


class FunctionObject(BaseModel):
    model_config = REQUEST_CONFIG

    description: str | None = None
    name: FunctionName
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON Schema object; omitted means no parameters."
    )
    strict: bool | None = Field(
        False, description="Accepted; CPU mode cannot constrain sampling (see README)."
    )


class ChatCompletionTool(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["function"]
    function: FunctionObject


class NamedFunction(BaseModel):
    model_config = REQUEST_CONFIG

    name: str


class ChatCompletionNamedToolChoice(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["function"]
    function: NamedFunction


ToolChoiceOption = Literal["none", "auto", "required"] | ChatCompletionNamedToolChoice


class ChatCompletionFunctions(BaseModel):
    """Deprecated ``functions`` entry, mapped onto tools."""

    model_config = REQUEST_CONFIG

    description: str | None = None
    name: FunctionName
    parameters: dict[str, Any] | None = None


class ChatCompletionFunctionCallOption(BaseModel):
    model_config = REQUEST_CONFIG

    name: str


class JsonSchemaFormat(BaseModel):
    model_config = REQUEST_CONFIG

    description: str | None = None
    name: FunctionName
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = False


class ResponseFormat(BaseModel):
    """``text``, ``json_object`` or ``json_schema`` (with ``json_schema``); the service
    refuses other types with a 400 naming ``response_format``."""

    model_config = REQUEST_CONFIG

    type: str
    json_schema: JsonSchemaFormat | None = None


class CreateChatCompletionRequest(SamplingFields, TextChecked):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str = Field(min_length=1, max_length=512)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # at least 1, as OpenAI: 0 would answer nothing (completions allow 0 for echo alone)
    max_tokens: int | None = Field(None, ge=1, description="Deprecated by OpenAI; still honoured.")
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: ToolChoiceOption | None = None
    parallel_tool_calls: bool | None = True
    functions: (
        Annotated[list[ChatCompletionFunctions], Field(min_length=1, max_length=128)] | None
    ) = None
    function_call: Literal["none", "auto"] | ChatCompletionFunctionCallOption | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None


class ChatCompletionResponseMessage(BaseModel):
    content: str | None
    refusal: None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    role: Literal["assistant"] = "assistant"
    function_call: FunctionCall | None = None


class ChatCompletionChoice(BaseModel):
    finish_reason: ChatFinishReason
    index: int
    message: ChatCompletionResponseMessage
    logprobs: None = None


class CreateChatCompletionResponse(BaseModel):
    id: str
    choices: list[ChatCompletionChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["chat.completion"] = "chat.completion"
    usage: CompletionUsage


class FunctionCallChunk(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ChatCompletionMessageToolCallChunk(BaseModel):
    """The first chunk of a call has ``id``, ``type`` and ``function.name``; later ones
    only ``index`` and ``function.arguments`` fragments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallChunk | None = None


class ChatCompletionStreamDelta(BaseModel):
    content: str | None = None
    function_call: FunctionCallChunk | None = None
    tool_calls: list[ChatCompletionMessageToolCallChunk] | None = None
    role: Literal["assistant"] | None = None


class ChatCompletionStreamChoice(BaseModel):
    delta: ChatCompletionStreamDelta
    logprobs: None = None
    finish_reason: ChatFinishReason | None = None
    index: int


class CreateChatCompletionStreamResponse(BaseModel):
    id: str
    choices: list[ChatCompletionStreamChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: CompletionUsage | None = None
