"""The reference deployment measured: API replicas behind HAProxy (deploy/haproxy.cfg) with
a shared PostgreSQL and Redis, all started here, plus one replica with no tiers as the
baseline ("cold": nothing cached, the full evaluation).

Each figure is a ratio of two things measured in this one run, interleaved per
conversation (a new one each run, ~1.45k tokens):

1. follow-up / first TTFT through the balancer (X-Session-Id affinity), with the share of
   the history reused (cached_tokens), and the same on one server alone (the cold one);
2. a follow-up on the *other* replica, restored from Redis / the same follow-up evaluated
   in full (cold);
3. a follow-up after a restart of its replica (without Redis: its disk only) / full;
4. a replica killed mid-traffic: streams lost (all of them its in-flight ones), 5xx
   answers, wrong answers, and whether its conversations moved and the others stayed.

    make bench-cluster   # = .venv/bin/python -m bench.bench_cluster [--runs 3 --part ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.bench_serving import conversation, stream
from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from tests.support.cluster import Cluster, kill_mid_traffic, run_cluster
from tests.support.postgres import create_database, run_postgres
from tests.support.redis_server import run_redis
from tests.support.server import Server, run_server

CHAT = "/v1/chat/completions"


@contextmanager
def deployment(model: Path, directory: Path, threads: int) -> Iterator[tuple[Cluster, Server]]:
    """Two replicas behind HAProxy (PostgreSQL, Redis) and a cold replica beside them."""
    env = {
        "MODELS_DIR": str(model.parent.resolve()),
        "MODEL": model.stem,
        "EMBEDDING_MODEL": "",
        "PARALLEL": "1",
        "N_THREADS": str(threads),
        "LOG_LEVEL": "warning",
    }
    with ExitStack() as stack:
        pg = stack.enter_context(run_postgres())
        redis = stack.enter_context(run_redis())
        shared = {**env, "DATABASE_URL": create_database(pg), "KV_CACHE_URL": redis.url}
        cluster = stack.enter_context(run_cluster(directory, shared, ["api1", "api2"], 1))
        cold_env = {**env, "KV_DISK_MB": "0", "STATE_CACHE_MB": "0", "DATA_DIR": str(directory)}
        cold = stack.enter_context(run_server(cold_env, directory / "cold.log", timeout=180))
        yield cluster, cold


def body(model: Path, messages: list[dict[str, str]], max_tokens: int = 24) -> dict[str, Any]:
    return {"model": model.stem, "messages": messages, "temperature": 0, "max_tokens": max_tokens}


def reply(base: str, request: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    r = httpx.post(base + CHAT, json=request, headers=headers, timeout=900)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def follow_up(messages: list[dict[str, str]], answer: str, question: str) -> list[dict[str, str]]:
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": question},
    ]


def ms(row: dict[str, Any]) -> str:
    return f"{row['ttft'] * 1000:.0f} ms"


def part_affinity_and_shared(
    model: Path, cluster: Cluster, cold: Server, runs: int, turns: int
) -> dict[str, float]:
    """Per run: turn 1 through the balancer; its follow-up on the other replica (Redis),
    through the balancer (affinity) and on the cold replica (full); on the cold replica a
    second follow-up (one server's own reuse)."""
    balanced, shared, single, cached = [], [], [], []
    for run in range(runs):
        key = {"X-Session-Id": f"bench-{os.getpid()}-{run}"}
        history = conversation(turns, seed=100 + run)
        home = cluster.replicas
        writes = {n: cluster.kv(n)["redis"]["writes"] for n in home}
        first = stream(cluster.v1.removesuffix("/v1"), CHAT, body(model, history), key)
        answer = reply(cluster.v1.removesuffix("/v1"), body(model, history), key)
        where = first["served_by"]
        other = next(n for n in home if n != where)
        cluster.wait_written(where, "redis", writes[where] + 1)
        follow = follow_up(history, answer, "Thanks. One more detail?")
        via_redis = stream(home[other].url, CHAT, body(model, follow))
        cluster.wait_idle()  # each measurement alone: no write of another one running
        again = stream(cluster.v1.removesuffix("/v1"), CHAT, body(model, follow), key)
        cluster.wait_idle()
        full = stream(cold.base_url, CHAT, body(model, follow))
        more = follow_up(follow, reply(cold.base_url, body(model, follow)), "And then?")
        one_server = stream(cold.base_url, CHAT, body(model, more))
        assert again["served_by"] == where, (again, where)
        balanced.append(again["ttft"] / first["ttft"])
        shared.append(via_redis["ttft"] / full["ttft"])
        single.append(one_server["ttft"] / full["ttft"])
        cached.append(again["cached"] / first["prompt"])
        print(
            f"  run {run}: first {ms(first)} ({first['prompt']} tokens) on {where}; follow-up "
            f"there {ms(again)} ({again['cached']}/{again['prompt']} cached); on {other} via "
            f"Redis {ms(via_redis)} ({via_redis['cached']} cached); full {ms(full)}; one "
            f"server's follow-up {ms(one_server)} ({one_server['cached']} cached)"
        )
    return {
        "follow-up / first TTFT through HAProxy (affinity)": statistics.median(balanced),
        "follow-up / first TTFT, one server alone": statistics.median(single),
        "cached / history on follow-ups (affinity)": min(cached),
        "follow-up on the other replica via Redis / full evaluation": statistics.median(shared),
    }


def part_restart(
    model: Path, cluster: Cluster, cold: Server, runs: int, turns: int
) -> dict[str, float]:
    """Turn 1 of ``runs`` conversations on api1, a restart without Redis, the follow-ups
    there (its disk) and on the cold replica (full)."""
    replica = cluster.replicas["api1"]
    writes = cluster.kv("api1")["disk"]["writes"]
    follows = []
    for run in range(runs):
        history = conversation(turns, seed=200 + run)
        follows.append(follow_up(history, reply(replica.url, body(model, history)), "Go on?"))
    cluster.wait_written("api1", "disk", writes + runs)
    cluster.stop("api1")
    ratios = []
    try:
        cluster.start("api1", KV_CACHE_URL="", LOG_LEVEL="warning")
        for run, follow in enumerate(follows):
            cluster.wait_idle()
            restored = stream(replica.url, CHAT, body(model, follow))
            cluster.wait_idle()
            full = stream(cold.base_url, CHAT, body(model, follow))
            ratios.append(restored["ttft"] / full["ttft"])
            print(
                f"  run {run}: after a restart {ms(restored)} ({restored['cached']}/"
                f"{restored['prompt']} cached, from disk); full {ms(full)}"
            )
    finally:
        cluster.stop("api1")
        cluster.start("api1")
        assert cluster.balancer is not None
        cluster.balancer.wait("api1", "UP")
    return {"follow-up after a restart, from disk / full evaluation": statistics.median(ratios)}


def part_kill(model: Path, cluster: Cluster, sessions: int) -> dict[str, float]:
    bodies = {
        f"kill-{i}": body(
            model, [{"role": "user", "content": f"Tell a long story about ship number {i}."}], 64
        )
        for i in range(sessions)
    }
    base = cluster.v1.removesuffix("/v1")
    expected, home = {}, {}
    for key, b in bodies.items():
        r = httpx.post(base + CHAT, json=b, headers={"X-Session-Id": key}, timeout=900)
        expected[key], home[key] = (
            r.json()["choices"][0]["message"]["content"],
            r.headers["x-served-by"],
        )
    victim = home["kill-0"]
    results = kill_mid_traffic(cluster, bodies, victim)
    lost = [k for k, r in results.items() if not r["complete"]]
    errors = sum(1 for r in results.values() if r.get("status", 0) >= 500)
    wrong = sum(1 for k, r in results.items() if r["complete"] and r["text"] != expected[k])
    assert cluster.balancer is not None
    cluster.balancer.wait(victim, "DOWN")
    moved = stayed = 0
    for key, b in bodies.items():
        r = httpx.post(base + CHAT, json=b, headers={"X-Session-Id": key}, timeout=900)
        errors += r.status_code >= 500
        wrong += r.json()["choices"][0]["message"]["content"] != expected[key]
        served = r.headers["x-served-by"]
        moved += home[key] == victim and served != victim
        stayed += home[key] != victim and served == home[key]
    on_victim = sum(1 for h in home.values() if h == victim)
    print(
        f"  {sessions} sessions, {on_victim} on {victim}: {len(lost)} stream(s) lost, all "
        f"{'on it' if all(results[k]['served_by'] == victim for k in lost) else 'NOT on it'}; "
        f"5xx {errors}; wrong answers {wrong}; afterwards {moved}/{on_victim} of its "
        f"sessions moved, {stayed}/{sessions - on_victim} others stayed"
    )
    return {
        "killed replica: streams lost beyond its in-flight ones": sum(
            1 for k in lost if results[k]["served_by"] != victim
        ),
        "killed replica: 5xx answers": errors,
        "killed replica: wrong answers": wrong,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODELS_DIR / DEFAULT_CHAT_MODEL_FILE)
    ap.add_argument("--part", default="affinity,restart,kill")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--turns", type=int, default=17, help="exchanges in each conversation")
    ap.add_argument("--threads", type=int, default=1, help="N_THREADS of every replica")
    args = ap.parse_args()
    parts = args.part.split(",")
    print(f"model {args.model.name}, {os.cpu_count()} cores, N_THREADS={args.threads}")
    figures: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp,
        deployment(args.model, Path(tmp), args.threads) as (cluster, cold),
    ):
        if "affinity" in parts:
            figures |= part_affinity_and_shared(args.model, cluster, cold, args.runs, args.turns)
        if "restart" in parts:
            figures |= part_restart(args.model, cluster, cold, max(1, args.runs - 1), args.turns)
        if "kill" in parts:
            figures |= part_kill(args.model, cluster, 4)
    targets = {
        "follow-up / first TTFT through HAProxy (affinity)": "<= 0.1",
        "cached / history on follow-ups (affinity)": "1.0",
        "follow-up on the other replica via Redis / full evaluation": "<= 0.2",
        "follow-up after a restart, from disk / full evaluation": "<= 0.2",
        "killed replica: streams lost beyond its in-flight ones": "0",
        "killed replica: 5xx answers": "0",
        "killed replica: wrong answers": "0",
    }
    print()
    for name, value in figures.items():
        print(f"{name}: {value:.3f}  (target {targets.get(name, '-')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
