"""The reference deployment for real: three API processes (SmolLM2, one slot each) behind
HAProxy running deploy/haproxy.cfg, sharing a PostgreSQL database and a Redis that the
tests start. Conversations return to the replica that holds them (by X-Session-Id,
prompt_cache_key or user, long bodies too; Responses chains by previous_response_id),
any replica continues any conversation through Redis, a restarted one from its disk, and
a replica killed mid-traffic costs only its in-flight streams. Timings are the
benchmark's job (bench/bench_cluster.py); here the token counts and routes are checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.cluster import Cluster, kill_mid_traffic, run_cluster
from tests.support.fixtures import SMOL
from tests.support.postgres import PostgresServer, create_database
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(600)

GREEDY = {"temperature": 0, "max_tokens": 16}
NAMES = ["api1", "api2", "api3"]


def system(topic: str) -> dict[str, str]:
    """A system prompt past the publishing threshold (~300 tokens), one per conversation."""
    return {"role": "system", "content": f"You help members of the {topic} club. " * 30}


@pytest.fixture(scope="module")
def cluster(
    default_models_dir: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    env = {
        "MODELS_DIR": str(default_models_dir),
        "MODEL": SMOL,
        "EMBEDDING_MODEL": "",
        "PARALLEL": "1",
        "N_THREADS": "1",
        "DATABASE_URL": create_database(postgres_server),
        "KV_CACHE_URL": redis_server.url,
    }
    redis_server.client().flushall()  # type: ignore[attr-defined]
    with run_cluster(tmp_path_factory.mktemp("cluster"), env, NAMES, maxconn=1) as c:
        yield c


def post(
    url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    r = httpx.post(url + path, json=body, headers=headers or {}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json(), r.headers.get("x-served-by", "")


def chat(
    url: str, messages: list[dict[str, str]], headers: dict[str, str] | None = None, **extra: Any
) -> tuple[str, dict[str, Any], str]:
    body, served_by = post(
        url, "/chat/completions", {"model": SMOL, "messages": messages, **GREEDY, **extra}, headers
    )
    return body["choices"][0]["message"]["content"], body["usage"], served_by


def cached(usage: dict[str, Any]) -> int:
    return usage["prompt_tokens_details"]["cached_tokens"]


def test_conversations_return_to_their_replica(cluster: Cluster) -> None:
    """By each routing key: the follow-up is served where the conversation is, and reuses
    all of it."""
    routes = {
        "header": lambda k: ({"X-Session-Id": k}, {}),
        "prompt_cache_key": lambda k: ({}, {"prompt_cache_key": k}),
        "user": lambda k: ({}, {"user": k}),
    }
    for how, route in routes.items():
        headers, extra = route(f"{how}-conversation")
        first = [system(how), {"role": "user", "content": "When do we meet?"}]
        text, usage, where = chat(cluster.v1, first, headers, **extra)
        follow = [
            *first,
            {"role": "assistant", "content": text},
            {"role": "user", "content": "Why?"},
        ]
        _, again, where_again = chat(cluster.v1, follow, headers, **extra)
        assert where_again == where != "", how
        assert cached(again) == usage["prompt_tokens"], how


def test_long_bodies_route_by_their_key(cluster: Cluster) -> None:
    """Past HAProxy's default 16 KiB buffer: a 40 KB body is routed by the
    prompt_cache_key at its end; a 300 KB one (past tune.bufsize) by X-Session-Id."""
    where: dict[str, str] = {}
    for i in range(6):
        key = f"long-{i}"
        small = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        _, where[key] = post(cluster.v1, "/chat/completions", {**small, "prompt_cache_key": key})
        padded = {**small, "padding": "x" * 40_000, "prompt_cache_key": key}  # ignored field
        assert len(json.dumps(padded)) > 40_000
        _, served = post(cluster.v1, "/chat/completions", padded)
        assert served == where[key], key
        huge = {**small, "padding": "x" * 300_000}
        _, served = post(cluster.v1, "/chat/completions", huge, {"X-Session-Id": key})
        _, by_header = post(cluster.v1, "/chat/completions", small, {"X-Session-Id": key})
        assert served == by_header, key
    assert len(set(where.values())) > 1  # the keys spread over the replicas


def test_responses_chains_stay_on_their_replica(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=cluster.v1, api_key="x", max_retries=0, timeout=300)
    raw = client.responses.with_raw_response.create(
        model=SMOL, input=[system("chess"), {"role": "user", "content": "Hello!"}], temperature=0
    )
    first, where = raw.parse(), raw.headers["x-served-by"]
    previous = first.id
    for turn in range(3):
        body = {
            "model": SMOL,
            "input": f"Question {turn}?",
            "previous_response_id": previous,
            "temperature": 0,
            "max_output_tokens": 8,
            "stream": turn == 1,
        }
        with httpx.stream("POST", cluster.v1 + "/responses", json=body, timeout=300) as r:
            assert r.status_code == 200
            assert r.headers["x-served-by"] == where, turn
            previous = r.headers["x-response-id"]
            text = r.read().decode()
        assert previous in text
    done = client.responses.retrieve(previous)
    assert done.usage is not None and first.usage is not None
    assert done.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens


def test_another_replica_continues_through_redis(cluster: Cluster) -> None:
    a, b = cluster.replicas["api1"], cluster.replicas["api2"]
    writes = cluster.kv("api1")["redis"]["writes"]
    hits = cluster.kv("api2")["redis"]["hits"]
    first = [system("rowing"), {"role": "user", "content": "What should I bring?"}]
    text, usage, _ = chat(a.v1, first)
    cluster.wait_written("api1", "redis", writes + 1)
    follow = [*first, {"role": "assistant", "content": text}, {"role": "user", "content": "Why?"}]
    there, again, _ = chat(b.v1, follow)
    assert cached(again) == usage["prompt_tokens"]
    assert cluster.kv("api2")["redis"]["hits"] == hits + 1
    metrics = httpx.get(b.url + "/metrics", timeout=10).text
    assert f'kv_tier_hits_total{{model="{SMOL}",tier="redis"}} {hits + 1}.0' in metrics
    assert f'kv_redis_up{{model="{SMOL}"}} 1.0' in metrics
    here, _, _ = chat(a.v1, follow)  # the conversation's own replica, from its live slot
    assert there == here


def test_a_restarted_replica_continues_from_disk(cluster: Cluster) -> None:
    c = cluster.replicas["api3"]
    assert cluster.balancer is not None
    writes = cluster.kv("api3")["disk"]["writes"]
    first = [system("climbing"), {"role": "user", "content": "Is it safe?"}]
    text, usage, _ = chat(c.v1, first)
    cluster.wait_written("api3", "disk", writes + 1)
    cluster.stop("api3")
    try:
        cluster.start("api3", KV_CACHE_URL="")  # its disk only
        follow = [
            *first,
            {"role": "assistant", "content": text},
            {"role": "user", "content": "Sure?"},
        ]
        _, again, _ = chat(c.v1, follow)
        assert cached(again) == usage["prompt_tokens"]
        kv = cluster.kv("api3")
        assert kv["disk"]["hits"] == 1 and "redis" not in kv
    finally:
        cluster.stop("api3")
        cluster.start("api3")
        cluster.balancer.wait("api3", "UP")


def test_a_replica_killed_mid_traffic(cluster: Cluster) -> None:
    """Kill -9 one replica while every replica streams: only the streams it was sending
    fail; everything else, queued or retried, answers as before; then its conversations
    move to the others and the others' stay where they were."""
    assert cluster.balancer is not None
    keys = [f"kill-{i}" for i in range(6)]
    bodies = {
        k: {
            "model": SMOL,
            "messages": [
                {"role": "system", "content": "You are a storyteller."},
                {"role": "user", "content": f"Tell a long story about ship number {i}."},
            ],
            "temperature": 0,
            "max_tokens": 48,
        }
        for i, k in enumerate(keys)
    }
    expected: dict[str, str] = {}
    home: dict[str, str] = {}
    for k in keys:
        body, home[k] = post(cluster.v1, "/chat/completions", bodies[k], {"X-Session-Id": k})
        expected[k] = body["choices"][0]["message"]["content"]
    victim = home[keys[0]]

    results = kill_mid_traffic(cluster, bodies, victim)
    broken = [k for k, r in results.items() if not r["complete"]]
    assert broken, "the victim was streaming when it was killed"
    for k, r in results.items():
        assert r.get("status") == 200, (k, r)  # no 5xx, no error status at all
        if r["complete"]:
            assert r["text"] == expected[k], k
        else:
            assert r["served_by"] == victim and r["text"], (k, r)  # its in-flight stream
            assert expected[k].startswith(r["text"]), k

    cluster.balancer.wait(victim, "DOWN")
    for k in keys:
        text, _, served = chat(
            cluster.v1, bodies[k]["messages"], {"X-Session-Id": k}, max_tokens=48
        )
        assert text == expected[k], k
        if home[k] == victim:
            assert served != victim, k  # its keys moved
        else:
            assert served == home[k], k  # the others stayed
