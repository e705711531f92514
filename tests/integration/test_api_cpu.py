"""The CPU service end to end: real uvicorn, real gpt4all backend, real openai 1.x client.

Exact assertions use the tiny deterministic model (tests/support/tinymodel.py): whatever the
prompt, it answers "Hello, I am a tiny test model." in 7 tokens, then its EOS token; its
prompt tokens are counted by ``prompt_tokens_of``. The default SmolLM2 model is exercised too.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.support.fixtures import SMOL, TINY
from tests.support.openai_schema import validate, validate_completion_chunk
from tests.support.server import Server
from tests.support.sse import post_stream

SENTENCE = "Hello, I am a tiny test model."
SENTENCE_TOKENS = 7


def prompt_tokens_of(text: str, specials: int = 0) -> int:
    """Tiny model: BOS, the SentencePiece space prefix ("▁"), one token per UTF-8 byte of
    the text and one per parsed special token."""
    return 1 + 1 + len(text.encode()) + specials


# --- models ------------------------------------------------------------------------------


def test_list_and_retrieve_models(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    listing = httpx.get(tiny_server.v1 + "/models").json()
    validate("ListModelsResponse", listing)
    ids = [m["id"] for m in listing["data"]]
    assert TINY in ids
    model = tiny_client.models.retrieve(TINY)
    assert model.id == TINY and model.object == "model"
    validate("Model", httpx.get(f"{tiny_server.v1}/models/{TINY}").json())


def test_unknown_model_is_404(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    r = httpx.get(tiny_server.v1 + "/models/gpt-5")
    assert r.status_code == 404
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as exc:
        tiny_client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        tiny_client.completions.create(model="nope", prompt="hi")


# --- completions ---------------------------------------------------------------------------


def test_completion_exact_text_usage_and_finish(tiny_server: Server) -> None:
    prompt = "Say hi"
    r = httpx.post(
        tiny_server.v1 + "/completions",
        json={"model": TINY, "prompt": prompt, "max_tokens": 50, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    validate("CreateCompletionResponse", body)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == TINY and abs(body["created"] - time.time()) < 60
    choice = body["choices"][0]
    assert choice == {"text": SENTENCE, "index": 0, "logprobs": None, "finish_reason": "stop"}
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens_of(prompt),
        "completion_tokens": SENTENCE_TOKENS,
        "total_tokens": prompt_tokens_of(prompt) + SENTENCE_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_completion_default_max_tokens_is_16_and_length(tiny_client: openai.OpenAI) -> None:
    r = tiny_client.completions.create(model=TINY, prompt="x", max_tokens=3)
    assert r.choices[0].text == "Hello, I am"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r0 = tiny_client.completions.create(model=TINY, prompt="x", max_tokens=0)
    assert r0.choices[0].text == "" and r0.usage.completion_tokens == 0
    assert (
        r0.usage.prompt_tokens == prompt_tokens_of("x") and r0.choices[0].finish_reason == "length"
    )
    r16 = tiny_client.completions.create(model=TINY, prompt="x")  # OpenAI default: 16
    assert r16.choices[0].text == SENTENCE and r16.choices[0].finish_reason == "stop"


def test_echo_n_and_prompt_lists(tiny_client: openai.OpenAI) -> None:
    prompts = ["First prompt. ", "2nd: "]
    r = tiny_client.completions.create(
        model=TINY, prompt=prompts, n=2, echo=True, max_tokens=20, temperature=0.7
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [prompts[0] + SENTENCE] * 2 + [prompts[1] + SENTENCE] * 2
    # usage: each prompt counted once, every choice's tokens counted
    assert r.usage.prompt_tokens == sum(prompt_tokens_of(p) for p in prompts)
    assert r.usage.completion_tokens == 4 * SENTENCE_TOKENS
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("tiny te", "Hello, I am a "),  # spans the tokens " tiny" and " test"
        (["zzz", "m a"], "Hello, I a"),  # inside " am" + " a"
        ([","], "Hello"),
        ("Hello", ""),
        ("not there", SENTENCE),
    ],
)
def test_stop_sequences_never_leak(tiny_server: Server, stop: Any, expected: str) -> None:
    body = {"model": TINY, "prompt": "p", "max_tokens": 30, "temperature": 0, "stop": stop}
    r = httpx.post(tiny_server.v1 + "/completions", json=body).json()
    assert r["choices"][0]["text"] == expected
    assert r["choices"][0]["finish_reason"] == "stop"
    events, done = post_stream(tiny_server.base_url, "/v1/completions", {**body, "stream": True})
    assert done
    assert "".join(e["choices"][0]["text"] for e in events) == expected
    finishes = [
        e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]
    ]
    assert finishes == ["stop"]


def test_completion_stream_equals_non_stream(tiny_server: Server) -> None:
    body = {
        "model": TINY,
        "prompt": ["a", "bb"],
        "n": 2,
        "max_tokens": 5,
        "temperature": 0,
        "echo": True,
    }
    full = httpx.post(tiny_server.v1 + "/completions", json=body).json()
    events, done = post_stream(
        tiny_server.base_url,
        "/v1/completions",
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert done
    ids = {e["id"] for e in events}
    assert len(ids) == 1 and ids.pop().startswith("cmpl-")
    usage_events = [e for e in events if not e["choices"]]
    assert len(usage_events) == 1 and events[-1] is usage_events[0]
    assert usage_events[0]["usage"] == full["usage"]
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    for e in events[:-1]:
        validate_completion_chunk(e)
        (c,) = e["choices"]
        texts[c["index"]] = texts.get(c["index"], "") + c["text"]
        if c["finish_reason"]:
            finishes.setdefault(c["index"], []).append(c["finish_reason"])
    for c in full["choices"]:
        assert texts[c["index"]] == c["text"]
        assert finishes[c["index"]] == [c["finish_reason"]] == ["length"]


# --- chat ------------------------------------------------------------------------------------


def test_chat_non_stream(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "!"}],
        },
    ]
    raw = httpx.post(
        tiny_server.v1 + "/chat/completions",
        json={"model": TINY, "messages": messages, "temperature": 0},
    ).json()
    validate("CreateChatCompletionResponse", raw)
    assert raw["object"] == "chat.completion" and raw["id"].startswith("chatcmpl-")
    assert raw["choices"][0]["message"] == {
        "role": "assistant",
        "content": SENTENCE,
        "refusal": None,
    }
    assert raw["choices"][0]["finish_reason"] == "stop"
    # ChatML prompt rendered from the model's template, its special tokens parsed (a
    # literal "<|im_start|>" would be 12 byte tokens; parsed, it is one)
    rendered = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi !<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    literal = prompt_tokens_of(rendered)
    plain = prompt_tokens_of(rendered.replace("<|im_start|>", "").replace("<|im_end|>", ""))
    assert plain < raw["usage"]["prompt_tokens"] < literal - 40
    assert raw["usage"]["completion_tokens"] == SENTENCE_TOKENS
    r = tiny_client.chat.completions.create(
        model=TINY, messages=messages, max_completion_tokens=2, n=2
    )
    assert [c.message.content for c in r.choices] == ["Hello, I", "Hello, I"]
    assert [c.finish_reason for c in r.choices] == ["length", "length"]
    assert r.usage.completion_tokens == 4


def test_chat_stream_chunks(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    body = {
        "model": TINY,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0,
        "n": 2,
        "stop": "tiny",
    }
    full = httpx.post(tiny_server.v1 + "/chat/completions", json=body).json()
    events, done = post_stream(
        tiny_server.base_url,
        "/v1/chat/completions",
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert done
    assert len({e["id"] for e in events}) == 1 and len({e["created"] for e in events}) == 1
    for e in events:
        validate("CreateChatCompletionStreamResponse", e)
    # the same prompt again: a cache hit may make cached_tokens differ, nothing else
    cached = "prompt_tokens_details"
    assert events[-1]["choices"] == []
    assert {k: v for k, v in events[-1]["usage"].items() if k != cached} == {
        k: v for k, v in full["usage"].items() if k != cached
    }
    for index in (0, 1):
        mine = [e["choices"][0] for e in events[:-1] if e["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert all("role" not in c["delta"] for c in mine[1:])
        assert "".join(c["delta"]["content"] for c in mine) == "Hello, I am a "
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
        assert mine[-1]["finish_reason"] == "stop"
    # the openai client reassembles the same text
    stream = tiny_client.chat.completions.create(
        model=TINY, messages=body["messages"], temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == SENTENCE


# --- errors ----------------------------------------------------------------------------------


BAD_REQUESTS = [
    ("/completions", {"model": TINY, "prompt": "x", "temperature": 3}, "temperature"),
    ("/completions", {"model": TINY, "prompt": "x", "n": 0}, "n"),
    ("/completions", {"model": TINY}, "prompt"),
    ("/completions", {"model": TINY, "prompt": [1, 2, 3]}, "prompt"),
    ("/completions", {"model": TINY, "prompt": []}, "prompt"),
    ("/completions", {"model": TINY, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/completions", {"model": TINY, "prompt": "x", "stop": ["ok", ""]}, "stop[1]"),
    ("/completions", {"model": TINY, "prompt": "x", "logprobs": 2}, "logprobs"),
    ("/completions", {"model": TINY, "prompt": "x", "suffix": "end"}, "suffix"),
    ("/completions", {"model": TINY, "prompt": "x", "best_of": 3}, "best_of"),
    ("/completions", {"model": TINY, "prompt": "x", "logit_bias": {"1": 5}}, "logit_bias"),
    ("/completions", {"model": TINY, "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("/completions", {"model": TINY, "prompt": "x", "max_tokens": 10**6}, "max_tokens"),
    ("/completions", {"model": TINY, "prompt": "x", "presence_penalty": 1}, "presence_penalty"),
    (
        "/completions",
        {"model": TINY, "prompt": "x", "stream_options": {"include_usage": True}},
        "stream_options",
    ),
    ("/chat/completions", {"model": TINY}, "messages"),
    ("/chat/completions", {"model": TINY, "messages": []}, "messages"),
    (
        "/chat/completions",
        {"model": TINY, "messages": [{"role": "wizard", "content": "x"}]},
        "messages[0].role",
    ),
    (
        "/chat/completions",
        {
            "model": TINY,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice",
    ),
    (
        "/chat/completions",
        {
            "model": TINY,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a"}},
        },
        "response_format.json_schema",
    ),
    (
        "/chat/completions",
        {
            "model": TINY,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "a",
                    "strict": True,
                    "schema": {"type": "string", "pattern": "^a+$"},
                },
            },
        },
        "response_format.json_schema.schema",
    ),
    (
        "/chat/completions",
        {"model": TINY, "messages": [{"role": "user", "content": "x"}], "logprobs": True},
        "logprobs",
    ),
    (
        "/chat/completions",
        {
            "model": TINY,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ],
        },
        "messages[0].content[0]",
    ),
]


@pytest.mark.parametrize(("path", "body", "param"), BAD_REQUESTS)
def test_invalid_requests_are_400_naming_the_parameter(
    tiny_server: Server, path: str, body: dict, param: str
) -> None:
    r = httpx.post(tiny_server.v1 + path, json=body)
    assert r.status_code == 400, r.text
    validate("ErrorResponse", r.json())
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err
    assert err["message"]


def test_malformed_bodies(tiny_server: Server) -> None:
    for content in (b"{not json", b"", b"[]", b'"x"'):
        r = httpx.post(
            tiny_server.v1 + "/chat/completions",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, (content, r.text)
        validate("ErrorResponse", r.json())
    r = httpx.get(tiny_server.v1 + "/nowhere")
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.get(tiny_server.v1 + "/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]
    r = httpx.get(tiny_server.v1 + "/models/")  # no trailing-slash redirect
    assert r.status_code == 404


def test_context_length_exceeded(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    long_prompt = "x" * 400  # 404 tokens; the tiny server runs with N_CTX=256
    for stream in (False, True):
        r = httpx.post(
            tiny_server.v1 + "/completions",
            json={"model": TINY, "prompt": long_prompt, "stream": stream},
        )
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/json")
        validate("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert r.json()["error"]["param"] == "prompt"
    # a later prompt of a list that does not fit is found before streaming starts
    r = httpx.post(
        tiny_server.v1 + "/completions",
        json={"model": TINY, "prompt": ["fits", long_prompt], "stream": True},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        tiny_client.chat.completions.create(
            model=TINY, messages=[{"role": "user", "content": long_prompt}], stream=True
        )
    assert exc.value.body["code"] == "context_length_exceeded"
    assert exc.value.body["param"] == "messages"
    # and the model still serves
    ok = tiny_client.completions.create(model=TINY, prompt="again", max_tokens=30)
    assert ok.choices[0].text == SENTENCE


def test_chat_without_max_tokens_stops_at_context_end(tiny_client: openai.OpenAI) -> None:
    # unset max_tokens: generate until end of turn (the tiny model ends after 7 tokens)
    r = tiny_client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == SENTENCE and r.choices[0].finish_reason == "stop"


def test_concurrent_clients_all_get_correct_answers(tiny_server: Server) -> None:
    def one(i: int) -> tuple[int, dict]:
        r = httpx.post(
            tiny_server.v1 + "/completions",
            json={
                "model": TINY,
                "prompt": "p" * (i + 1),
                "max_tokens": 1 + i % 7,
                "temperature": 0,
            },
            timeout=60,
        )
        return i, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(32)))
    for i, body in results:
        n = 1 + i % 7
        assert body["usage"]["prompt_tokens"] == prompt_tokens_of("p" * (i + 1))
        assert body["usage"]["completion_tokens"] == n
        words = ["Hello,", " I", " am", " a", " tiny", " test", " model."]
        assert body["choices"][0]["text"] == "".join(words[:n])
    assert tiny_server.alive()


# --- the default model (SmolLM2) ---------------------------------------------------------------


def test_smol_chat_answers(smol_client: openai.OpenAI) -> None:
    r = smol_client.chat.completions.create(
        model=SMOL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=60,
    )
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert "<|im_end|>" not in r.choices[0].message.content
    assert r.usage.prompt_tokens > 10 and 0 < r.usage.completion_tokens <= 60


def test_smol_stream_equals_non_stream(smol_server: Server) -> None:
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Name three colours."}],
        "temperature": 0,
        "max_tokens": 40,
    }
    full = httpx.post(smol_server.v1 + "/chat/completions", json=body, timeout=120).json()
    events, done = post_stream(
        smol_server.base_url, "/v1/chat/completions", {**body, "stream": True}
    )
    assert done
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert streamed == full["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]


def _long_stream_body() -> dict:
    # Greedy and without repeat penalty, SmolLM2 counts on for all LONG tokens (checked by
    # test_long_generation_really_is_long), so cancelling it is observable.
    return {
        "model": SMOL,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
        "max_tokens": LONG,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": True,
    }


def test_long_generation_really_is_long(smol_server: Server) -> None:
    body = {**_long_stream_body(), "stream": False, "max_tokens": 300}
    r = httpx.post(smol_server.v1 + "/completions", json=body, timeout=300).json()
    assert r["usage"]["completion_tokens"] == 300 and r["choices"][0]["finish_reason"] == "length"


def test_health_answers_during_generation(smol_server: Server) -> None:
    latencies: list[float] = []
    with httpx.stream(
        "POST", smol_server.v1 + "/completions", json=_long_stream_body(), timeout=120
    ) as r:
        chunks = r.iter_text()
        next(chunks)
        for _ in range(5):
            t = time.perf_counter()
            h = httpx.get(smol_server.base_url + "/health", timeout=10)
            latencies.append(time.perf_counter() - t)
            assert h.status_code == 200 and h.json()["status"] == "ok"
            assert h.json()["models"][SMOL]["loaded"] is True
            next(chunks)
    # generation runs in a worker thread, so the event loop answers at once
    assert max(latencies) < 1.0, latencies


LONG = 1500  # tokens the abandoned generations ask for


def _stream_and_abandon(server: Server, chunks_to_read: int) -> float:
    """Start a long stream, read some chunks, drop the connection; returns tokens/s seen."""
    with httpx.stream(
        "POST", server.v1 + "/completions", json=_long_stream_body(), timeout=120
    ) as r:
        chunks = r.iter_lines()
        seen = 0
        t0 = None
        for line in chunks:
            if line.startswith("data: {"):
                seen += 1
                if seen == 1:
                    t0 = time.perf_counter()
                if seen > chunks_to_read:
                    break
        assert t0 is not None
        return chunks_to_read / max(time.perf_counter() - t0, 1e-3)


def _next_request_seconds(server: Server) -> float:
    t = time.perf_counter()
    r = httpx.post(
        server.v1 + "/completions",
        json={"model": SMOL, "prompt": "Hi", "max_tokens": 3, "temperature": 0},
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    return time.perf_counter() - t


def test_disconnect_frees_the_model(smol_server: Server) -> None:
    rate = _stream_and_abandon(smol_server, 20)
    # Had the abandoned generation gone on, the next request would wait for its remaining
    # ~1480 tokens; the bound scales with the speed measured on this (noisy) machine.
    remaining = (LONG - 20) / rate
    elapsed = _next_request_seconds(smol_server)
    assert elapsed < max(2.0, remaining / 3), (elapsed, remaining)
    # With several slots the next request may have run beside the abandoned one: that one
    # must be gone too (its slot idle, nothing queued) well before it could have finished.
    deadline = time.monotonic() + max(2.0, remaining / 3)
    while True:
        health = httpx.get(smol_server.base_url + "/health").json()["models"][SMOL]
        if health["queue"] == 0 and health["busy"] == 0:
            break
        assert time.monotonic() < deadline, (health, remaining)
        time.sleep(0.05)


def test_non_streamed_disconnect_frees_the_model(smol_server: Server) -> None:
    rate = _stream_and_abandon(smol_server, 20)
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(
            smol_server.v1 + "/completions",
            json={**_long_stream_body(), "stream": False},
            timeout=1.0,
        )
    remaining = LONG / rate - 1.0
    elapsed = _next_request_seconds(smol_server)
    assert elapsed < max(2.0, remaining / 3), (elapsed, remaining)


def test_smol_edge_inputs_do_not_crash(smol_server: Server) -> None:
    # SmolLM2 adds no BOS: an empty prompt would be zero tokens, which aborts llama.cpp
    cases = [
        ("/completions", {"prompt": "", "max_tokens": 3}),
        ("/chat/completions", {"messages": [{"role": "user", "content": ""}], "max_tokens": 3}),
        (
            "/chat/completions",
            {"messages": [{"role": "assistant", "content": "hi"}], "max_tokens": 3},
        ),
        ("/completions", {"prompt": "😀 日本語", "max_tokens": 8, "temperature": 2, "top_p": 0}),
        ("/completions", {"prompt": "x", "max_tokens": 3, "top_k": 0, "min_p": 0.5}),
    ]
    for path, body in cases:
        r = httpx.post(smol_server.v1 + path, json={"model": SMOL, **body}, timeout=60)
        assert r.status_code == 200, (body, r.text)
        assert r.json()["usage"]["completion_tokens"] <= body["max_tokens"]
    assert smol_server.alive()
