"""How often does prompt reuse change a greedy answer? (the default model, real backend)

For each conversation: the first turn, then its follow-up (history + the reply + a new
question) answered three ways on the same engine: continuing from the cached context in
exact mode (reuse only at segment boundaries: the remaining segments are evaluated by the
same calls, in the same batches, as in a fresh evaluation), in loose mode
(PROMPT_CACHE_EXACT=false: the reply's generated tokens, evaluated one at a time, are
reused too), and from nothing. Prints how many answers and contexts differ from fresh.

    .venv/bin/python -m bench.bench_reuse_equivalence [--conversations 12] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gpt4all_api.engines.base import (
    ChatTurn,
    Done,
    GenerationRequest,
    SamplingParams,
    Token,
)
from gpt4all_api.engines.cpu_slots import CpuServing
from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine
from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_MODELS_DIR

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a terse expert. Answer in one sentence.",
    "You are a friendly teacher who explains things to children.",
]
QUESTIONS = [
    ("What is photosynthesis?", "Why do leaves change colour?"),
    ("Name three planets.", "Which one is the largest?"),
    ("How do I boil an egg?", "How long for a soft one?"),
    ("What is a prime number?", "Is 91 prime?"),
    ("Tell me a fact about owls.", "And one about cats?"),
    ("What does HTTP stand for?", "What is a status code?"),
]


async def answer(eng: Gpt4AllEngine, turns: tuple[ChatTurn, ...], max_tokens: int) -> tuple:
    params = SamplingParams(max_tokens, 0.0, 1.0, 1, 0.0, 1.0, 64)
    pieces: list[str] = []
    done: Done | None = None
    async for event in eng.stream(GenerationRequest(params, messages=turns)):
        if isinstance(event, Token):
            pieces.append(event.text)
        else:
            done = event
    assert done is not None
    lm = eng._slots[0].model.model
    tokens = [lm.context.tokens[i] for i in range(done.prompt_tokens)]
    return "".join(pieces), tokens, done.cached_tokens


def forget(eng: Gpt4AllEngine) -> None:
    for s in eng._slots:
        s.cache.clear()


async def main_async(model: Path, conversations: int, max_tokens: int) -> None:
    engines = {}
    for name, exact in (("exact", True), ("loose", False)):
        eng = Gpt4AllEngine(
            model.stem,
            model,
            n_ctx=2048,
            n_batch=128,
            n_threads=None,
            serving=CpuServing(parallel=1, prompt_cache_exact=exact, state_cache_mb=0),
        )
        await eng.start()
        engines[name] = eng
    diff = {"exact": [0, 0, 0], "loose": [0, 0, 0]}  # answers, contexts, cached tokens
    for i in range(conversations):
        system = SYSTEMS[i % len(SYSTEMS)]
        q1, q2 = QUESTIONS[i % len(QUESTIONS)]
        first = (ChatTurn("system", system), ChatTurn("user", q1))
        for name, eng in engines.items():
            forget(eng)
            reply, _, _ = await answer(eng, first, max_tokens)
            follow = (*first, ChatTurn("assistant", reply), ChatTurn("user", q2))
            reused, reused_tokens, cached = await answer(eng, follow, max_tokens)
            forget(eng)
            fresh, fresh_tokens, _ = await answer(eng, follow, max_tokens)
            diff[name][0] += reused != fresh
            diff[name][1] += reused_tokens != fresh_tokens
            diff[name][2] += cached
    for name, (answers, contexts, cached) in diff.items():
        print(
            f"{name}: {answers}/{conversations} greedy answers differ from fresh, "
            f"{contexts}/{conversations} contexts hold other token ids; "
            f"{cached / conversations:.0f} tokens reused per follow-up"
        )
    for eng in engines.values():
        await eng.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODELS_DIR / DEFAULT_CHAT_MODEL_FILE)
    ap.add_argument("--conversations", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    asyncio.run(main_async(args.model, args.conversations, args.max_tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
