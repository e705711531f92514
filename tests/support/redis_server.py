"""A real, throw-away Redis server for tests and benchmarks (Debian's ``redis-server``).

``run_redis`` starts one on a free local port with no persistence, bounded memory and
LRU eviction (as the shared KV tier expects), and stops it afterwards. Without the binary
the fixtures skip with the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import free_port, stop_process

INSTALL_HINT = (
    "redis-server not found: install it with `apt-get update && apt-get install -y "
    "redis-server` (Debian/Ubuntu; Valkey's valkey-server works too)"
)


def find_redis() -> str | None:
    return shutil.which("redis-server") or shutil.which("valkey-server")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> object:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


@contextmanager
def run_redis(maxmemory: str = "512mb") -> Iterator[RedisServer]:
    binary = find_redis()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="gpt4all-api-redis-"))
    log = base / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(base), "--maxmemory", maxmemory,
             "--maxmemory-policy", "allkeys-lru", "--protected-mode", "no"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = RedisServer(port, proc)
    try:
        import redis

        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield server
    finally:
        stop_process(proc, 10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis server for the session (skips with an install hint if missing)."""
    with run_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied first."""
    import redis

    redis.Redis(host="127.0.0.1", port=redis_server.port).flushall()
    return redis_server.url
