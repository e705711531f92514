"""``/v1/completions`` wire types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from gpt4all_api.protocol.common import CompletionUsage, FinishReason, SamplingFields
from gpt4all_api.protocol.strings import TextChecked


class CreateCompletionRequest(SamplingFields, TextChecked):
    model: str = Field(min_length=1, max_length=512)
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string or a list of strings (token arrays are not supported)."
    )
    best_of: int | None = Field(None, ge=1, le=20)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(16, ge=0, description="OpenAI's default for completions: 16.")
    suffix: str | None = None


class CompletionChoice(BaseModel):
    finish_reason: FinishReason | None
    index: int
    logprobs: None = None
    text: str


class CreateCompletionResponse(BaseModel):
    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["text_completion"] = "text_completion"
    usage: Annotated[CompletionUsage | None, Field()] = None
