"""The gpt4all catalog, verified downloads, the ``models list|pull|rm`` CLI and
ALLOW_DOWNLOAD in the server, against a local HTTP server playing gpt4all.io."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4all_api.model_store.catalog import (
    CatalogError,
    DownloadError,
    download_entry,
    fetch_catalog,
    find_entry,
    parse_catalog,
)
from tests.support.server import ROOT, Server, free_port, run_server
from tests.support.tinymodel import build_tiny_model


@dataclass
class FakeGpt4AllIo:
    """Serves ``/models3.json`` and ``/files/<name>``; counts file downloads."""

    files: dict[str, bytes]
    catalog: list[dict[str, Any]]
    base: str = ""
    gets: Counter[str] = field(default_factory=Counter)
    cut: set[str] = field(default_factory=set)  # send half the bytes, then hang up

    @property
    def catalog_url(self) -> str:
        return self.base + "/models3.json"


def _handler(site: FakeGpt4AllIo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/models3.json":
                data = json.dumps(site.catalog).encode()
            elif self.path.startswith("/files/") and self.path[7:] in site.files:
                name = self.path[7:]
                site.gets[name] += 1
                data = site.files[name]
                if name in site.cut:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _entry(name: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "order": "a",
        "name": name,
        "filename": name,
        "filesize": str(len(data)),
        "md5sum": hashlib.md5(data).hexdigest(),
        "url": "",  # filled in once the port is known
        "ramrequired": "1",
        "description": f"<p>{name}</p>",
        **extra,
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGpt4AllIo]:
    tmp = tmp_path_factory.mktemp("gpt4all-io")
    tiny = build_tiny_model(tmp / "a.gguf", sentence="I was downloaded.").read_bytes()
    tiny2 = build_tiny_model(tmp / "b.gguf", sentence="I was downloaded on demand.").read_bytes()
    junk = b"<html>not a model</html>" * 100
    files = {
        "tiny-dl.gguf": tiny,
        "tiny-dl2.gguf": tiny2,
        "bad-md5.gguf": tiny,
        "bad-sha.gguf": tiny,
        "wrong-size.gguf": tiny,
        "junk.gguf": junk,
        "cut.gguf": tiny,
        "no-sum.gguf": tiny,
        "emb-dl.gguf": junk,
    }
    catalog = [
        _entry("tiny-dl.gguf", tiny),
        _entry("tiny-dl2.gguf", tiny2, sha256sum=hashlib.sha256(tiny2).hexdigest()),
        _entry("bad-md5.gguf", tiny, md5sum="0" * 32),
        {**_entry("bad-sha.gguf", tiny, sha256sum="f" * 64), "md5sum": None},
        _entry("wrong-size.gguf", tiny, filesize=str(len(tiny) + 1)),
        _entry("junk.gguf", junk),
        _entry("cut.gguf", tiny),
        {**_entry("no-sum.gguf", tiny), "md5sum": None},
        _entry("emb-dl.gguf", junk, embeddingModel=True),
        # hostile or malformed entries: skipped
        _entry("../evil.gguf", tiny),
        _entry("/abs/evil.gguf", tiny),
        _entry("sub/evil.gguf", tiny),
        {**_entry("ftp.gguf", tiny), "url": "ftp://example.com/ftp.gguf"},
        {"filename": 42},
        "not an object",
    ]
    state = FakeGpt4AllIo(files, catalog)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.cut.add("cut.gguf")
    for entry in catalog:
        if isinstance(entry, dict) and entry.get("url") == "":
            entry["url"] = f"{state.base}/files/{entry['filename']}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/models3.json"


def no_leftovers(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".part")]


# --- the catalog -------------------------------------------------------------------------------


def test_catalog_is_parsed_and_hostile_entries_are_skipped(site: FakeGpt4AllIo) -> None:
    entries = fetch_catalog(site.catalog_url)
    ids = [e.id for e in entries]
    assert "tiny-dl" in ids and "emb-dl" in ids
    assert not [i for i in ids if "evil" in i or i == "ftp"]
    tiny = find_entry(entries, "tiny-dl.gguf")
    assert tiny is not None and tiny.md5sum and tiny.filesize and not tiny.embedding
    emb = find_entry(entries, "emb-dl")
    assert emb is not None and emb.embedding
    assert find_entry(entries, "../evil") is None
    with pytest.raises(CatalogError, match="not a JSON list"):
        parse_catalog({"models": []})


def test_catalog_offline_and_file_urls(tmp_path: Path, site: FakeGpt4AllIo) -> None:
    with pytest.raises(CatalogError, match="cannot be reached"):
        fetch_catalog(closed_url(), timeout=2)
    local = tmp_path / "models3.json"
    local.write_text(json.dumps(site.catalog))
    assert find_entry(fetch_catalog(local.as_uri()), "tiny-dl") is not None
    local.write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        fetch_catalog(local.as_uri())


def test_download_verifies_and_reports_progress(tmp_path: Path, site: FakeGpt4AllIo) -> None:
    entry = find_entry(fetch_catalog(site.catalog_url), "tiny-dl2")
    assert entry is not None and entry.sha256sum
    seen: list[tuple[int, int | None]] = []
    path = download_entry(entry, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "tiny-dl2.gguf"
    assert path.read_bytes() == site.files["tiny-dl2.gguf"]
    assert seen[-1] == (len(site.files["tiny-dl2.gguf"]),) * 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-md5", "MD5 mismatch"),
        ("bad-sha", "SHA-256 mismatch"),
        ("wrong-size", "expected"),
        ("junk", "not usable"),
        ("cut", "failed"),
    ],
)
def test_failed_downloads_leave_nothing(
    tmp_path: Path, site: FakeGpt4AllIo, name: str, message: str
) -> None:
    entry = find_entry(fetch_catalog(site.catalog_url), name)
    assert entry is not None
    with pytest.raises(DownloadError, match=message):
        download_entry(entry, tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_without_checksum_still_checks_the_header(
    tmp_path: Path, site: FakeGpt4AllIo
) -> None:
    entry = find_entry(fetch_catalog(site.catalog_url), "no-sum")
    assert entry is not None and entry.md5sum is None and entry.sha256sum is None
    assert download_entry(entry, tmp_path).exists()


def test_download_can_be_stopped(tmp_path: Path, site: FakeGpt4AllIo) -> None:
    entry = find_entry(fetch_catalog(site.catalog_url), "tiny-dl")
    assert entry is not None
    with pytest.raises(DownloadError, match="cancelled"):
        download_entry(entry, tmp_path, should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []


# --- the command line ----------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4all_api", "models", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_cli_pull_list_rm(tmp_path: Path, site: FakeGpt4AllIo) -> None:
    d = str(tmp_path)
    build_tiny_model(tmp_path / "local.gguf")
    (tmp_path / "broken.gguf").write_text("nope")

    pulled = cli("pull", "tiny-dl", "--models-dir", d, "--catalog-url", site.catalog_url)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(tmp_path / "tiny-dl.gguf")
    assert "100%" in pulled.stderr  # the tqdm bar
    again = cli("pull", "tiny-dl.gguf", "--models-dir", d, "--catalog-url", site.catalog_url)
    assert again.returncode == 0 and "already" in again.stderr

    listed = cli(
        "list", "--json", "--catalog", "--models-dir", d, "--catalog-url", site.catalog_url
    )
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    local = {m["id"]: m for m in out["local"]}
    assert local["tiny-dl"]["capabilities"] == ["completions", "chat"]
    assert local["broken"]["error"] and local["broken"]["capabilities"] == []
    catalog = {m["id"]: m for m in out["catalog"]}
    assert catalog["tiny-dl"]["downloaded"] and not catalog["tiny-dl2"]["downloaded"]
    table = cli("list", "--models-dir", d)
    assert "tiny-dl" in table.stdout and "unusable: broken.gguf is not a GGUF file" in table.stdout

    removed = cli("rm", "tiny-dl", "broken", "--models-dir", d)
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.gguf"]
    for bad in ("../local", "/etc/passwd", "absent"):
        r = cli("rm", bad, "--models-dir", d)
        assert r.returncode == 1 and r.stderr.startswith("error:")
    assert (tmp_path / "local.gguf").exists()


def test_cli_errors_are_one_line(tmp_path: Path, site: FakeGpt4AllIo) -> None:
    build_tiny_model(tmp_path / "local.gguf")
    offline = cli("pull", "tiny-dl", "--models-dir", str(tmp_path), "--catalog-url", closed_url())
    assert offline.returncode == 1
    assert "cannot be reached" in offline.stderr and "Local models: local." in offline.stderr
    unknown = cli("pull", "nope", "--models-dir", str(tmp_path), "--catalog-url", site.catalog_url)
    assert unknown.returncode == 1 and "not in the catalog" in unknown.stderr
    bad = cli("pull", "bad-md5", "--models-dir", str(tmp_path), "--catalog-url", site.catalog_url)
    assert bad.returncode == 1 and "MD5 mismatch" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.gguf"]
    # MODELS_DIR and CATALOG_URL come from the environment like the server's
    env = {"MODELS_DIR": str(tmp_path), "CATALOG_URL": site.catalog_url}
    listed = cli("list", "--catalog", env=env)
    assert listed.returncode == 0 and "tiny-dl2" in listed.stdout and "local" in listed.stdout


# --- the server with ALLOW_DOWNLOAD ----------------------------------------------------------


@pytest.fixture
def download_server(tmp_path: Path, site: FakeGpt4AllIo) -> Iterator[Server]:
    models = tmp_path / "models"
    env = {
        "MODELS_DIR": str(models),
        "MODEL": "tiny-dl",
        "EMBEDDING_MODEL": "emb-dl",
        "ALLOW_DOWNLOAD": "true",
        "CATALOG_URL": site.catalog_url,
        "MAX_LOADED_MODELS": "1",  # so EMBEDDING_MODEL is not fetched at start
        "N_THREADS": "1",
        "N_CTX": "256",
    }
    with run_server(env, tmp_path / "server.log") as server:
        yield server


def chat(server: Server, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(server.v1 + "/chat/completions", json=body, timeout=120)


def test_server_downloads_model_at_start_and_on_demand(
    download_server: Server, site: FakeGpt4AllIo
) -> None:
    server = download_server
    log = server.log()
    assert "downloading tiny-dl.gguf" in log and "100%" in log and "checksum verified" in log
    models = {m["id"]: m for m in httpx.get(server.v1 + "/models").json()["data"]}
    assert models["tiny-dl"]["loaded"] and models["tiny-dl"]["source"] == "local"
    # the configured embedding model is listed, still to be downloaded
    assert models["emb-dl"] == {
        "id": "emb-dl",
        "object": "model",
        "created": 0,
        "owned_by": "gpt4all-api",
        "capabilities": ["embeddings"],
        "loaded": False,
        "in_use": 0,
        "source": "catalog",
        "downloaded": False,
    }
    assert chat(server, "tiny-dl").json()["choices"][0]["message"]["content"] == (
        "I was downloaded."
    )

    before = site.gets["tiny-dl2.gguf"]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: chat(server, "tiny-dl2"), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {
        "I was downloaded on demand."
    }
    assert site.gets["tiny-dl2.gguf"] == before + 1  # one download for six requests

    # wrong kind: refused before fetching anything
    gets = site.gets["emb-dl.gguf"]
    r = chat(server, "emb-dl")
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"
    assert site.gets["emb-dl.gguf"] == gets

    bad = chat(server, "bad-md5")
    assert bad.status_code == 502 and bad.json()["error"]["code"] == "model_download_failed"
    assert "MD5 mismatch" in bad.json()["error"]["message"]
    unknown = chat(server, "not-in-catalog")
    assert unknown.status_code == 404 and "tiny-dl" in unknown.json()["error"]["message"]
    for hostile in ("../evil", "sub/evil", "/abs/evil"):
        assert chat(server, hostile).status_code == 400
    assert chat(server, "tiny-dl").status_code == 200
    files = sorted(p.name for p in Path(server.log_path.parent / "models").iterdir())
    assert files == ["tiny-dl.gguf", "tiny-dl2.gguf"]


def test_offline_start_says_which_models_are_available(tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_tiny_model(models / "alpha.gguf")
    env = {
        "MODELS_DIR": str(models),
        "MODEL": "absent-model",
        "EMBEDDING_MODEL": "",
        "ALLOW_DOWNLOAD": "true",
        "CATALOG_URL": closed_url(),
        "CATALOG_TIMEOUT": "2",
    }
    with run_server(env, tmp_path / "server.log", expect_healthy=False) as server:
        deadline = time.monotonic() + 60
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.alive() and server.process.returncode != 0
        log = server.log()
    assert "absent-model" in log and "cannot be reached" in log
    assert "Available models: alpha." in log


def test_offline_request_says_which_models_are_available(tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_tiny_model(models / "alpha.gguf")
    env = {
        "MODELS_DIR": str(models),
        "MODEL": "alpha",
        "EMBEDDING_MODEL": "",
        "ALLOW_DOWNLOAD": "true",
        "CATALOG_URL": closed_url(),
        "CATALOG_TIMEOUT": "2",
        "N_THREADS": "1",
    }
    with run_server(env, tmp_path / "server.log") as server:
        r = chat(server, "Llama-3.2-1B-Instruct-Q4_0")
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["code"] == "model_not_found"
        assert "cannot be reached" in error["message"]
        assert "Available models: alpha." in error["message"]
        assert chat(server, "alpha").status_code == 200
