"""``/v1/embeddings`` wire types (OpenAI's ``CreateEmbeddingRequest`` / ``...Response``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gpt4all_api.protocol.common import REQUEST_CONFIG
from gpt4all_api.protocol.strings import TextChecked


class CreateEmbeddingRequest(TextChecked):
    model_config = REQUEST_CONFIG

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string or a list of strings to embed (token arrays are not supported: "
        "with LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False). Texts "
        "longer than the model's context are split into chunks whose embeddings are averaged.",
        examples=["The quick brown fox jumped over the lazy dog"],
    )
    model: str = Field(min_length=1, max_length=512, examples=["all-MiniLM-L6-v2.f16"])
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="float: lists of numbers; base64: each vector as little-endian float32 "
        "bytes, base64-encoded (what the openai Python client asks for by default).",
    )
    dimensions: int | None = Field(
        None, ge=1, description="Output dimensions; only models trained for it can shorten."
    )
    user: str | None = Field(None, description="Accepted and ignored.")


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage
