"""The same OpenAI conformance checks for every inference mode.

* ``cpu``: the tiny deterministic model in-process (gpt4all);
* ``gpu-tgi``: ``INFERENCE_MODE=gpu`` in front of the fake text-generation-inference;
* ``gpu-openai``: ``INFERENCE_MODE=gpu``, ``GPU_BACKEND=openai``, in front of the CPU mode.

A client must not be able to tell them apart: response shapes (OpenAI's own schemas),
usage, finish reasons, stop sequences, ``n``, streaming (same text as non-streamed at
temperature 0, one finish chunk per choice, usage chunk, ``[DONE]`` last) and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.fake_tgi import MODEL_ID
from tests.support.fixtures import TINY
from tests.support.openai_schema import validate, validate_completion_chunk
from tests.support.server import Server
from tests.support.sse import read_sse


@dataclass
class Mode:
    name: str
    server: Server
    model: str

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.server.v1 + path, json={"model": self.model, **body}, timeout=60)

    def stream(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        payload = {"model": self.model, **body, "stream": True}
        with httpx.stream("POST", self.server.v1 + path, json=payload, timeout=60) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            events, done = read_sse(r)  # strict framing, nothing after [DONE]
        assert done, "the stream must end with [DONE]"
        return events


@pytest.fixture(params=["cpu", "gpu-tgi", "gpu-openai"])
def mode(request: pytest.FixtureRequest) -> Mode:
    if request.param == "cpu":
        return Mode("cpu", request.getfixturevalue("tiny_server"), TINY)
    if request.param == "gpu-tgi":
        return Mode("gpu-tgi", request.getfixturevalue("tgi_server"), MODEL_ID)
    return Mode("gpu-openai", request.getfixturevalue("openai_upstream_server"), TINY)


def check_usage(usage: dict[str, Any]) -> None:
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] >= 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert 0 <= cached <= usage["prompt_tokens"]


def counts(usage: dict[str, Any]) -> dict[str, Any]:
    """The token counts; how many prompt tokens a backend had cached depends on what it
    served before (the same request twice: the second reuses the first's prompt)."""
    return {k: v for k, v in usage.items() if k != "prompt_tokens_details"}


def streamed_choices(
    events: list[dict[str, Any]], kind: str
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Text and finish reasons per choice index; checks every chunk's shape on the way."""
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    assert len({e["id"] for e in events}) == 1, "one id for the whole stream"
    for e in events:
        if kind == "chat":
            validate("CreateChatCompletionStreamResponse", e)
        elif e["choices"]:
            validate_completion_chunk(e)
        for c in e["choices"]:
            piece = c["text"] if kind == "completion" else c["delta"].get("content") or ""
            texts[c["index"]] = texts.get(c["index"], "") + piece
            if c["finish_reason"] is not None:
                finishes.setdefault(c["index"], []).append(c["finish_reason"])
    return texts, finishes


def test_models(mode: Mode) -> None:
    listing = httpx.get(mode.server.v1 + "/models").json()
    validate("ListModelsResponse", listing)
    assert mode.model in [m["id"] for m in listing["data"]]
    validate("Model", httpx.get(f"{mode.server.v1}/models/{mode.model}").json())


def test_completions(mode: Mode) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 30, "temperature": 0, "n": 2}
    r = mode.post("/completions", body)
    assert r.status_code == 200, r.text
    whole = r.json()
    validate("CreateCompletionResponse", whole)
    assert whole["object"] == "text_completion" and whole["model"] == mode.model
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    assert all(c["finish_reason"] in ("stop", "length") for c in whole["choices"])
    check_usage(whole["usage"])

    events = mode.stream("/completions", {**body, "stream_options": {"include_usage": True}})
    texts, finishes = streamed_choices(events, "completion")
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert finishes == {c["index"]: [c["finish_reason"]] for c in whole["choices"]}
    assert events[-1]["choices"] == [] and counts(events[-1]["usage"]) == counts(whole["usage"])
    check_usage(events[-1]["usage"])
    assert all(e.get("usage") is None for e in events[:-1])


def test_chat(mode: Mode) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = {"messages": messages, "temperature": 0, "max_tokens": 30}
    r = mode.post("/chat/completions", body)
    assert r.status_code == 200, r.text
    whole = r.json()
    validate("CreateChatCompletionResponse", whole)
    assert whole["object"] == "chat.completion" and whole["id"].startswith("chatcmpl-")
    message = whole["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"]
    assert whole["choices"][0]["finish_reason"] in ("stop", "length")
    check_usage(whole["usage"])

    events = mode.stream("/chat/completions", {**body, "stream_options": {"include_usage": True}})
    texts, finishes = streamed_choices(events, "chat")
    assert texts == {0: message["content"]}
    assert finishes == {0: [whole["choices"][0]["finish_reason"]]}
    roles = [c["delta"].get("role") for e in events for c in e["choices"]]
    assert roles[0] == "assistant" and not any(roles[1:]), "the role comes once, first"
    assert counts(events[-1]["usage"]) == counts(whole["usage"])
    check_usage(events[-1]["usage"])


def test_length_and_stop(mode: Mode) -> None:
    r = mode.post("/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 0})
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    assert choice["finish_reason"] == "length" and usage["completion_tokens"] == 2
    # both test models answer "Hello, I am a ... model."
    messages = [{"role": "user", "content": "Hi"}]
    r = mode.post("/chat/completions", {"messages": messages, "stop": ["I am"], "temperature": 0})
    choice = r.json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("Hello, ", "stop")
    check_usage(r.json()["usage"])
    events = mode.stream("/completions", {"prompt": "Hi", "stop": "am", "temperature": 0})
    texts, finishes = streamed_choices(events, "completion")
    assert texts == {0: "Hello, I "} and finishes == {0: ["stop"]}


@pytest.mark.parametrize("stream", [False, True])
def test_errors(mode: Mode, stream: bool) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    r = httpx.post(
        mode.server.v1 + "/chat/completions",
        json={"model": "no-such-model", "messages": messages, "stream": stream},
    )
    assert r.status_code == 404
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "model_not_found"
    r = mode.post("/chat/completions", {"messages": messages, "temperature": 5, "stream": stream})
    assert r.status_code == 400
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == "temperature"
    assert r.json()["error"]["type"] == "invalid_request_error"
