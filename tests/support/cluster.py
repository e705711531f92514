"""The reference deployment as local processes, for tests and bench/: API replicas behind
HAProxy (deploy/haproxy.cfg), sharing one PostgreSQL database (stored responses) and one
Redis (saved contexts), each with a DATA_DIR of its own (its disk tier)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.haproxy import Balancer, run_haproxy
from tests.support.server import Server, free_port, run_server


@dataclass
class Replica:
    name: str
    port: int
    data_dir: Path
    server: Server | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.url + "/v1"


class Cluster:
    def __init__(self, directory: Path, env: dict[str, str], names: list[str]) -> None:
        self.directory = directory
        self.env = env
        self.replicas = {
            n: Replica(n, free_port(), directory / n / "data") for n in names
        }  # fmt: skip
        self.balancer: Balancer | None = None

    @property
    def v1(self) -> str:
        assert self.balancer is not None
        return self.balancer.v1

    def start(self, name: str, **overrides: str) -> Server:
        """Start (or restart) a replica on its port, with its DATA_DIR."""
        r = self.replicas[name]
        r.starts += 1
        env = {**self.env, "DATA_DIR": str(r.data_dir), **overrides}
        log = self.directory / name / f"server-{r.starts}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        r.server = r.stack.enter_context(run_server(env, log, port=r.port))
        return r.server

    def stop(self, name: str) -> None:
        """SIGTERM: a graceful shutdown."""
        r = self.replicas[name]
        r.stack.close()
        r.server = None

    def kill(self, name: str) -> None:
        """SIGKILL: the replica dies mid-work."""
        r = self.replicas[name]
        assert r.server is not None
        r.server.process.kill()
        r.server.process.wait()
        self.stop(name)

    def kv(self, name: str) -> dict[str, Any]:
        """The replica's saved-context tiers, as its /health reports them."""
        health = httpx.get(self.replicas[name].url + "/health", timeout=10).json()
        return next(m["kv_tiers"] for m in health["models"].values() if m.get("kv_tiers"))

    def wait_written(self, name: str, tier: str, writes: int, timeout: float = 60.0) -> None:
        """Until the replica has written ``writes`` entries to ``tier``."""
        deadline = time.monotonic() + timeout
        while self.kv(name)[tier]["writes"] < writes:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {self.kv(name)}")
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until no running replica has saved contexts waiting to be written."""
        deadline = time.monotonic() + timeout
        while any(self.kv(n)["pending"] for n, r in self.replicas.items() if r.server):
            if time.monotonic() > deadline:
                raise AssertionError({n: self.kv(n) for n in self.replicas})
            time.sleep(0.02)

    def close(self) -> None:
        for r in self.replicas.values():
            r.stack.close()


@contextmanager
def run_cluster(
    directory: Path, env: dict[str, str], names: list[str], maxconn: int
) -> Iterator[Cluster]:
    """Replicas with ``env`` (DATABASE_URL, KV_CACHE_URL, MODEL, ...) behind HAProxy."""
    cluster = Cluster(directory, env, names)
    try:
        for name in names:
            cluster.start(name)
        ports = {n: r.port for n, r in cluster.replicas.items()}
        with run_haproxy(ports, maxconn, directory) as balancer:
            cluster.balancer = balancer
            yield cluster
    finally:
        cluster.close()


def _stream(url: str, key: str, body: dict[str, Any], out: dict[str, Any]) -> None:
    """One streamed chat request; its status, replica, text and whether it completed go
    to ``out``."""
    out.update(text="", complete=False, started=threading.Event())
    try:
        with httpx.stream(
            "POST", url, json={**body, "stream": True}, headers={"X-Session-Id": key}, timeout=300
        ) as r:
            out.update(status=r.status_code, served_by=r.headers.get("x-served-by"))
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    out["complete"] = True
                elif line.startswith("data: "):
                    for choice in json.loads(line[6:]).get("choices", []):
                        out["text"] += choice["delta"].get("content") or ""
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)


def kill_mid_traffic(
    cluster: Cluster, bodies: dict[str, dict[str, Any]], victim: str
) -> dict[str, dict[str, Any]]:
    """Stream every chat body at once through the balancer (X-Session-Id: its key), kill -9
    ``victim`` as soon as one of its streams has sent text, and return what each got."""
    results: dict[str, dict[str, Any]] = {k: {"text": "", "complete": False} for k in bodies}
    threads = [
        threading.Thread(
            target=_stream, args=(cluster.v1 + "/chat/completions", k, body, results[k])
        )
        for k, body in bodies.items()
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while not any(
        r.get("served_by") == victim and r["text"] and not r["complete"] for r in results.values()
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"{victim} never streamed: {results}")
        time.sleep(0.005)
    cluster.kill(victim)
    for t in threads:
        t.join(300)
    return results
