"""The models directory: which GGUF files are there, what each one is, and safe names.

Model ids are file names without ``.gguf``. Ids come from clients, so they are untrusted:
:func:`validate_model_id` rejects anything that could name a path (separators, ``..``,
percent-encoding, control characters), and an id is only ever *matched* against names we
listed ourselves, never joined onto a directory. Symlinks in the directory are followed
only when they resolve inside it. Each file's header is probed once per (size, mtime,
inode) with :func:`~gpt4all_api.model_store.gguf.probe_gguf`.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpt4all_api
from gpt4all_api.engines.base import Capabilities
from gpt4all_api.model_store.gguf import GGUFError, GGUFSummary, check_supported, probe_gguf

logger = logging.getLogger(__name__)

_MAX_NAME = 200
_SUFFIX = ".gguf"
#: Where MODELS_DIR defaulted to before model files moved out of the package: ``models/``
#: inside the package source. Only read, to point upgraded users at their files.
LEGACY_MODELS_DIR = Path(gpt4all_api.__file__).parent / "models"


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
        return Capabilities.for_kind(self.summary is not None and self.summary.is_embedding)


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


def legacy_models_hint(models_dir: Path) -> str | None:
    """One line telling an upgraded user that model files are still in the old default place.

    ``None`` when :data:`LEGACY_MODELS_DIR` holds no ``*.gguf`` file missing from
    ``models_dir`` (or is ``models_dir`` itself): without it, such a user would see an empty
    listing and a "not in MODELS_DIR" error with no clue where their models went.
    """
    old = LEGACY_MODELS_DIR
    try:
        if old.resolve() == Path(models_dir).resolve():
            return None
        left = [p.name for p in old.glob("*" + _SUFFIX)]
        left = [name for name in left if not (Path(models_dir) / name).exists()]
    except OSError:
        return None
    if not left:
        return None
    q_old, q_new = shlex.quote(str(old)), shlex.quote(str(models_dir))
    mkdir = "" if Path(models_dir).is_dir() else f"mkdir -p {q_new} && "
    return (
        f"{len(left)} model file(s) are in the old place {old}; move them: "
        f"{mkdir}mv {q_old}/*{_SUFFIX} {q_new}/ (or set MODELS_DIR={q_old})"
    )
