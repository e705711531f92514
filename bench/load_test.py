"""Load test: many concurrent clients against the API; throughput, latency, rejections.

Each client loops until the time is up: a completion or chat request (a share of them
streamed, with ``stream_options.include_usage``), the next one as soon as the previous
answer is in. A 429 (queue full) is counted and the client waits ``Retry-After`` (at most
1 s) before its next request; 503s (queue timeout, model busy) are counted too. At the end:
requests/s, generated tokens/s, latency and time-to-first-token percentiles, and how many
requests were rejected, as a table and optionally as JSON.

Bounded on purpose: at most 256 clients and 300 s, and only loopback targets (it refuses
any other host). Unless ``--url`` is given it starts its own server with the tests'
launcher (tests/support/server.py); run it from the repository root:

    .venv/bin/python -m bench.load_test                      # default model, 16 clients, 20 s
    .venv/bin/python -m bench.load_test --clients 64 --max-queue 16 --duration 30
    .venv/bin/python -m bench.load_test --model tiny         # deterministic tiny test model
    .venv/bin/python -m bench.load_test --url http://127.0.0.1:4891   # a running server
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from tests.support.server import run_server
from tests.support.tinymodel import TINY_MODEL_NAME, build_tiny_model

MAX_CLIENTS = 256
MAX_DURATION = 300.0
PROMPTS = [
    "Write one sentence about the sea.",
    "What is the capital of France?",
    "List three colours.",
    "Explain in one sentence what a CPU does.",
    "Say hello in French.",
]


@dataclass
class Result:
    kind: str  # completion | chat
    stream: bool
    status: int  # 0: transport error
    latency: float
    ttft: float | None = None
    completion_tokens: int = 0
    code: str | None = None


@dataclass
class Report:
    clients: int
    duration_s: float
    wall_s: float
    model: str
    max_tokens: int
    stream_share: float
    max_queue: str
    requests: int = 0
    ok: int = 0
    rejected_429: int = 0
    unavailable_503: int = 0
    other_errors: int = 0
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    rejected_latency_ms: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def pick(q: float) -> float:
        return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]

    return {
        "p50": round(pick(0.50) * 1000, 1),
        "p90": round(pick(0.90) * 1000, 1),
        "p99": round(pick(0.99) * 1000, 1),
        "max": round(values[-1] * 1000, 1),
        "mean": round(statistics.fmean(values) * 1000, 1),
    }


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"refusing to load-test {url}: only loopback targets (127.0.0.0/8, ::1)")


@contextmanager
def own_server(env: dict[str, str]) -> Iterator[str]:
    """``python -m gpt4all_api`` on a free loopback port until the block ends; its log is kept."""
    log_path = Path(tempfile.mkdtemp(prefix="load-test-server-")) / "server.log"
    with ExitStack() as stack:
        try:
            server = stack.enter_context(run_server(env, log_path))
        except RuntimeError as e:  # exited or not healthy in time; the message has the log
            raise SystemExit(f"{e}\nlog: {log_path}") from None
        print(f"server {server.base_url} (log: {log_path})", file=sys.stderr)
        yield server.base_url


async def one_request(
    client: httpx.AsyncClient, model: str, rng: random.Random, max_tokens: int, stream_share: float
) -> tuple[Result, float]:
    """One request; returns its result and how long the client should pause afterwards."""
    chat = rng.random() < 0.5
    stream = rng.random() < stream_share
    prompt = rng.choice(PROMPTS)
    body: dict = {"model": model, "max_tokens": max_tokens, "temperature": 0.7, "stream": stream}
    if chat:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
    else:
        path, body["prompt"] = "/v1/completions", prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    kind = "chat" if chat else "completion"
    started = time.perf_counter()
    try:
        if not stream:
            r = await client.post(path, json=body)
            latency = time.perf_counter() - started
            result = Result(kind, False, r.status_code, latency)
            if r.status_code == 200:
                result.completion_tokens = r.json()["usage"]["completion_tokens"]
            else:
                result.code = (r.json().get("error") or {}).get("code")
            return result, _pause(r)
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                result = Result(kind, True, r.status_code, time.perf_counter() - started)
                result.code = (r.json().get("error") or {}).get("code")
                return result, _pause(r)
            ttft = None
            tokens = 0
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Result(kind, True, 599, time.perf_counter() - started, ttft), 0.0
                if ttft is None and any(_text(c) for c in chunk.get("choices", [])):
                    ttft = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
            latency = time.perf_counter() - started
            return Result(kind, True, 200, latency, ttft, tokens), 0.0
    except httpx.HTTPError:
        return Result(kind, stream, 0, time.perf_counter() - started), 0.5


def _text(choice: dict) -> str:
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


def _pause(r: httpx.Response) -> float:
    if r.status_code not in (429, 503):
        return 0.0
    try:
        return min(1.0, float(r.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


async def run_load(
    url: str, model: str, clients: int, duration: float, max_tokens: int, stream_share: float
) -> tuple[list[Result], float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(300.0, connect=10.0)
    results: list[Result] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        # warm-up: one request, not counted
        await one_request(client, model, random.Random(0), max_tokens, 0.0)
        started = time.perf_counter()
        stop_at = started + duration

        async def worker(i: int) -> None:
            rng = random.Random(i)
            await asyncio.sleep(rng.random() * min(1.0, duration / 10))  # stagger the start
            while time.perf_counter() < stop_at:
                result, pause = await one_request(client, model, rng, max_tokens, stream_share)
                results.append(result)
                if pause:
                    await asyncio.sleep(pause)

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - started
    return results, wall


def summarize(results: list[Result], wall: float, report: Report) -> Report:
    ok = [r for r in results if r.status == 200]
    report.wall_s = round(wall, 1)
    report.requests = len(results)
    report.ok = len(ok)
    report.rejected_429 = sum(r.status == 429 for r in results)
    report.unavailable_503 = sum(r.status == 503 for r in results)
    report.other_errors = report.requests - report.ok - report.rejected_429
    report.other_errors -= report.unavailable_503
    report.requests_per_s = round(len(ok) / wall, 2)
    report.tokens_per_s = round(sum(r.completion_tokens for r in ok) / wall, 1)
    report.latency_ms = percentiles([r.latency for r in ok])
    report.ttft_ms = percentiles([r.ttft for r in ok if r.stream and r.ttft is not None])
    report.rejected_latency_ms = percentiles([r.latency for r in results if r.status == 429])
    counts = Counter(f"{r.status} {r.code}" if r.code else str(r.status) for r in results)
    report.statuses = dict(sorted(counts.items()))
    return report


def print_report(report: Report) -> None:
    def fmt(p: dict[str, float]) -> str:
        return " / ".join(f"{p[k]:.0f}" for k in ("p50", "p90", "p99")) if p else "-"

    print(
        f"\n{report.clients} clients, {report.duration_s:.0f} s (wall {report.wall_s} s), "
        f"model {report.model}, max_tokens {report.max_tokens}, "
        f"{report.stream_share:.0%} streamed, MAX_QUEUE {report.max_queue}\n"
    )
    rows = [
        ("requests (ok / total)", f"{report.ok} / {report.requests}"),
        ("throughput", f"{report.requests_per_s} req/s, {report.tokens_per_s} tokens/s"),
        ("latency p50 / p90 / p99 (ms)", fmt(report.latency_ms)),
        ("TTFT streamed p50 / p90 / p99 (ms)", fmt(report.ttft_ms)),
        ("rejected 429 (queue full)", str(report.rejected_429)),
        ("429 answered in p50 / p90 / p99 (ms)", fmt(report.rejected_latency_ms)),
        ("503 (queue timeout / busy)", str(report.unavailable_503)),
        ("other errors", str(report.other_errors)),
    ]
    print("| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(f"\nstatuses: {report.statuses}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="an already running server (loopback only)")
    ap.add_argument(
        "--model",
        default=DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf"),
        help="model id; 'tiny' builds and serves the deterministic tiny test model",
    )
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stream-share", type=float, default=0.5)
    ap.add_argument("--max-queue", type=int, default=8, help="MAX_QUEUE of the own server")
    ap.add_argument("--n-threads", type=int, default=None, help="N_THREADS of the own server")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        ap.error(f"--clients must be 1..{MAX_CLIENTS}")
    if not 1 <= args.duration <= MAX_DURATION:
        ap.error(f"--duration must be 1..{MAX_DURATION:.0f} seconds")
    if not 0.0 <= args.stream_share <= 1.0:
        ap.error("--stream-share must be between 0 and 1")

    model = args.model
    with ExitStack() as stack:
        if args.url:
            require_loopback(args.url)
            url = args.url.rstrip("/")
            max_queue = "server's"
        else:
            models_dir = args.models_dir
            if model == "tiny":
                models_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                build_tiny_model(models_dir / f"{TINY_MODEL_NAME}.gguf")
                model = TINY_MODEL_NAME
            elif not (models_dir / f"{model}.gguf").exists():
                raise SystemExit(
                    f"{model}.gguf is not in {models_dir}: run "
                    "`python -m gpt4all_api.model_store fetch-default` or pass --models-dir"
                )
            env = {
                "MODELS_DIR": str(models_dir.resolve()),
                "MODEL": model,
                "EMBEDDING_MODEL": "",
                "MAX_QUEUE": str(args.max_queue),
                "MAX_TOKENS_LIMIT": str(max(args.max_tokens, 16)),
            }
            if args.n_threads:
                env["N_THREADS"] = str(args.n_threads)
            url = stack.enter_context(own_server(env))
            max_queue = str(args.max_queue)
        results, wall = asyncio.run(
            run_load(url, model, args.clients, args.duration, args.max_tokens, args.stream_share)
        )
    report = Report(
        clients=args.clients,
        duration_s=args.duration,
        wall_s=0,
        model=model,
        max_tokens=args.max_tokens,
        stream_share=args.stream_share,
        max_queue=max_queue,
    )
    summarize(results, wall, report)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
