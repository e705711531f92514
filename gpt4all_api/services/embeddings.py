"""``/v1/embeddings`` on top of an embedding engine: input checks, encoding, usage.

Inputs are checked before any model is touched: token arrays are refused, and so are
empty texts (OpenAI refuses them too; the backend would embed junk for them). Token ids
only mean something to the tokenizer that made them: clients send ids of OpenAI's tiktoken
(LangChain's ``OpenAIEmbeddings`` does by default), which this server's models do not use
and cannot decode, so embedding them would be silently wrong. The 400 says how to send
text instead. ``base64`` is little-endian float32, byte for byte
what OpenAI sends, so ``numpy.frombuffer(base64.b64decode(s), dtype="<f4")`` round-trips
and equals the ``float`` output exactly.
"""

from __future__ import annotations

import base64
import logging
import sys
from array import array
from typing import Any, Protocol, cast

from fastapi import Request

from gpt4all_api.engines.embed import EmbeddingResult, has_tokens
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.embeddings import CreateEmbeddingRequest
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.services.admission import Admission
from gpt4all_api.services.disconnect import until_disconnected
from gpt4all_api.settings import Settings
from gpt4all_api.shutdown import ShutdownCoordinator

logger = logging.getLogger(__name__)


#: The 400 for token arrays; LangChain's default sends them, so say how to stop it.
TOKEN_ARRAYS_REFUSED = (
    "Token arrays are not supported for 'input': send a string or a list of strings (this "
    "server tokenizes with the embedding model's own tokenizer; ids of another tokenizer, "
    "such as OpenAI's tiktoken, cannot be decoded). LangChain's OpenAIEmbeddings sends "
    "tiktoken ids by default: create it with check_embedding_ctx_length=False to send "
    "text, e.g. OpenAIEmbeddings(model=..., base_url=..., "
    "check_embedding_ctx_length=False)."
)


class Embedder(Protocol):
    model_id: str
    max_concurrency: int | None

    async def embed(self, texts: list[str], dimensions: int | None = None) -> EmbeddingResult: ...


def embedding_inputs(body: CreateEmbeddingRequest, settings: Settings) -> list[str]:
    """The texts to embed, or a 400 naming the offending input."""
    raw = body.input
    texts: list[str]
    if isinstance(raw, str):
        texts = [raw]
        where = ["input"]
    else:
        if not raw:
            raise InvalidRequest("'input' must not be an empty list.", param="input")
        if not all(isinstance(t, str) for t in raw):
            raise InvalidRequest(TOKEN_ARRAYS_REFUSED, param="input")
        texts = [str(t) for t in raw]
        where = [f"input[{i}]" for i in range(len(texts))]
    if len(texts) > settings.max_embedding_inputs:
        raise InvalidRequest(
            f"'input' may hold at most {settings.max_embedding_inputs} texts.", param="input"
        )
    for text, param in zip(texts, where, strict=True):
        if not has_tokens(text):
            what = "an empty string" if not text else "only whitespace or control characters"
            raise InvalidRequest(f"'{param}' is {what}: there is nothing to embed.", param=param)
    return texts


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """float32 values either way (the backend computes in float32); ``array`` rather than
    numpy, which would cost the server ~9 MB of RSS for this alone."""
    values = array("f", vector)
    if encoding_format == "base64":
        if sys.byteorder != "little":
            values.byteswap()
        return base64.b64encode(values.tobytes()).decode("ascii")
    return values.tolist()


def embedding_response(model: str, result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v, encoding_format)}
            for i, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


class EmbeddingService:
    """Serves ``/v1/embeddings``: the model's lease and admission ticket for the request,
    under the same queue (MAX_QUEUE, QUEUE_TIMEOUT) and shutdown rules as generation; the
    client leaving cancels the work (between backend batches)."""

    def __init__(
        self,
        registry: ModelRegistry,
        admission: Admission,
        shutdown: ShutdownCoordinator,
        settings: Settings,
    ) -> None:
        self.registry = registry
        self.admission = admission
        self.shutdown = shutdown
        self.settings = settings

    async def create(self, request: Request, body: CreateEmbeddingRequest) -> dict[str, Any]:
        self.shutdown.refuse_if_draining()
        texts = embedding_inputs(body, self.settings)
        async with self.registry.acquire(body.model, "embeddings") as engine:
            embedder = cast(Embedder, engine)

            async def work() -> EmbeddingResult:
                async with await self.admission.admit(engine.model_id, engine.max_concurrency):
                    return await embedder.embed(texts, body.dimensions)

            result = await until_disconnected(request, work(), self.shutdown)
        return embedding_response(engine.model_id, result, body.encoding_format)
