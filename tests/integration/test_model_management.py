"""Several models on the real server: listing, on-demand loading, LRU unloading under
concurrent requests, broken files and hostile model names (real files and symlinks)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_EMBEDDING_MODEL_FILE
from tests.support.gguf_tools import drop_tensor
from tests.support.openai_schema import validate
from tests.support.server import Server, run_server
from tests.support.tinymodel import build_broken_models, build_tiny_model

SENTENCES = {name: f"I am the {name} model." for name in ("alpha", "beta", "gamma")}
SECRET = "I am the secret model outside."


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, default_models_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("mm")
    models = root / "models"
    for name, sentence in SENTENCES.items():
        build_tiny_model(models / f"{name}.gguf", sentence=sentence)
    shutil.copy(default_models_dir / DEFAULT_EMBEDDING_MODEL_FILE, models / "emb.gguf")
    build_broken_models(models)
    drop_tensor(models / "alpha.gguf", models / "missing-tensor.gguf", "output_norm.weight")
    build_tiny_model(root / "outside" / "secret.gguf", sentence=SECRET)
    (models / "alias.gguf").symlink_to("beta.gguf")
    (models / "escape.gguf").symlink_to(root / "outside" / "secret.gguf")
    (models / "sub").mkdir()
    build_tiny_model(models / "sub" / "nested.gguf", sentence=SECRET)
    return root


@pytest.fixture(scope="module")
def server(layout: Path) -> Iterator[Server]:
    env = {
        "MODELS_DIR": str(layout / "models"),
        "MODEL": "alpha",
        "EMBEDDING_MODEL": "emb",
        "MAX_LOADED_MODELS": "2",
        "MODEL_WAIT_TIMEOUT": "60",
        "N_THREADS": "1",
        "N_CTX": "256",
    }
    with run_server(env, layout / "server.log") as srv:
        yield srv


def chat(server: Server, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(server.v1 + "/chat/completions", json=body, timeout=120)


def listing(server: Server) -> dict[str, dict[str, Any]]:
    body = httpx.get(server.v1 + "/models", timeout=30).json()
    validate("ListModelsResponse", body)
    return {m["id"]: m for m in body["data"]}


def loaded(server: Server) -> set[str]:
    return {i for i, m in listing(server).items() if m["loaded"]}


def load_lines(server: Server, model: str) -> int:
    return len(re.findall(rf"loaded (?:embedding )?model {re.escape(model)} in", server.log()))


def test_lists_every_usable_model_with_details(server: Server, layout: Path) -> None:
    models = listing(server)
    assert list(models)[:2] == ["alpha", "emb"]  # the configured ones first
    assert sorted(models) == ["alias", "alpha", "beta", "emb", "gamma", "missing-tensor"]
    for model in models.values():
        validate("Model", {k: model[k] for k in ("id", "object", "created", "owned_by")})
    alpha, emb = models["alpha"], models["emb"]
    assert alpha["capabilities"] == ["completions", "chat"]
    assert alpha["architecture"] == "llama" and alpha["context_length"] == 256
    assert alpha["size_bytes"] == (layout / "models" / "alpha.gguf").stat().st_size
    assert emb["capabilities"] == ["embeddings"] and emb["architecture"] == "bert"
    assert emb["context_length"] == 512 and emb["embedding_dimensions"] == 384
    one = httpx.get(server.v1 + "/models/emb").json()
    validate("Model", one)
    assert one["capabilities"] == ["embeddings"]
    # unusable files are left out, with a warning naming the reason in the log
    log = server.log()
    assert "model truncated is not usable" in log and "gemma3" in log
    assert "ignoring escape.gguf: it points outside MODELS_DIR" in log


def test_requests_load_models_on_demand_and_unload_lru(server: Server) -> None:
    for name in ("alpha", "beta"):
        r = chat(server, name)
        assert (
            r.status_code == 200
            and r.json()["choices"][0]["message"]["content"] == (SENTENCES[name])
        )
    assert loaded(server) == {"alpha", "beta"}
    assert chat(server, "gamma").json()["choices"][0]["message"]["content"] == SENTENCES["gamma"]
    assert loaded(server) == {"beta", "gamma"}  # alpha was the least recently used
    emb = httpx.post(server.v1 + "/embeddings", json={"model": "emb", "input": "x"}, timeout=60)
    assert emb.status_code == 200
    assert loaded(server) == {"gamma", "emb"}
    assert "unloaded model beta (least recently used, idle)" in server.log()
    # an alias (a symlink inside MODELS_DIR) is a model of its own, answering as its target
    assert chat(server, "alias").json()["choices"][0]["message"]["content"] == SENTENCES["beta"]


def test_concurrent_requests_for_one_model_load_it_once(server: Server) -> None:
    chat(server, "alpha")
    chat(server, "beta")
    assert "gamma" not in loaded(server)
    before = load_lines(server, "gamma")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: chat(server, "gamma"), range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {SENTENCES["gamma"]}
    assert load_lines(server, "gamma") == before + 1


def test_mixed_concurrent_requests_stay_within_max_loaded_models(server: Server) -> None:
    names = [("alpha", "beta", "gamma", "emb")[i % 4] for i in range(32)]
    stop = threading.Event()
    seen: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(loaded(server)))

    def call(name: str) -> str:
        if name == "emb":
            r = httpx.post(
                server.v1 + "/embeddings", json={"model": "emb", "input": "x"}, timeout=120
            )
            assert r.status_code == 200, r.text
            return "emb"
        r = chat(server, name, stream=bool(len(name) % 2))
        assert r.status_code == 200, r.text
        text = r.text if len(name) % 2 else r.json()["choices"][0]["message"]["content"]
        assert SENTENCES[name].split()[-1].rstrip(".") in text
        return name

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(call, names)) == names
    finally:
        stop.set()
        watcher.join()
    assert seen and max(seen) <= 2
    models = listing(server)
    assert all(m["in_use"] == 0 for m in models.values())
    assert httpx.get(server.base_url + "/health").status_code == 200


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("truncated", "truncated"),
        ("not-gguf", "not a GGUF file"),
        ("unknown-arch", "gemma3"),
        ("missing-tensor", "rejected"),
    ],
)
def test_broken_models_fail_clearly_and_the_server_keeps_serving(
    server: Server, model: str, reason: str
) -> None:
    for _ in range(2):  # the second time from the remembered failure
        r = chat(server, model)
        assert r.status_code == 400, r.text
        validate("ErrorResponse", r.json())
        error = r.json()["error"]
        assert error["code"] == "model_load_failed" and error["param"] == "model"
        assert reason in error["message"]
    assert chat(server, "alpha").status_code == 200
    assert httpx.get(server.base_url + "/health").status_code == 200
    assert server.alive()


def _raw_get(server: Server, raw_path: str) -> tuple[int, dict[str, Any]]:
    """GET without any client-side URL normalisation (dot segments, %-escapes kept)."""
    url = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", raw_path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/models/../../etc/passwd",
        "/v1/models/%2Fetc%2Fpasswd",
        "/v1/models//etc/passwd",
        "/v1/models/escape",
        "/v1/models/escape.gguf",
        "/v1/models/sub/nested",
        "/v1/models/sub%2Fnested",
        "/v1/models/nested",
        "/v1/models/..",
        "/v1/models/%00",
        "/v1/models/alpha%00.gguf",
        "/v1/models/truncated",
        "/v1/models/%252e%252e%252fsecret",
    ],
)
def test_model_lookup_never_escapes_models_dir(server: Server, raw_path: str) -> None:
    status, body = _raw_get(server, raw_path)
    assert status in (400, 404), (raw_path, status, body)
    assert "error" in body
    assert "secret" not in json.dumps(body).lower() or "secret" in raw_path.lower()


HOSTILE_NAMES = [
    "../outside/secret",
    "../../../../etc/passwd",
    "/etc/passwd",
    "escape",
    "escape.gguf",
    "sub/nested",
    "nested",
    "..%2Foutside%2Fsecret",
    "%2e%2e%2foutside%2fsecret",
    "..\\outside\\secret",
    "alpha\x00",
    "..",
    ".",
    "",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_model_names_get_400_or_404(server: Server, layout: Path, name: str) -> None:
    secret_path = str(layout / "outside" / "secret.gguf")
    for candidate in (name, secret_path if name == "/etc/passwd" else name):
        r = chat(server, candidate)
        assert r.status_code in (400, 404), (candidate, r.status_code, r.text)
        assert SECRET not in r.text
        e = httpx.post(server.v1 + "/embeddings", json={"model": candidate, "input": "x"})
        assert e.status_code in (400, 404), (candidate, e.status_code, e.text)
        c = httpx.post(server.v1 + "/completions", json={"model": candidate, "prompt": "x"})
        assert c.status_code in (400, 404), (candidate, c.status_code, c.text)


def test_no_server_errors_were_logged(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log
    assert not re.search(r" 5\d\d route=", log), "a request got a 5xx"
    assert "secret.gguf" not in re.sub(r"ignoring escape.gguf[^\n]*", "", log)


# --- a model in use is never unloaded --------------------------------------------------------

SMOL = DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf")


def test_model_in_use_is_not_unloaded_503_then_swapped(
    default_models_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(default_models_dir / DEFAULT_CHAT_MODEL_FILE, models)
    build_tiny_model(models / "alpha.gguf", sentence=SENTENCES["alpha"])
    env = {
        "MODELS_DIR": str(models),
        "MODEL": SMOL,
        "EMBEDDING_MODEL": "",
        "MAX_LOADED_MODELS": "1",
        "MODEL_WAIT_TIMEOUT": "1",
    }
    with run_server(env, tmp_path / "server.log") as srv:
        body = {
            "model": SMOL,
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",  # it keeps counting
            "max_tokens": 600,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stream": True,
        }
        with httpx.stream("POST", srv.v1 + "/completions", json=body, timeout=120) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: {"))
            assert listing(srv)[SMOL]["in_use"] == 1
            started = time.monotonic()
            busy = chat(srv, "alpha")
            assert time.monotonic() - started >= 0.9
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "model_capacity_exhausted"
            assert busy.headers["Retry-After"].isdigit()
            assert loaded(srv) == {SMOL}
            # the stream was not disturbed: it still delivers tokens
            assert next(line for line in lines if line.startswith("data: {"))
        # client gone: generation stopped, model released, so alpha can take the slot
        deadline = time.monotonic() + 30
        while listing(srv)[SMOL]["in_use"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = chat(srv, "alpha")
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["content"] == SENTENCES["alpha"]
        assert loaded(srv) == {"alpha"}
        assert f"unloaded model {SMOL}" in srv.log()
