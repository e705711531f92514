"""Reading what we need from a GGUF header (architecture, context, chat template, tokens).

The bindings expose none of this, and fail silently on some bad files; reading the header
ourselves lets us describe models in ``/v1/models`` and reject broken files clearly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFReader

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


def _scalar(reader: GGUFReader, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:
        return None


def _token_text(reader: GGUFReader, token_id: Any) -> str:
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None or not isinstance(token_id, int) or not 0 <= token_id < len(field.data):
        return ""
    return bytes(field.parts[field.data[token_id]]).decode("utf-8", errors="replace")


def read_metadata(path: Path) -> GGUFMetadata:
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise GGUFError(f"{path.name} is not a GGUF file")
        reader = GGUFReader(path, "r")
    except GGUFError:
        raise
    except Exception as exc:
        raise GGUFError(f"{path.name} is not a readable GGUF file: {exc}") from exc
    arch = _scalar(reader, "general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(f"{path.name} has no general.architecture")
    ctx = _scalar(reader, f"{arch}.context_length")
    return GGUFMetadata(
        architecture=arch,
        name=_scalar(reader, "general.name"),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        chat_template=_scalar(reader, "tokenizer.chat_template"),
        bos_token=_token_text(reader, _scalar(reader, "tokenizer.ggml.bos_token_id")),
        eos_token=_token_text(reader, _scalar(reader, "tokenizer.ggml.eos_token_id")),
        file_size=path.stat().st_size,
    )
