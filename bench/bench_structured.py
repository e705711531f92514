"""Structured output on CPU: effective tokens/s of schema-held replies vs plain generation.

Same model, same prompt (the system prompt the server writes for the schema, sent as-is
to the plain request too), same sampling, measured in one server, interleaved round by
round (baseline, plain, structured) so machine noise hits all three alike:

* baseline: the prompt alone (max_tokens 1): its evaluation time, subtracted from both;
* plain: free generation (what the model writes unconstrained);
* structured: ``response_format`` ``json_schema`` for the same Pydantic model.

Effective tokens/s = completion tokens / (request time - baseline): the fixed text the
grammar evaluates counts as output, which is the point (prompt evaluation is ~3x faster
than decoding on these CPUs). Also printed: valid replies, and the decoder's rollbacks and
repairs per reply (from /metrics), and replies cut by ``--max-tokens`` (``length``: counted
neither valid nor invalid). Prompt reuse is off so every request evaluates its prompt in
full.

    .venv/bin/python -m bench.bench_structured [--rounds 5] [--temperature 0.7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from openai.lib._pydantic import to_strict_json_schema

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR
from gpt4all_api.structured import JsonOutput, compile_schema
from tests.support.server import ROOT, run_server
from tests.support.structured_cases import CASES


def structured_counters(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gpt4all_api_structured_"):
            out[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return out


def timed(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    r = client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return elapsed, r.json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", default=str(ROOT / DEFAULT_MODELS_DIR))
    ap.add_argument("--model", default=DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=1000)
    args = ap.parse_args()

    env = {
        "MODELS_DIR": args.models_dir,
        "MODEL": args.model,
        "EMBEDDING_MODEL": "",
        "PARALLEL": "1",
        "PROMPT_CACHE": "false",
        "LOG_LEVEL": "warning",
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, run_server(env, Path(tmp) / "server.log") as srv:
        client = httpx.Client(base_url=srv.base_url, timeout=600)
        before = structured_counters(client)
        for model, question in CASES:
            schema = to_strict_json_schema(model)
            system = JsonOutput(compile_schema(schema, strict=True)).instruction()
            user = {"role": "user", "content": question}
            # the server writes `system` as the system prompt of a structured request: the
            # plain one gets it verbatim, so that both evaluate the same prompt
            plain_messages = [{"role": "system", "content": system}, user]
            common = {"model": args.model, "temperature": args.temperature}
            fmt = {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema}}
            held_body = {**common, "messages": [user], "response_format": fmt}
            base_t: list[float] = []
            plain: list[tuple[int, float]] = []
            held: list[tuple[int, float]] = []
            valid = cut = 0
            for _ in range(args.rounds):
                t, body = timed(client, {**common, "messages": plain_messages, "max_tokens": 1})
                base_t.append(t)
                prompt_tokens = body["usage"]["prompt_tokens"]
                t, body = timed(
                    client, {**common, "messages": plain_messages, "max_tokens": args.max_tokens}
                )
                plain.append((body["usage"]["completion_tokens"], t))
                t, body = timed(client, {**held_body, "max_tokens": args.max_tokens})
                assert body["usage"]["prompt_tokens"] == prompt_tokens, "prompts differ"
                held.append((body["usage"]["completion_tokens"], t))
                choice = body["choices"][0]
                if choice["finish_reason"] == "length":
                    cut += 1
                    continue
                try:
                    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
                    valid += 1
                except ValueError:
                    pass
            prompt_time = statistics.median(base_t)

            def rate(samples: list[tuple[int, float]], prompt_time: float = prompt_time) -> float:
                return sum(n for n, _ in samples) / sum(
                    max(t - prompt_time, 1e-3) for _, t in samples
                )

            rows.append(
                {
                    "case": model.__name__,
                    "prompt_s": prompt_time,
                    "plain_tps": rate(plain),
                    "plain_tokens": statistics.mean(n for n, _ in plain),
                    "held_tps": rate(held),
                    "held_tokens": statistics.mean(n for n, _ in held),
                    "valid": f"{valid}/{args.rounds - cut}",
                    "cut": cut,
                }
            )
        after = structured_counters(client)

    def delta(name: str) -> float:
        key = f"gpt4all_api_structured_{name}_total"
        return after.get(key, 0.0) - before.get(key, 0.0)

    print(f"model {args.model}, temperature {args.temperature}, {args.rounds} rounds per case\n")
    print(f"{'case':8} {'prompt s':>8} {'plain tok/s':>11} {'(tokens)':>8} {'held tok/s':>10} "
          f"{'(tokens)':>8} {'ratio':>6} {'valid':>6} {'length':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['case']:8} {r['prompt_s']:8.3f} {r['plain_tps']:11.1f} {r['plain_tokens']:8.0f} "
            f"{r['held_tps']:10.1f} {r['held_tokens']:8.0f} {r['held_tps'] / r['plain_tps']:6.2f} "
            f"{r['valid']:>6} {r['cut']:>6}"
        )
    ratios = [r["held_tps"] / r["plain_tps"] for r in rows]
    outputs = max(delta("outputs"), 1.0)
    print(
        f"\nstructured / plain effective tokens/s: median {statistics.median(ratios):.2f} "
        f"(target >= 1.0)\nper structured reply: {delta('rollbacks') / outputs:.2f} rollbacks, "
        f"{delta('repairs') / outputs:.2f} repairs ({int(outputs)} replies)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
