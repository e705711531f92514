"""Prompt reuse through the API: usage.prompt_tokens_details.cached_tokens, disconnects."""

from __future__ import annotations

import httpx
import openai

from tests.support.fixtures import TINY
from tests.support.openai_schema import validate
from tests.support.server import Server

SENTENCE = "Hello, I am a tiny test model."
SYSTEM = {"role": "system", "content": "You answer in one sentence. " * 2}


def test_follow_up_reports_cached_tokens(tiny_server: Server, tiny_client: openai.OpenAI) -> None:
    first = [SYSTEM, {"role": "user", "content": "A question for the cache test"}]
    r1 = httpx.post(
        tiny_server.v1 + "/chat/completions", json={"model": TINY, "messages": first}
    ).json()
    validate("CreateChatCompletionResponse", r1)
    follow = [
        *first,
        {"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And a follow-up"},
    ]
    r2 = httpx.post(
        tiny_server.v1 + "/chat/completions", json={"model": TINY, "messages": follow}
    ).json()
    validate("CreateChatCompletionResponse", r2)
    assert r2["choices"][0]["message"]["content"] == SENTENCE
    assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] == r1["usage"]["prompt_tokens"]
    assert r2["usage"]["prompt_tokens"] > r1["usage"]["prompt_tokens"]
    # the openai client reads it too, streamed with usage
    stream = tiny_client.chat.completions.create(
        model=TINY, messages=follow, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    # the same prompt again: all but its last call (the new question) is reused
    assert usage.prompt_tokens_details.cached_tokens == r1["usage"]["prompt_tokens"]
    health = httpx.get(tiny_server.base_url + "/health").json()
    assert "cache" in str(health)


def test_disconnect_mid_generation_leaves_the_slot_reusable(
    tiny_server: Server, tiny_client: openai.OpenAI
) -> None:
    messages = [SYSTEM, {"role": "user", "content": "I will leave early"}]
    with httpx.stream(
        "POST",
        tiny_server.v1 + "/chat/completions",
        json={"model": TINY, "messages": messages, "stream": True},
    ) as r:
        for _ in r.iter_lines():
            break  # the client goes away after the first event
    for _ in range(2):
        r2 = tiny_client.chat.completions.create(model=TINY, messages=messages, temperature=0)
        assert r2.choices[0].message.content == SENTENCE
        assert r2.usage is not None and r2.usage.prompt_tokens_details is not None
