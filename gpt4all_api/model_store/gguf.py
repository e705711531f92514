"""GGUF header probing: what a model file is, and whether gpt4all 2.8.2 can load it.

:func:`probe_gguf` is a small GGUF parser that skips arrays instead of decoding them:
``gguf.GGUFReader`` takes ~3 s on a 49k-token vocabulary, this takes milliseconds. It also
catches what the bindings fail on silently or crash on: truncated files (tensor data past
the end of the file), not a GGUF at all, unsupported GGUF versions, architectures and
tensor types.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Architectures gpt4all 2.8.2's llama.cpp accepts (see the facts sheet).
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "llama", "falcon", "gpt2", "gptneox", "mpt", "baichuan", "starcoder", "refact",
        "bert", "nomic-bert", "bloom", "stablelm", "qwen", "qwen2", "qwen2moe", "phi2",
        "phi3", "codeshell", "orion", "internlm2", "gemma", "gemma2", "starcoder2",
        "xverse", "command-r", "olmo", "openelm", "deepseek2", "chatglm", "jais",
    }
)  # fmt: skip

#: GGML tensor types up to BF16 (30); later ones (TQ1_0, TQ2_0, MXFP4, ...) postdate it.
_MAX_TENSOR_TYPE = 30
# (block size, bytes per block) of each GGML tensor type gpt4all can have, by type id.
_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
}  # fmt: skip
# GGUF metadata value types: fixed sizes (8 = string, 9 = array are variable).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip


EMBEDDING_ARCHITECTURES = frozenset({"bert", "nomic-bert"})


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True, slots=True)
class GGUFSummary:
    """What the header says about a model file (all a listing needs)."""

    architecture: str
    name: str | None
    context_length: int | None
    embedding_length: int | None
    version: int
    tensor_count: int
    file_size: int
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    #: Ids of control, unknown and unused tokens (end of turn, role markers): never text.
    control_tokens: frozenset[int] = frozenset()

    @property
    def is_embedding(self) -> bool:
        return self.architecture in EMBEDDING_ARCHITECTURES


class _Corrupt(ValueError):
    """The header's structure is inconsistent (reported with the file name)."""


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self, keep: bool = True) -> str | None:
        n = self.take("<Q")
        if self.pos + n > self.size:
            raise _Corrupt("a string runs past the end of the file")
        start, self.pos = self.pos, self.pos + n
        return bytes(self.buf[start : self.pos]).decode("utf-8", errors="replace") if keep else None

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == 8:
            return self.string(keep)
        if vtype == 9:
            itype, n = self.take("<I"), self.take("<Q")
            if itype in _SCALAR:
                self.pos += n * struct.calcsize(_SCALAR[itype])
            elif itype == 8:
                for _ in range(n):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
            else:  # arrays of arrays are legal but unused by model files
                for _ in range(n):
                    self.value(itype, False)
            if self.pos > self.size:
                raise _Corrupt("an array runs past the end of the file")
            return None
        raise _Corrupt(f"unknown metadata value type {vtype}")


