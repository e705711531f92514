"""Tokens/s and time to first token: raw gpt4all bindings vs. this server's HTTP API.

Same model, same prompt, same sampling (temperature 0), measured in one run and
interleaved (raw, HTTP non-streamed, HTTP streamed, repeat) so machine noise hits all
three alike. Prints medians and the ratio of each HTTP path to the raw bindings.

    .venv/bin/python -m bench.bench_inference [--model PATH] [--runs 5] [--max-tokens 128]

(from the repository root: the server is started by tests/support/server.py, the tests'
launcher).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from tests.support.server import run_server

PROMPT = "Here is a list of the numbers from one to two hundred: 1, 2, 3, 4, 5, 6,"


def raw_run(model: object, prompt: str, max_tokens: int, n_batch: int) -> dict[str, float]:
    """One generation through the bindings' C API, as the server's engine calls it."""
    from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

    lm = model.model  # type: ignore[attr-defined]
    first: list[float] = []
    count = 0

    def on_response(_: int, __: bytes) -> bool:
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        count += 1
        return True

    lm._set_context(
        n_predict=max_tokens,
        temp=0.0,
        top_k=40,
        top_p=1.0,
        n_batch=n_batch,
        repeat_penalty=1.18,
        repeat_last_n=64,
        reset_context=True,
    )
    start = time.perf_counter()
    llmodel.llmodel_prompt(
        lm.model,
        prompt.encode(),
        b"%1",
        PromptCallback(lambda _: True),
        ResponseCallback(on_response),
        True,
        lm.context,
        False,
        ctypes.c_char_p(),
    )
    end = time.perf_counter()
    return {
        "ttft": first[0] - start,
        "tokens": count,
        "tps": (count - 1) / (end - first[0]) if count > 1 else 0.0,
        "total": end - start,
    }


def http_run(base: str, model_id: str, prompt: str, max_tokens: int, stream: bool) -> dict:
    body = {
        "model": model_id,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.18,
        "top_k": 40,
        "top_p": 1.0,
    }
    start = time.perf_counter()
    if not stream:
        r = httpx.post(base + "/v1/completions", json=body, timeout=600)
        end = time.perf_counter()
        n = r.json()["usage"]["completion_tokens"]
        return {"ttft": end - start, "tokens": n, "tps": n / (end - start), "total": end - start}
    first = None
    usage = None
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"] and first is None:
                first = time.perf_counter()
            if event.get("usage"):
                usage = event["usage"]
    end = time.perf_counter()
    n = usage["completion_tokens"] if usage else 0
    assert first is not None
    return {
        "ttft": first - start,
        "tokens": n,
        "tps": (n - 1) / (end - first) if n > 1 else 0.0,
        "total": end - start,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODELS_DIR / DEFAULT_CHAT_MODEL_FILE)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=128)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args()
    if not args.model.exists():
        sys.exit(f"{args.model} not found: run `make models` first")

    from gpt4all import GPT4All

    raw = GPT4All(
        args.model.name,
        model_path=str(args.model.parent),
        allow_download=False,
        device="cpu",
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        verbose=False,
    )
    env = {
        "MODEL": args.model.stem,
        "MODELS_DIR": str(args.model.parent.resolve()),
        "N_THREADS": str(args.threads),
        "N_BATCH": str(args.n_batch),
        "N_CTX": str(args.n_ctx),
        "EMBEDDING_MODEL": "",
        "LOG_LEVEL": "warning",
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-server-") as log_dir,
        run_server(env, Path(log_dir) / "server.log") as server,
    ):
        base = server.base_url
        # warm-up, then interleaved measurements
        raw_run(raw, PROMPT, 8, args.n_batch)
        http_run(base, args.model.stem, PROMPT, 8, stream=True)
        results: dict[str, list[dict]] = {
            "raw bindings": [],
            "HTTP non-streamed": [],
            "HTTP streamed": [],
        }
        for _ in range(args.runs):
            results["raw bindings"].append(raw_run(raw, PROMPT, args.max_tokens, args.n_batch))
            results["HTTP non-streamed"].append(
                http_run(base, args.model.stem, PROMPT, args.max_tokens, stream=False)
            )
            results["HTTP streamed"].append(
                http_run(base, args.model.stem, PROMPT, args.max_tokens, stream=True)
            )

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    base_tps = med(results["raw bindings"], "tps")
    base_total = med(results["raw bindings"], "total")
    base_ttft = med(results["raw bindings"], "ttft")
    print(
        f"model {args.model.name}, {args.max_tokens} tokens, {args.threads} threads, "
        f"median of {args.runs} interleaved runs"
    )
    print(
        f"{'path':<20}{'tokens':>7}{'TTFT s':>9}{'tok/s':>9}{'total s':>9}"
        f"{'tok/s ratio':>13}{'TTFT ratio':>12}{'total ratio':>13}"
    )
    for name, rows in results.items():
        tps, ttft, total = med(rows, "tps"), med(rows, "ttft"), med(rows, "total")
        print(
            f"{name:<20}{med(rows, 'tokens'):>7.0f}{ttft:>9.3f}{tps:>9.1f}{total:>9.3f}"
            f"{tps / base_tps:>13.3f}{ttft / base_ttft:>12.3f}{total / base_total:>13.3f}"
        )
    print("(non-streamed: TTFT = whole response, tok/s = tokens / total time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
