"""A real, throw-away PostgreSQL server for tests (Debian's ``postgresql`` package).

``run_postgres`` initialises a cluster in a temporary directory, starts it on a free
local port with trust authentication and fsync off, and stops and removes it afterwards.
``paused`` stops all of a cluster's processes (SIGSTOP) for a while: a hung database.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user the
package creates. Without the binaries the fixtures skip with the command that installs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import free_port

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
    "`apt-get update && apt-get install -y postgresql` (Debian/Ubuntu), or set PG_BINDIR"
)


def find_bindir() -> Path | None:
    """PG_BINDIR, the directory of ``initdb`` on PATH, or Debian's newest version dir."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates.extend(v / "bin" for v in reversed(versions))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, workers)."""
        assert self.data_dir is not None
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [postmaster]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


@contextmanager
def paused(server: PostgresServer) -> Iterator[None]:
    """The whole cluster stopped (SIGSTOP) until the block ends: connections are accepted
    by the kernel, nothing answers. Processes started meanwhile cannot exist (the
    postmaster that would start them is stopped)."""
    pids = server.processes()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _runner() -> tuple[list[str], str | None]:
    """Command prefix to run the server as a non-root user, and that user (None: us)."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    if runuser is None:
        pytest.skip("running as root without runuser to run PostgreSQL as 'postgres'")
    return [runuser, "-u", "postgres", "--"], "postgres"


@contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(INSTALL_HINT)
    prefix, user = _runner()
    base = Path(tempfile.mkdtemp(prefix="gpt4all-api-pg-"))
    data = base / "data"
    log = base / "server.log"
    if user is not None:
        shutil.chown(base, user=user)
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    started = False
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            **run,
        )  # fmt: skip
        options = f"-p {port} -h 127.0.0.1 -k {base} -F -c max_connections=60"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", options, "start"],
            **run,
        )  # fmt: skip
        started = True
        yield PostgresServer(host="127.0.0.1", port=port, user="postgres", data_dir=data)
    except subprocess.CalledProcessError as exc:
        detail = log.read_text() if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{detail}") from exc
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                 "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skips with an install hint if missing)."""
    with run_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(server: PostgresServer) -> str:
    """A new, empty database on ``server`` (left for the server's removal); its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)
