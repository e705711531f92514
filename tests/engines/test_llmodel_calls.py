"""``ContextTokens`` on the real backend (the tiny scripted model: one token per prompt
byte, a fixed sentence as the answer): evaluation counts, rewinding, sampling that stops
and keeps its last token, a context that is full; and structured replies through the CPU
engine with exact text and usage."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from gpt4all_api.engines.base import ChatTurn, Done, GenerationRequest, SamplingParams, Token
from gpt4all_api.engines.cpu_slots import CpuServing
from gpt4all_api.engines.gpt4all_cpu import Gpt4AllEngine
from gpt4all_api.engines.llmodel_calls import ContextTokens
from gpt4all_api.structured import JsonOutput, compile_schema
from gpt4all_api.structured.decode import NoRoom
from tests.support.tinymodel import DEFAULT_SENTENCE, build_tiny_model, sentence_pieces

N_CTX = 256
GREEDY = SamplingParams(
    max_tokens=None,
    temperature=0.0,
    top_p=1.0,
    top_k=1,
    min_p=0.0,
    repeat_penalty=1.0,
    repeat_last_n=64,
)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(
    loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gpt4AllEngine]:
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    eng = Gpt4AllEngine(
        "tiny",
        path,
        n_ctx=N_CTX,
        n_batch=128,
        n_threads=1,
        serving=CpuServing(parallel=1, state_cache_mb=0),
    )
    loop.run_until_complete(eng.start())
    yield eng
    loop.run_until_complete(eng.close())


def on_worker(loop: asyncio.AbstractEventLoop, eng: Gpt4AllEngine, fn):  # type: ignore[no-untyped-def]
    """Run ``fn(ContextTokens)`` on the slot's worker thread (the bindings' rule)."""
    slot = eng._slots[0]
    lm = slot.model.model
    meta = eng.metadata
    assert meta is not None

    def job(_: object) -> object:
        lm._set_context(n_predict=0, top_k=1, temp=0.0, n_batch=128, reset_context=True)
        lm.context.n_past = 0
        slot.cache.clear()
        tokens = ContextTokens(lm, N_CTX, meta.control_tokens, lambda: False, lambda: None)
        return fn(tokens)

    return loop.run_until_complete(slot.worker.run(job))


def test_evaluate_rewind_and_sample(loop: asyncio.AbstractEventLoop, engine: Gpt4AllEngine) -> None:
    pieces = sentence_pieces(DEFAULT_SENTENCE)

    def check(ctx: ContextTokens) -> None:
        assert ctx.evaluate("<|im_start|>", True) == 2  # BOS + one control token
        # after a control token the SPM tokenizer starts text with a space: "▁abc"
        assert ctx.evaluate("abc", False) == 4
        assert ctx.evaluate("de", False) == 2  # then one token per byte
        ctx.rewind(6)
        assert ctx.evaluate("d", False) == 1 and ctx.n_past == 7
        ctx.rewind(5)
        assert ctx.n_past == 5 and ctx.room == N_CTX - 5
        seen: list[bytes] = []

        def take_two(_: int, piece: bytes) -> bool:
            seen.append(piece)
            return len(seen) < 2  # False: stop, and that token stays

        ctx.generate(10, take_two)
        assert [p.decode() for p in seen] == pieces[:2] and ctx.n_past == 7
        ctx.rewind(5)
        assert ctx.evaluate("x", False) == 1 and ctx.n_past == 6
        with pytest.raises(NoRoom):
            ctx.evaluate("y" * N_CTX, False)
        assert ctx.n_past == 6  # nothing of it evaluated
        # a prefix evaluated and sampling after it, in one call; the limit counts both
        seen.clear()
        ctx.generate(5, lambda _, piece: seen.append(piece) is None, ("xyz", False))
        assert ctx.prefix_tokens == 3 and len(seen) == 2 and ctx.n_past == 11
        with pytest.raises(NoRoom):  # a prefix over the limit: nothing kept
            ctx.generate(2, lambda *_: True, ("abc", False))
        assert ctx.n_past == 11
        assert 2 in ctx.control_tokens and ctx.is_special(2)  # <|im_end|>, the EOS

    on_worker(loop, engine, check)


def stream(
    loop: asyncio.AbstractEventLoop, eng: Gpt4AllEngine, req: GenerationRequest
) -> tuple[str, Done]:
    async def go() -> tuple[str, Done]:
        text, done = "", None
        async for event in eng.stream(req):
            if isinstance(event, Token):
                text += event.text
            elif isinstance(event, Done):
                done = event
        assert done is not None
        return text, done

    return loop.run_until_complete(go())


def structured(schema: dict[str, object], max_tokens: int | None = None) -> GenerationRequest:
    params = dataclasses.replace(GREEDY, max_tokens=max_tokens)
    return GenerationRequest(
        params=params,
        messages=(ChatTurn("user", "hi"),),
        constraint=JsonOutput(compile_schema(schema, strict=True)),
    )


def test_fixed_reply_is_evaluated_with_exact_usage(
    loop: asyncio.AbstractEventLoop, engine: Gpt4AllEngine
) -> None:
    """A reply the schema fixes entirely is evaluated, never sampled: one token per byte."""
    text, done = stream(loop, engine, structured({"const": {"a": [1, "é"]}}))
    assert text == '{"a": [1, "é"]}'
    assert (done.finish_reason, done.completion_tokens) == ("stop", len(text.encode()))


def test_sampled_string_closed_at_eos(
    loop: asyncio.AbstractEventLoop, engine: Gpt4AllEngine
) -> None:
    """The model says its sentence inside the string, then EOS: the decoder closes it.
    Usage: the fixed text one token per byte, the sentence one token per piece."""
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    before = engine.structured.as_dict()
    text, done = stream(loop, engine, structured(schema))
    assert text == '{"s": "' + DEFAULT_SENTENCE + '"}'
    fixed = len('{"s": "') + len('"}')
    assert done.completion_tokens == fixed + len(sentence_pieces(DEFAULT_SENTENCE))
    after = engine.structured.as_dict()
    assert after["outputs"] == before["outputs"] + 1 and after["repairs"] == before["repairs"] + 1


def test_max_tokens_cuts_a_structure(
    loop: asyncio.AbstractEventLoop, engine: Gpt4AllEngine
) -> None:
    text, done = stream(loop, engine, structured({"const": {"abc": 1}}, max_tokens=4))
    assert (text, done.finish_reason, done.completion_tokens) == ('{"ab', "length", 4)


def test_end_of_turn_text_inside_a_value_does_not_end_the_reply(
    loop: asyncio.AbstractEventLoop, engine: Gpt4AllEngine
) -> None:
    """``<|im_end|>`` written out inside a const string is a value, not the end of turn."""
    req = structured({"const": {"s": "a<|im_end|>b"}})
    assert engine.implicit_stops(req) == ()
    assert engine.implicit_stops(dataclasses.replace(req, constraint=None)) == ("<|im_end|>",)
