"""Serving benchmarks for the CPU engine (issue: prompt reuse and parallel slots).

Each figure is a ratio of two things measured in this one run, so machine noise on a shared
host hits both alike:

1. follow-up / first TTFT of a ~1.5k-token conversation (history + reply + a short turn);
2. aggregate tokens/s of 4 concurrent streaming clients / one client;
3. one client's streamed decode speed / the raw bindings' at their best thread count;
4. server RSS minus the model file, and what each extra slot adds (PARALLEL 1 vs 2);
5. saving + restoring a conversation's context vs evaluating it again (engine level).

    make bench-serving   # = .venv/bin/python -m bench.bench_serving [--part ttft,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.bench_inference import raw_run
from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from tests.support.server import Server, run_server

COUNTING = "Here is a list of the numbers from one to two hundred: 1, 2, 3, 4, 5, 6,"
TOPICS = [
    "the history of the printing press",
    "how bread rises",
    "why the sky is blue",
    "the rules of chess",
    "how bicycles stay upright",
    "the water cycle",
    "how vaccines work",
    "the life of bees",
]


def conversation(turns: int, seed: int = 0) -> list[dict[str, str]]:
    """A long, deterministic chat history (about 85 SmolLM2 tokens per exchange);
    ``seed`` makes it another conversation from its first token."""
    system = f"Session {seed}. You are a patient teacher. Answer briefly."
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        topic = TOPICS[i % len(TOPICS)]
        messages.append({"role": "user", "content": f"Tell me about {topic}, part {i}."})
        messages.append(
            {
                "role": "assistant",
                "content": f"Here is part {i} about {topic}. It is a broad subject with a "
                "long history, many people studied it carefully, and there are simple "
                "ideas at its heart that anyone can follow with a little patience. The "
                "main points are easy to remember once you see how they fit together.",
            }
        )
    messages.append({"role": "user", "content": "Summarize what we discussed in one line."})
    return messages


@contextmanager
def server(model: Path, **env: str) -> Iterator[Server]:
    """The real server (the tests' launcher) serving ``model``; its log in a temporary
    directory."""
    full = {
        "MODELS_DIR": str(model.parent.resolve()),
        "MODEL": model.stem,
        "EMBEDDING_MODEL": "",
        "LOG_LEVEL": "warning",
        **env,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-server-") as log_dir,
        run_server(full, Path(log_dir) / "server.log", timeout=180) as srv,
    ):
        yield srv


def stream(
    base: str, path: str, body: dict, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """One streamed request: TTFT, tokens, decode tokens/s, usage (and, behind HAProxy,
    the replica that served it)."""
    start = time.perf_counter()
    first: float | None = None
    usage: dict = {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base + path, json=body, headers=headers, timeout=900) as r:
        served_by = r.headers.get("x-served-by", "")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            elif first is None and event["choices"]:
                c = event["choices"][0]
                if c.get("text") or (c.get("delta") or {}).get("content"):
                    first = time.perf_counter()
    end = time.perf_counter()
    n = usage.get("completion_tokens", 0)
    assert first is not None
    return {
        "ttft": first - start,
        "tokens": n,
        "tps": (n - 1) / (end - first) if n > 1 else 0.0,
        "total": end - start,
        "prompt": usage.get("prompt_tokens", 0),
        "cached": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
        "served_by": served_by,
    }


def part_ttft(model: Path, runs: int) -> None:
    with server(model) as srv:
        base = srv.base_url
        rows = []
        for run in range(runs):
            history = conversation(17, seed=run)  # a new conversation each run
            chat = {"model": model.stem, "temperature": 0, "max_tokens": 24}
            first = stream(base, "/v1/chat/completions", {**chat, "messages": history})
            reply = httpx.post(
                base + "/v1/chat/completions", json={**chat, "messages": history}, timeout=900
            ).json()["choices"][0]["message"]["content"]
            follow = [*history, {"role": "assistant", "content": reply}]
            follow.append({"role": "user", "content": "Thanks. One more detail?"})
            second = stream(base, "/v1/chat/completions", {**chat, "messages": follow})
            rows.append((first, second))
            print(
                f"  run {run}: first {first['ttft'] * 1000:.0f} ms ({first['prompt']} tokens), "
                f"follow-up {second['ttft'] * 1000:.0f} ms ({second['prompt']} tokens, "
                f"{second['cached']} cached)"
            )
        ratio = statistics.median(b["ttft"] / a["ttft"] for a, b in rows)
        print(f"follow-up / first TTFT: {ratio:.3f} (target <= 0.1)")


def _health_poller(base: str, probes: list[float]) -> tuple[threading.Event, threading.Thread]:
    """Probe /health every 50 ms until the returned event is set."""
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not done.is_set():
                t = time.perf_counter()
                client.get("/health")
                probes.append(time.perf_counter() - t)
                time.sleep(0.05)

    thread = threading.Thread(target=poll)
    thread.start()
    return done, thread


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def part_concurrency(model: Path, max_tokens: int, runs: int, clients: int = 4) -> None:
    """Interleaved rounds: one client alone, then ``clients`` at once (aggregate tokens/s
    over the wall time), /health probed every 50 ms throughout."""
    body = {"model": model.stem, "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0}
    with server(model) as srv:
        base = srv.base_url
        stream(base, "/v1/completions", body)  # warm-up
        ratios: list[float] = []
        idle_health: list[float] = []
        busy_health: list[float] = []
        for run in range(runs):
            probes: list[float] = []
            done, poller = _health_poller(base, probes)
            time.sleep(0.5)
            done.set()
            poller.join()
            idle_health += probes
            one = stream(base, "/v1/completions", body)
            one_tps = one["tokens"] / one["total"]
            results: list[dict[str, float]] = []

            def client(i: int, results: list[dict[str, float]] = results) -> None:
                prompt = COUNTING + " " * i  # not one cached prompt for all
                results.append(stream(base, "/v1/completions", {**body, "prompt": prompt}))

            probes = []
            done, poller = _health_poller(base, probes)
            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            done.set()
            poller.join()
            busy_health += probes
            agg = sum(r["tokens"] for r in results) / wall
            ratios.append(agg / one_tps)
            print(
                f"  run {run}: one client {one_tps:.1f} tok/s; {clients} together {agg:.1f} "
                f"tok/s (ratio {agg / one_tps:.3f}); /health p99 {_p99(probes) * 1000:.1f} ms"
            )
        print(
            f"{clients} clients / 1 client aggregate tokens/s: median "
            f"{statistics.median(ratios):.3f} of {runs} (target >= 1.3)"
        )
        print(
            f"/health p99 while {clients} stream: {_p99(busy_health) * 1000:.1f} ms over "
            f"{len(busy_health)} probes (idle: {_p99(idle_health) * 1000:.1f} ms; target < 50)"
        )


def part_single(model: Path, max_tokens: int, runs: int) -> None:
    """Interleaved: the raw bindings with 1 and 2 threads, one client streamed through
    HTTP (default settings); ratio to the raw bindings' best median."""
    from gpt4all import GPT4All

    raw = GPT4All(model.name, model_path=str(model.parent), allow_download=False, device="cpu")
    body = {"model": model.stem, "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0}
    speeds: dict[str, list[float]] = {"raw 1 thread": [], "raw 2 threads": [], "HTTP": []}
    try:
        with server(model) as srv:
            stream(srv.base_url, "/v1/completions", body)  # warm-up
            raw_run(raw, COUNTING, 8, 128)
            for _ in range(runs):
                for threads in (1, 2):
                    raw.model.set_thread_count(threads)
                    row = raw_run(raw, COUNTING, max_tokens, 128)
                    speeds[f"raw {threads} thread{'s' if threads > 1 else ''}"].append(row["tps"])
                speeds["HTTP"].append(stream(srv.base_url, "/v1/completions", body)["tps"])
    finally:
        raw.close()
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    best = max(medians["raw 1 thread"], medians["raw 2 threads"])
    for name, value in medians.items():
        print(f"{name}: {value:.1f} tok/s (runs: {', '.join(f'{v:.0f}' for v in speeds[name])})")
    print(
        f"one client streamed / raw bindings at best threads: {medians['HTTP'] / best:.3f} "
        "(target >= 0.97)"
    )


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process, from /proc/PID/smaps: ``rss`` as the kernel counts it
    (a file mapped twice counts twice: each slot maps the model file on its own, the pages
    are shared), ``unique`` with each file's pages counted once, ``anon`` private memory."""
    per_file: dict[str, float] = {}
    anon = 0.0
    rss = 0.0
    path = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            path = fields[5] if len(fields) > 5 and fields[5].startswith("/") else ""
        elif fields and fields[0] == "Rss:":
            kb = int(fields[1]) / 1024
            rss += kb
            if path:
                per_file[path] = max(per_file.get(path, 0.0), kb)
            else:
                anon += kb
    return {"rss": rss, "unique": anon + sum(per_file.values()), "anon": anon}


def part_rss(model: Path) -> None:
    size = model.stat().st_size / 2**20
    mem: dict[int, dict[str, float]] = {}
    body = {"model": model.stem, "prompt": COUNTING, "max_tokens": 8, "temperature": 0}
    for parallel in (1, 2, 3):
        with server(model, PARALLEL=str(parallel)) as srv:
            # one request per slot at once, so that every slot has evaluated a prompt
            threads = [
                threading.Thread(
                    target=httpx.post,
                    args=(srv.v1 + "/completions",),
                    kwargs={"json": {**body, "prompt": COUNTING + " " * i}, "timeout": 600},
                )
                for i in range(parallel)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            mem[parallel] = memory_mb(srv.process.pid)
        m = mem[parallel]
        print(
            f"PARALLEL={parallel}: RSS {m['rss']:.0f} MB (each slot maps the model file: "
            f"shared pages counted per mapping); counting the file once {m['unique']:.0f} MB, "
            f"minus the model file ({size:.0f} MB): {m['unique'] - size:.0f} MB; "
            f"private {m['anon']:.0f} MB"
        )
    extra = [mem[p + 1]["unique"] - mem[p]["unique"] for p in (1, 2)]
    print(
        f"per extra slot: {extra[0]:.0f} MB, {extra[1]:.0f} MB (target: its KV cache, "
        f"{kv_cache_mb(model):.0f} MB, + 20 MB); one slot minus model file: "
        f"{mem[1]['unique'] - size:.0f} MB (target <= 150)"
    )


def kv_cache_mb(model: Path, n_ctx: int = 2048) -> float:
    """The f16 KV cache of ``n_ctx`` tokens: layers x n_ctx x (K + V) x KV heads x head size
    x 2 bytes (from the GGUF header)."""
    from gguf import GGUFReader

    fields = GGUFReader(model).fields

    def read(name: str) -> int:
        field = fields[name]
        return int(field.parts[field.data[0]][0])

    arch = bytes(fields["general.architecture"].parts[-1]).decode()
    layers = read(f"{arch}.block_count")
    heads = read(f"{arch}.attention.head_count")
    kv_heads = read(f"{arch}.attention.head_count_kv")
    head_dim = read(f"{arch}.embedding_length") // heads
    return layers * n_ctx * 2 * kv_heads * head_dim * 2 / 2**20


def part_state(model: Path) -> None:
    """Engine level: a conversation's context saved and restored vs evaluated again."""
    from gpt4all_api.engines.base import ChatTurn, Done, GenerationRequest, SamplingParams
    from gpt4all_api.engines.cpu_slots import CpuServing
    from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine

    params = SamplingParams(1, 0.0, 1.0, 1, 0.0, 1.0, 64)

    async def go() -> None:
        eng = Gpt4AllEngine(
            model.stem,
            model,
            n_ctx=2048,
            n_batch=128,
            n_threads=None,
            serving=CpuServing(parallel=1, state_cache_mb=512),
        )
        await eng.start()

        async def timed(turns: tuple[ChatTurn, ...]) -> tuple[float, Done]:
            t = time.perf_counter()
            done = None
            async for event in eng.stream(GenerationRequest(params, messages=turns)):
                if isinstance(event, Done):
                    done = event
            assert done is not None
            return time.perf_counter() - t, done

        a = tuple(ChatTurn(m["role"], m["content"]) for m in conversation(15))
        b = tuple(ChatTurn(m["role"], m["content"]) for m in conversation(14, seed=1))
        follow = (*a, ChatTurn("assistant", "Done."), ChatTurn("user", "And?"))
        t_eval, done_a = await timed(a)  # evaluates A
        await timed(b)  # overwrites the slot: A is saved
        t_restore, done_r = await timed(follow)  # restores A
        assert eng.store is not None
        for s in eng._slots:
            s.cache.clear()
        eng.store.clear()
        t_fresh, _ = await timed(follow)
        info = eng.store.as_dict()
        print(
            f"{done_a.prompt_tokens}-token conversation: evaluate {t_eval * 1000:.0f} ms; "
            f"follow-up after save+restore {t_restore * 1000:.0f} ms "
            f"({done_r.cached_tokens} tokens restored), evaluated again {t_fresh * 1000:.0f} ms"
        )
        print(f"restored / evaluated-again follow-up: {t_restore / t_fresh:.3f} (store: {info})")
        await eng.close()

    asyncio.run(go())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODELS_DIR / DEFAULT_CHAT_MODEL_FILE)
    ap.add_argument("--part", default="ttft,concurrency,single,rss,state")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    parts = args.part.split(",")
    print(f"model {args.model.name}, {os.cpu_count()} cores")
    if "ttft" in parts:
        part_ttft(args.model, args.runs)
    if "concurrency" in parts:
        part_concurrency(args.model, args.max_tokens, args.runs)
    if "single" in parts:
        part_single(args.model, args.max_tokens, args.runs)
    if "rss" in parts:
        part_rss(args.model)
    if "state" in parts:
        part_state(args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
