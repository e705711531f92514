"""The embedding engine: a ``bert`` / ``nomic-bert`` GGUF run by gpt4all's ``Embed4All``.

Like the chat engine, each instance lives on its own ``ModelWorker`` thread (the bindings
are not thread-safe; separate instances on separate threads are fine). ``embed`` returns
the vectors (L2-normalised by the backend) and the real number of prompt tokens
(``return_dict=True``; special tokens such as [CLS]/[SEP] are not counted).

Long inputs: a text longer than the model's context (512 tokens for all-MiniLM-L6-v2) is
split into context-sized chunks whose embeddings are averaged and normalised again
(``long_text_mode="mean"``), so nothing is silently cut off; ``prompt_tokens`` counts every
token the model evaluated, including the few (8 measured) that overlap between consecutive
chunks.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt4all_api.engines.base import Capabilities, Event, GenerationRequest, ModelInfo
from gpt4all_api.engines.local import LocalEngine, ModelLoadError, check_loaded
from gpt4all_api.engines.worker import Job
from gpt4all_api.errors import APIError, InvalidRequest

logger = logging.getLogger(__name__)

# Embed4All warns (via ``warnings``) below 64 dimensions; requests get a clear 400 instead.
warnings.filterwarnings("ignore", message="Dimensionality .* less than", category=UserWarning)

_PROBE_TEXT = "probe"


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


def has_tokens(text: str) -> bool:
    """False for text the BERT tokenizer turns into no tokens at all.

    The backend then embeds garbage and miscounts tokens (measured: ``""`` and ``"\\u200b"``
    give a fixed junk vector and ~23 "tokens"), so such inputs are refused up front. BERT's
    basic tokenizer drops whitespace, control and format characters and U+FFFD.
    """
    return any(
        not c.isspace() and c != "\ufffd" and unicodedata.category(c) not in ("Cc", "Cf")
        for c in text
    )


class EmbeddingEngine(LocalEngine):
    """An embedding model served from a local GGUF file."""

    capabilities = Capabilities.for_kind(embedding=True)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        n_threads: int | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__(model_id, path)
        self.n_threads = n_threads
        self.context_length = context_length
        self.dimensions: int | None = None
        self.prefix: str | None = None  # None: the backend's default task prefix

    async def start(self) -> None:
        self._model, self.prefix, self.dimensions = await self._start_worker(self._load)
        logger.info(
            "loaded embedding model %s in %.2fs (%d dimensions)",
            self.model_id,
            self.load_seconds,
            self.dimensions,
        )

    def _load(self, _: Job) -> tuple[Any, str | None, int]:
        from gpt4all import Embed4All

        name = self.path.name
        try:
            model = Embed4All(
                name,
                model_path=str(self.path.parent),
                allow_download=False,
                device="cpu",
                n_threads=self.n_threads,
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load {name}: {exc}") from exc
        check_loaded(model, model.gpt4all.model.model, name)
        # gpt4all knows task prefixes for its catalog models (nomic: "search_document") and
        # refuses to guess for others: those embed the text as is.
        prefix: str | None = None
        try:
            try:
                vector = model.embed(_PROBE_TEXT, prefix=None)
            except Exception as exc:
                if "prefix" not in str(exc):
                    raise
                prefix = ""
                vector = model.embed(_PROBE_TEXT, prefix="")
        except Exception as exc:
            model.close()
            raise ModelLoadError(f"cannot embed with {name}: {exc}") from exc
        return model, prefix, len(vector)

    async def embed(self, texts: Sequence[str], dimensions: int | None = None) -> EmbeddingResult:
        """Embed ``texts`` (non-empty) in one backend call; cancelling stops it early."""
        if self._model is None:
            raise InvalidRequest(f"Model {self.model_id} is not loaded.", param="model")
        if dimensions == self.dimensions:
            dimensions = None
        if dimensions is not None and self.dimensions is not None and dimensions > self.dimensions:
            raise self._dimensions_error(dimensions)
        batch = list(texts)
        return await self.worker.run(lambda job: self._embed(job, batch, dimensions))

    def _embed(self, job: Job, texts: list[str], dimensions: int | None) -> EmbeddingResult:
        from gpt4all._pyllmodel import CancellationError

        def cancelled(*_: Any) -> bool:
            return job.cancelled.is_set()

        try:
            result = self._model.embed(
                texts,
                prefix=self.prefix,
                dimensionality=dimensions,
                long_text_mode="mean",
                return_dict=True,
                cancel_cb=cancelled,
            )
        except CancellationError as exc:
            raise APIError("Client disconnected.", status_code=499) from exc
        except (RuntimeError, ValueError) as exc:
            if dimensions is not None and "dimensionality" in str(exc):
                raise self._dimensions_error(dimensions) from exc
            raise
        return EmbeddingResult(result["embeddings"], int(result["n_prompt_tokens"]))

    def _dimensions_error(self, dimensions: int) -> InvalidRequest:
        return InvalidRequest(
            f"The model '{self.model_id}' cannot produce {dimensions}-dimensional embeddings "
            f"(it produces {self.dimensions}); omit 'dimensions' or set it to {self.dimensions}.",
            param="dimensions",
            code="unsupported_dimensions",
        )

    def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        raise InvalidRequest(
            f"The model '{self.model_id}' is an embedding model; use /v1/embeddings.",
            param="model",
            code="model_not_supported",
        )

    async def info(self) -> ModelInfo:
        created = int(self.path.stat().st_mtime) if self.path.exists() else 0
        return ModelInfo(
            id=self.model_id,
            created=created,
            extra={
                "capabilities": self.capabilities.names(),
                "context_length": self.context_length,
                "embedding_dimensions": self.dimensions,
                "loaded": self.loaded,
            },
        )
