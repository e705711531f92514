"""A real HAProxy (Debian's ``haproxy``) running the repository's own deploy/haproxy.cfg,
for tests and benchmarks.

``deploy_config`` takes that file as it is and changes only where things are: the listen
addresses and the server lines (one per replica given, ``maxconn`` = its slots). Without
the binary the helpers skip with the command that installs it.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import ROOT, Server, free_port, stop_process

CONFIG = ROOT / "deploy" / "haproxy.cfg"
INSTALL_HINT = (
    "haproxy not found: install it with `apt-get update && apt-get install -y haproxy` "
    "(Debian/Ubuntu; HAProxy 2.6 or newer)"
)


def find_haproxy() -> str | None:
    return shutil.which("haproxy")


def deploy_config(
    replicas: dict[str, int], maxconn: int, port: int, stats_port: int, text: str | None = None
) -> str:
    """deploy/haproxy.cfg with its listen ports and one server line per replica (name ->
    port on 127.0.0.1) in each backend; everything else as shipped."""
    text = CONFIG.read_text() if text is None else text
    text = text.replace("bind :4891", f"bind 127.0.0.1:{port}")
    text = text.replace("bind :8404", f"bind 127.0.0.1:{stats_port}")
    out: list[str] = []
    for line in text.splitlines():
        m = re.match(r"(\s+server )api1 api1:4891( .*)$", line)
        if m:
            for name, p in replicas.items():
                rest = m.group(2).replace("generate/api1", f"generate/{name}")
                rest = re.sub(r"maxconn \d+", f"maxconn {maxconn}", rest)
                out.append(f"{m.group(1)}{name} 127.0.0.1:{p}{rest}")
        elif not re.match(r"\s+server api\d", line):
            out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class Balancer(Server):
    """HAProxy: ``base_url`` its frontend, ``stats_url`` its stats page."""

    stats_url: str = ""

    def servers(self, backend: str = "generate") -> dict[str, str]:
        """Server name -> status (UP, DOWN, MAINT, ...) as HAProxy sees it now."""
        text = httpx.get(self.stats_url + "/stats;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            r["svname"]: r["status"].split(" ")[0]
            for r in rows
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait(self, name: str, status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.servers().get(name) != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not {status}: {self.servers()}\n{self.log()}")
            time.sleep(0.1)


@contextmanager
def run_haproxy(replicas: dict[str, int], maxconn: int, directory: Path) -> Iterator[Balancer]:
    """HAProxy with deploy/haproxy.cfg in front of ``replicas``; returns once all are UP."""
    binary = find_haproxy()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    port, stats_port = free_port(), free_port()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(deploy_config(replicas, maxconn, port, stats_port))
    log_path = directory / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
    balancer = Balancer(
        f"http://127.0.0.1:{port}", proc, log_path, stats_url=f"http://127.0.0.1:{stats_port}"
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {proc.returncode}:\n{balancer.log()}")
            try:
                if all(s == "UP" for s in balancer.servers().values()):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy: replicas not UP after 30 s:\n{balancer.log()}")
            time.sleep(0.1)
        yield balancer
    finally:
        stop_process(proc, 10)
