"""The reference deployment as local processes, for tests and bench/: API replicas behind
HAProxy (deploy/haproxy.cfg), sharing one PostgreSQL database (stored responses) and one
Redis (saved contexts), each with a DATA_DIR of its own (its disk tier)."""

from __future__ import annotations

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
