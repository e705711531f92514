"""The cluster's files as shipped: deploy/haproxy.cfg passes HAProxy's own check (also as
the tests rewrite it), and docker-compose.cluster.yaml follows the project's compose
conventions and agrees with the HAProxy config (replicas, maxconn = PARALLEL)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.haproxy import CONFIG, INSTALL_HINT, deploy_config, find_haproxy
from tests.support.server import ROOT

COMPOSE = ROOT / "docker-compose.cluster.yaml"


def haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    binary = find_haproxy()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    return subprocess.run(
        [binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )


def test_haproxy_accepts_the_shipped_config() -> None:
    done = haproxy_check(CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    # the only warnings: replica names that resolve only inside compose
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert all("could not resolve address 'api" in w for w in warnings), warnings


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if " server " not in line and "bind" not in line]


def test_haproxy_accepts_the_config_the_tests_run(tmp_path: Path) -> None:
    text = deploy_config({"a": 1001, "b": 1002}, maxconn=3, port=1000, stats_port=1003)
    assert text.count("server a 127.0.0.1:1001") == 2
    assert "maxconn 3 maxqueue" in text and "track generate/b" in text
    assert "api1" not in text
    assert _body(text) == _body(CONFIG.read_text())  # nothing else changed
    (tmp_path / "h.cfg").write_text(text)
    done = haproxy_check(tmp_path / "h.cfg")
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr


def test_routing_rules_are_the_documented_ones() -> None:
    text = CONFIG.read_text()
    for rule in (
        "balance hash var(txn.route)",
        "hash-type consistent",
        "option redispatch",
        "req.hdr(x-session-id)",
        "json_query('$.prompt_cache_key')",
        "json_query('$.user')",
        "stick store-response res.hdr(x-response-id)",
        "stick match req.body,json_query('$.previous_response_id')",
        "http-check send meth GET uri /health",
        "tune.bufsize 131072",
        "option http-buffer-request",
    ):
        assert rule in text, rule
    rules = text[text.index("frontend api") :]
    order = [rules.index(k) for k in ("x-session-id", "prompt_cache_key", "'$.user'")]
    assert order == sorted(order)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_conventions() -> None:
    compose = _compose()
    services = compose["services"]
    named = set(compose["volumes"])
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(("./", "${")) or source in named, (name, volume)
    assert services["haproxy"]["image"].startswith("haproxy:2.")
    assert (
        "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in services["haproxy"]["volumes"]
    )


def test_compose_replicas_match_haproxy() -> None:
    services = _compose()["services"]
    text = CONFIG.read_text()
    servers = re.findall(r"^\s+server (\S+) (\S+):4891 check .*maxconn (\d+)", text, re.M)
    assert [s[0] for s in servers] == ["api1", "api2", "api3"]
    for name, host, maxconn in servers:
        api = services[host]
        env = api["environment"]
        assert int(env["PARALLEL"]) == int(maxconn), name  # maxconn = slots
        assert (
            env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
        )
        assert env["KV_CACHE_URL"] == "redis://redis:6379/0"
        assert f"{name}_data:/data" in api["volumes"]  # its own disk tier
        assert services["haproxy"]["depends_on"][name] == {"condition": "service_healthy"}
        assert set(api["depends_on"]) == {"postgres", "redis"}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "allkeys-lru"
