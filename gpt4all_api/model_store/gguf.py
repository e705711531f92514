"""The models directory: which GGUF files are there, what each one is, and safe names.

Model ids are file names without ``.gguf``. Ids come from clients, so they are untrusted:
:func:`validate_model_id` rejects anything that could name a path (separators, ``..``,
percent-encoding, control characters), and an id is only ever *matched* against names we
listed ourselves, never joined onto a directory. Symlinks in the directory are followed
only when they resolve inside it.

Each file's header is probed once per (size, mtime, inode) with :func:`probe_gguf`, a
small GGUF parser that skips arrays instead of decoding them: ``gguf.GGUFReader`` takes
~3 s on a 49k-token vocabulary, this takes milliseconds. It also catches what the bindings
fail on silently or crash on: truncated files (tensor data past the end of the file), not
a GGUF at all, unsupported GGUF versions, architectures and tensor types.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt4all_api.engines.base import Capabilities

logger = logging.getLogger(__name__)

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
_MAX_NAME = 200
_SUFFIX = ".gguf"


class InvalidModelId(ValueError):
    """A model id that can never name a model file (it could name a path)."""


def model_id_for(name: str) -> str:
    return name.removesuffix(_SUFFIX)


def validate_model_id(name: str) -> str:
    """The model id for a client-supplied name (``x`` or ``x.gguf``), or InvalidModelId.

    Rejected: empty or long names, path separators, a leading dot (``.``, ``..``, hidden
    files), ``%`` (percent-encoding is never decoded again, so it can only be an attempt),
    ``:`` (drive letters, URLs), control and format characters, surrounding whitespace.
    """
    if not isinstance(name, str) or not name:
        raise InvalidModelId("the model name is empty")
    model_id = model_id_for(name)
    problem = None
    if not model_id or len(model_id) > _MAX_NAME:
        problem = f"must be 1 to {_MAX_NAME} characters"
    elif model_id != model_id.strip():
        problem = "must not start or end with whitespace"
    elif model_id.startswith("."):
        problem = "must not start with '.'"
    elif any(c in model_id for c in "/\\%:"):
        problem = "must not contain '/', '\\', '%' or ':'"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in model_id):
        problem = "must not contain control characters"
    if problem:
        raise InvalidModelId(f"Invalid model name {name!r}: a model name {problem}.")
    return model_id


# --- GGUF header probe ---------------------------------------------------------------------


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
    for _ in range(n_kv):
        key = cur.string() or ""
        vtype = cur.take("<I")
        if key == "tokenizer.ggml.tokens" and vtype == 9:
            itype, n = struct.unpack_from("<IQ", cur.buf, cur.pos)
            if itype == 8:
                tokens_at = (cur.pos + 12, n)
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
    )


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


# --- the directory ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalModel:
    """One ``*.gguf`` entry of the models directory, probed."""

    id: str
    path: Path  # the entry in MODELS_DIR (maybe a symlink resolving inside it)
    size: int
    mtime: float
    signature: tuple[Any, ...]  # changes when the file is replaced or rewritten
    summary: GGUFSummary | None
    error: str | None  # why the file cannot be served (then summary may be None)

    @property
    def usable(self) -> bool:
        return self.error is None and self.summary is not None

    @property
    def capabilities(self) -> Capabilities:
        if self.summary is not None and self.summary.is_embedding:
            return Capabilities(completions=False, chat=False, embeddings=True)
        return Capabilities(completions=True, chat=True, embeddings=False)


def capability_names(caps: Capabilities) -> list[str]:
    return [name for name in ("completions", "chat", "embeddings") if getattr(caps, name)]


class ModelDirectory:
    """The GGUF files directly inside ``root``, re-listed on every call (cheap), probed once.

    Thread-safe: listings may run on worker threads (the event loop offloads probing).
    """

    def __init__(self, root: Path, fallbacks: Sequence[Path] = ()) -> None:
        self.root = Path(root)
        #: Read-only directories listed after ``root`` (BUILTIN_MODELS_DIR: the Docker image's
        #: baked-in default models); a name in ``root`` hides the same name in them.
        self.fallbacks = [Path(f) for f in fallbacks if Path(f) != Path(root)]
        self._cache: dict[str, LocalModel] = {}
        self._warned: set[tuple[str, Any]] = set()
        self._lock = threading.Lock()

    def _warn_once(self, key: tuple[str, Any], msg: str, *args: Any) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(msg, *args)

    def _entries(self, only: str | None = None) -> list[tuple[str, Path, os.stat_result]]:
        """(id, path, stat) of every acceptable entry (or just ``only``), without probing:
        ``root`` first."""
        out: list[tuple[str, Path, os.stat_result]] = []
        for directory in (self.root, *self.fallbacks):
            seen = {model_id for model_id, _, _ in out}
            out += [e for e in self._entries_in(directory, only) if e[0] not in seen]
        return out

    def _entries_in(
        self, directory: Path, only: str | None = None
    ) -> list[tuple[str, Path, os.stat_result]]:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._warn_once(("<dir>", str(exc)), "cannot list MODELS_DIR %s: %s", directory, exc)
            return []
        root = directory.resolve()
        out = []
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            if only is not None and name != only + _SUFFIX:
                continue  # (ids are matched against the listing, never joined onto paths)
            try:
                model_id = validate_model_id(name)
            except InvalidModelId:
                self._warn_once((name, "name"), "ignoring %r in MODELS_DIR: bad model name", name)
                continue
            path = directory / name
            try:
                st = path.stat()  # follows symlinks
                real = path.resolve(strict=True)
            except OSError:
                continue  # dangling symlink, or removed meanwhile
            if not real.is_relative_to(root):
                self._warn_once(
                    (name, "outside"), "ignoring %s: it points outside MODELS_DIR", name
                )
                continue
            if not path.is_file():
                continue
            out.append((model_id, path, st))
        return out

    def _describe(self, model_id: str, path: Path, st: os.stat_result) -> LocalModel:
        signature = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        with self._lock:
            cached = self._cache.get(model_id)
        if cached is not None and cached.signature == signature and cached.path == path:
            return cached
        summary: GGUFSummary | None = None
        error: str | None = None
        try:
            summary = probe_gguf(path)
            check_supported(summary, path.name)
        except GGUFError as exc:
            error = str(exc)
            self._warn_once((model_id, signature), "model %s is not usable: %s", model_id, error)
        entry = LocalModel(
            id=model_id,
            path=path,
            size=st.st_size,
            mtime=st.st_mtime,
            signature=signature,
            summary=summary,
            error=error,
        )
        with self._lock:
            self._cache[model_id] = entry
        return entry

    def needs_probe(self, only: str | None = None) -> bool:
        """Whether :meth:`scan` would read any header (then run it off the event loop)."""
        with self._lock:
            cache = dict(self._cache)
        for model_id, path, st in self._entries(only):
            c = cache.get(model_id)
            if c is None or c.path != path or c.signature[:2] != (st.st_size, st.st_mtime_ns):
                return True
        return False

    def scan(self, only: str | None = None) -> dict[str, LocalModel]:
        """Every entry by id (usable or not); with ``only``, at most that one."""
        found: dict[str, LocalModel] = {}
        for model_id, path, st in self._entries(only):
            found[model_id] = self._describe(model_id, path, st)
        if only is None:
            with self._lock:
                for gone in set(self._cache) - set(found):
                    del self._cache[gone]
        return found

    def check_still_inside(self, entry: LocalModel) -> Path:
        """Re-check just before loading (the entry may have been swapped for a symlink)."""
        real = entry.path.resolve(strict=True)
        if not real.is_relative_to(entry.path.parent.resolve()):
            raise GGUFError(f"{entry.path.name} now points outside MODELS_DIR")
        return entry.path
