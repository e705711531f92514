"""The one place engines are built from settings: local GGUF files and the remote upstream.

Engine modules import only ``engines.base`` (and their own helpers); choosing among them
happens here, so no engine module needs to know the others exist.
"""

from __future__ import annotations

from gpt4all_api.engines.base import Engine
from gpt4all_api.engines.cpu_slots import CpuServing
from gpt4all_api.engines.embed import EmbeddingEngine
from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine
from gpt4all_api.engines.openai_upstream import OpenAiUpstreamEngine
from gpt4all_api.engines.remote import RemoteEngine
from gpt4all_api.engines.tgi import TgiEngine
from gpt4all_api.model_store.directory import LocalModel
from gpt4all_api.settings import Settings


class EngineFactory:
    """Builds engines (not started) with the settings they need."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def local(self, entry: LocalModel) -> Engine:
        """The engine for a GGUF file: an embedding or a chat/completion model."""
        s = self.settings
        if entry.capabilities.embeddings:
            return EmbeddingEngine(
                entry.id,
                entry.path,
                n_threads=s.embedding_n_threads,
                context_length=entry.summary.context_length if entry.summary else None,
            )
        return Gpt4AllEngine(
            entry.id,
            entry.path,
            n_ctx=s.n_ctx,
            n_batch=s.n_batch,
            n_threads=s.n_threads,
            allow_download=False,
            serving=CpuServing.from_settings(s),
        )

    def remote(self) -> RemoteEngine:
        """The engine for ``INFERENCE_MODE=gpu``, by ``GPU_BACKEND``."""
        if self.settings.gpu_backend == "openai":
            return OpenAiUpstreamEngine(self.settings)
        return TgiEngine(self.settings)
