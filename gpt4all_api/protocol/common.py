"""Types shared by completions and chat completions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Request models ignore fields they do not know (new OpenAI client versions add fields);
#: fields they know but cannot honour are rejected explicitly by the services.
REQUEST_CONFIG = ConfigDict(extra="ignore", populate_by_name=True)

#: Length beyond MAX_STOP_LENGTH (a setting, default 256) is refused by the service.
StopSequence = Annotated[str, Field(min_length=1, max_length=4096)]


class StreamOptions(BaseModel):
    model_config = REQUEST_CONFIG

    include_usage: bool = Field(
        False, description="Send a final chunk with usage and empty `choices` before [DONE]."
    )


class SamplingFields(BaseModel):
    """Sampling fields common to both endpoints, with gpt4all's extras at the end."""

    model_config = REQUEST_CONFIG

    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    # no upper bound here: the service refuses n over MAX_N with one message, whatever n is
    n: int | None = Field(
        1, ge=1, description="Choices to generate for each prompt (at most MAX_N, default 8)."
    )
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = Field(
        None, description="Accepted for compatibility; gpt4all has no seed (see README)."
    )
    stop: str | list[StopSequence] | None = Field(
        None, description="Up to 4 sequences where generation stops; never part of the text."
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = Field(None, description="Accepted and ignored.")
    prompt_cache_key: str | None = Field(
        None,
        description="Accepted. The server itself needs no key to reuse a prompt; a load "
        "balancer in front of several replicas (deploy/haproxy.cfg) routes by it, so that a "
        "conversation returns to the replica holding its context.",
    )
    # gpt4all extras
    top_k: int | None = Field(None, ge=0, le=100000, description="gpt4all: top-k sampling.")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="gpt4all: min-p sampling.")
    repeat_penalty: float | None = Field(
        None, ge=0.0, le=10.0, description="gpt4all: penalty for repeated tokens (1 = off)."
    )
    repeat_last_n: int | None = Field(
        None, ge=0, le=100000, description="gpt4all: window the repeat penalty looks at."
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, str) and not v:
            return None
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class PromptTokensDetails(BaseModel):
    """Breakdown of the prompt tokens (OpenAI's ``prompt_tokens_details``)."""

    cached_tokens: int = Field(
        0, description="Prompt tokens reused from the model's context, not evaluated again."
    )


class CompletionUsage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


FinishReason = Literal["stop", "length"]
