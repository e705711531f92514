"""Reading what we need from a GGUF header (architecture, context, chat template, tokens).

The bindings expose none of this, and fail silently on some bad files; reading the header
ourselves lets us describe models in ``/v1/models`` and reject broken files clearly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EMBEDDING_ARCHITECTURES = frozenset({"bert", "nomic-bert"})


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True, slots=True)
class GGUFMetadata:
    architecture: str
    name: str | None
    context_length: int | None
    chat_template: str | None
    bos_token: str
    eos_token: str
    file_size: int

    @property
    def is_embedding(self) -> bool:
        return self.architecture in EMBEDDING_ARCHITECTURES


def read_metadata(path: Path) -> GGUFMetadata:
    """The header fields the service uses; raises ``GGUFError`` for unreadable files.

    Uses the header probe of :mod:`gpt4all_api.model_files`, which skips the vocabulary
    arrays instead of decoding them (``GGUFReader`` took 1.9-2.8 s on SmolLM2's 49k-token
    vocabulary, i.e. most of every model load; the probe takes ~10 ms). It also refuses
    truncated files and unsupported GGUF versions.
    """
    from gpt4all_api.model_files import probe_gguf  # (it imports this module)

    s = probe_gguf(path)
    return GGUFMetadata(
        architecture=s.architecture,
        name=s.name,
        context_length=s.context_length,
        chat_template=s.chat_template,
        bos_token=s.bos_token,
        eos_token=s.eos_token,
        file_size=s.file_size,
    )