def _parse(buf: Any, size: int, name: str) -> GGUFSummary:
    cur = _Cursor(buf, size)
    cur.pos = 4  # after the magic
    version = cur.take("<I")
    if version not in (2, 3):
        raise GGUFError(f"{name} has GGUF version {version}; the backend reads versions 2 and 3")
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise GGUFError(f"{name} has an implausible header (corrupt file)")
    kv: dict[str, Any] = {}
    tokens_at: tuple[int, int] | None = None  # (offset of the first string, count)
    types_at: tuple[int, int] | None = None  # (offset of the int32 token types, count)
    for _ in range(n_kv):
        key = cur.string() or ""
        vtype = cur.take("<I")
        if key == "tokenizer.ggml.tokens" and vtype == 9:
            itype, n = struct.unpack_from("<IQ", cur.buf, cur.pos)
            if itype == 8:
                tokens_at = (cur.pos + 12, n)
        if key == "tokenizer.ggml.token_type" and vtype == 9:
            itype, n = struct.unpack_from("<IQ", cur.buf, cur.pos)
            if itype == 5 and cur.pos + 12 + 4 * n <= size:
                types_at = (cur.pos + 12, n)
        kv[key] = cur.value(vtype, keep=True)
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{name} has no general.architecture")
    alignment = kv.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFError(f"{name} has an invalid general.alignment")
    data_needed = 0
    for _ in range(n_tensors):
        tname = cur.string() or ""
        n_dims = cur.take("<I")
        if n_dims > 8:
            raise GGUFError(f"{name}: tensor {tname!r} has {n_dims} dimensions (corrupt file)")
        count = 1
        for _ in range(n_dims):
            count *= cur.take("<Q")
        ttype, offset = cur.take("<I"), cur.take("<Q")
        if ttype > _MAX_TENSOR_TYPE or ttype not in _TYPE_SIZES:
            raise GGUFError(
                f"{name}: tensor {tname!r} has type {ttype}, which the gpt4all backend "
                "does not support (a quantization newer than mid-2024?)"
            )
        block, nbytes = _TYPE_SIZES[ttype]
        data_needed = max(data_needed, offset + -(-count // block) * nbytes)
    data_start = -(-cur.pos // alignment) * alignment
    if data_start + data_needed > size:
        raise GGUFError(
            f"{name} is truncated: its tensors need {data_start + data_needed} bytes, the "
            f"file has {size} (an interrupted download or copy?)"
        )

    def as_int(key: str) -> int | None:
        v = kv.get(key)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    def token_text(key: str) -> str:
        token_id = as_int(key)
        if tokens_at is None or token_id is None or not 0 <= token_id < tokens_at[1]:
            return ""
        cur.pos = tokens_at[0]
        for _ in range(token_id):
            cur.pos += 8 + struct.unpack_from("<Q", cur.buf, cur.pos)[0]
        return cur.string() or ""

    general_name = kv.get("general.name")
    template = kv.get("tokenizer.chat_template")
    return GGUFSummary(
        architecture=arch,
        name=general_name if isinstance(general_name, str) else None,
        context_length=as_int(f"{arch}.context_length"),
        embedding_length=as_int(f"{arch}.embedding_length"),
        version=version,
        tensor_count=n_tensors,
        file_size=size,
        chat_template=template if isinstance(template, str) else None,
        bos_token=token_text("tokenizer.ggml.bos_token_id"),
        eos_token=token_text("tokenizer.ggml.eos_token_id"),
        control_tokens=_control_tokens(buf, types_at),
    )


#: llama.cpp token types that are never text: UNKNOWN, CONTROL, UNUSED.
_NOT_TEXT = frozenset({2, 3, 5})


def _control_tokens(buf: Any, types_at: tuple[int, int] | None) -> frozenset[int]:
    if types_at is None:
        return frozenset()
    start, n = types_at
    types = array("i")
    types.frombytes(bytes(buf[start : start + 4 * n]))
    if sys.byteorder != "little":  # pragma: no cover - GGUF is little-endian
        types.byteswap()
    return frozenset(i for i, t in enumerate(types) if t in _NOT_TEXT)


def probe_gguf(path: Path) -> GGUFSummary:
    """Read and check a GGUF header; raise ``GGUFError`` saying what is wrong."""
    name = path.name
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 24 or fh.read(4) != b"GGUF":
                raise GGUFError(f"{name} is not a GGUF file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    return _parse(view, size, name)
                finally:
                    view.release()
    except GGUFError:
        raise
    except _Corrupt as exc:
        raise GGUFError(f"{name} is not a readable GGUF file ({exc}: corrupt header)") from exc
    except (struct.error, ValueError, IndexError, OverflowError) as exc:
        raise GGUFError(f"{name} is not a readable GGUF file (corrupt header)") from exc
    except OSError as exc:
        raise GGUFError(f"{name} cannot be read: {exc.strerror or exc}") from exc


def check_supported(summary: GGUFSummary, name: str) -> None:
    if summary.architecture not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"{name} has architecture '{summary.architecture}', which the gpt4all 2.8.2 "
            f"backend does not support (supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
        )
