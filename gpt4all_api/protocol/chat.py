"""``/v1/chat/completions`` wire types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from gpt4all_api.protocol.common import (
    REQUEST_CONFIG,
    CompletionUsage,
    FinishReason,
    SamplingFields,
)


class TextContentPart(BaseModel):
    model_config = REQUEST_CONFIG

    type: Literal["text"]
    text: str


class OtherContentPart(BaseModel):
    """Image, audio, file or refusal parts: parsed so they can be refused with a clear 400."""

    model_config = REQUEST_CONFIG

    type: str


ContentPart = TextContentPart | OtherContentPart


class ChatMessage(BaseModel):
    model_config = REQUEST_CONFIG

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    tool_call_id: str | None = None


class ResponseFormat(BaseModel):
    model_config = REQUEST_CONFIG

    type: str


class CreateChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str = Field(min_length=1, max_length=512)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_tokens: int | None = Field(None, ge=0, description="Deprecated by OpenAI; still honoured.")
    max_completion_tokens: int | None = Field(None, ge=0)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None


class ChatCompletionResponseMessage(BaseModel):
    content: str | None
    refusal: None = None
    role: Literal["assistant"] = "assistant"


class ChatCompletionChoice(BaseModel):
    finish_reason: FinishReason
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


class ChatCompletionStreamDelta(BaseModel):
    content: str | None = None
    role: Literal["assistant"] | None = None


class ChatCompletionStreamChoice(BaseModel):
    delta: ChatCompletionStreamDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None
    index: int


class CreateChatCompletionStreamResponse(BaseModel):
    id: str
    choices: list[ChatCompletionStreamChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: CompletionUsage | None = None
