"""GPU mode with ``GPU_BACKEND=openai``: any OpenAI-compatible upstream.

End to end against a real OpenAI-compatible server, this project's own CPU mode (tiny
deterministic model) on another port: at temperature 0 the proxied answers (text,
finish_reason, usage, errors) must be the CPU server's own. Upstream failures are driven
through the fake TGI's Messages API, which is OpenAI-compatible too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_tgi import ANSWER, MODEL_ID, FakeTgi
from tests.support.fixtures import TINY
from tests.support.gpu_fixtures import UPSTREAM_SECRET, gpu_env
from tests.support.server import Server, run_server
from tests.support.sse import read_sse

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]


def completion(server: Server, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = httpx.post(server.v1 + path, json=body, timeout=60)
    return r.status_code, r.json()


def streamed(server: Server, path: str, body: dict[str, Any]) -> tuple[str, list[str], dict]:
    """Text, finish reasons and usage of a streamed request."""
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.v1 + path, json=payload, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events, done = read_sse(r)
    assert done
    text = ""
    finishes = []
    for e in events:
        for c in e["choices"]:
            text += c.get("text") or (c.get("delta") or {}).get("content") or ""
            if c["finish_reason"]:
                finishes.append(c["finish_reason"])
    return text, finishes, events[-1]["usage"]


def strip_ids(body: dict[str, Any]) -> dict[str, Any]:
    """Without ids and the upstream's cache hits (the second of two identical requests
    reuses the first one's evaluated prompt: only cached_tokens differ)."""
    out = {k: v for k, v in body.items() if k not in ("id", "created")}
    if isinstance(out.get("usage"), dict):
        out["usage"] = strip_cached(out["usage"])
    return out


def strip_cached(usage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in usage.items() if k != "prompt_tokens_details"}


# --- against our own CPU mode ----------------------------------------------------------------


def test_models_report_the_upstream_model(openai_upstream_client: openai.OpenAI) -> None:
    models = openai_upstream_client.models.list().data
    assert [m.id for m in models] == [TINY]
    extra = models[0].model_extra or {}
    assert extra["backend"] == "openai" and extra["context_length"] == 256


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completions", {"prompt": "Once upon a time", "max_tokens": 20}),
        ("/completions", {"prompt": ["a", "bc"], "max_tokens": 3, "n": 2, "echo": True}),
        ("/completions", {"prompt": "x", "max_tokens": 0}),
        ("/completions", {"prompt": "x", "max_tokens": 40, "stop": ["am a", "zz"]}),
        ("/chat/completions", {"messages": MESSAGES}),
        ("/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 2}),
        ("/chat/completions", {"messages": MESSAGES, "stop": "tiny", "n": 2}),
    ],
)
def test_same_answers_as_the_upstream(
    tiny_server: Server, openai_upstream_server: Server, path: str, body: dict[str, Any]
) -> None:
    body = {"model": TINY, "temperature": 0, **body}
    status, direct = completion(tiny_server, path, body)
    assert status == 200, direct
    status, proxied = completion(openai_upstream_server, path, body)
    assert status == 200, proxied
    assert strip_ids(proxied) == strip_ids(direct)
    if body.get("n", 1) == 1 and not isinstance(body.get("prompt"), list):
        text, finishes, usage = streamed(openai_upstream_server, path, body)
        choice = direct["choices"][0]
        assert text == choice.get("text", (choice.get("message") or {}).get("content"))
        assert finishes == [choice["finish_reason"]]
        assert strip_cached(usage) == strip_cached(direct["usage"])


def test_upstream_errors_pass_through(tiny_server: Server, openai_upstream_server: Server) -> None:
    body = {"model": TINY, "prompt": "word " * 300, "max_tokens": 5}
    status, direct = completion(tiny_server, "/completions", body)
    assert status == 400 and direct["error"]["code"] == "context_length_exceeded"
    status, proxied = completion(openai_upstream_server, "/completions", body)
    assert status == 400
    assert proxied == direct


def test_our_own_validation_comes_first(openai_upstream_server: Server) -> None:
    status, body = completion(
        openai_upstream_server, "/completions", {"model": "nope", "prompt": "x"}
    )
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = completion(
        openai_upstream_server, "/completions", {"model": TINY, "prompt": "x", "n": 1000}
    )
    assert status == 400 and body["error"]["param"] == "n"


def test_api_key_is_never_logged(openai_upstream_server: Server, tiny_server: Server) -> None:
    completion(openai_upstream_server, "/completions", {"model": TINY, "prompt": "x"})
    assert UPSTREAM_SECRET not in openai_upstream_server.log()


# --- failures, through the fake TGI's OpenAI-compatible Messages API ---------------------------


@pytest.fixture(scope="module")
def via_openai_to_fake(
    fake_tgi: FakeTgi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("openai-to-fake") / "server.log"
    env = gpu_env(
        fake_tgi.url + "/v1",
        GPU_BACKEND="openai",
        GPU_READ_TIMEOUT="2",
        GPU_API_KEY=UPSTREAM_SECRET,
    )
    with run_server(env, log, timeout=30) as server:
        yield server


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **extra}


def test_openai_backend_normalises_tgi_messages_api(
    via_openai_to_fake: Server, fake_tgi: FakeTgi
) -> None:
    status, body = completion(via_openai_to_fake, "/chat/completions", chat("hi", temperature=0))
    assert status == 200
    assert fake_tgi.last_authorization == f"Bearer {UPSTREAM_SECRET}"
    sent = fake_tgi.last("/v1/chat/completions")
    assert sent["model"] == MODEL_ID and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert body["choices"][0]["message"]["content"] == ANSWER
    assert body["choices"][0]["finish_reason"] == "stop"  # TGI says eos_token
    assert body["id"].startswith("chatcmpl-")  # TGI says ""
    text, finishes, usage = streamed(via_openai_to_fake, "/chat/completions", chat("hi"))
    assert (text, finishes) == (ANSWER, ["stop"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(("upstream", "ours"), [(422, 400), (429, 429), (500, 502), (503, 503)])
def test_openai_backend_error_statuses(
    via_openai_to_fake: Server, upstream: int, ours: int
) -> None:
    r = httpx.post(
        via_openai_to_fake.v1 + "/chat/completions", json=chat(f"[[status:{upstream}]]"), timeout=30
    )
    assert r.status_code == ours
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    if ours == 429:
        assert r.headers["retry-after"] == "1"


def test_openai_backend_validation_error_event(via_openai_to_fake: Server) -> None:
    """TGI reports validation errors as an event in a 200 stream."""
    r = httpx.post(via_openai_to_fake.v1 + "/chat/completions", json=chat("word " * 80), timeout=30)
    assert r.status_code == 400
    assert "must have less than 64 tokens" in r.json()["error"]["message"]


@pytest.mark.parametrize("failure", ["error", "drop"])
def test_openai_backend_midstream_failure(via_openai_to_fake: Server, failure: str) -> None:
    payload = chat(f"[[{failure}:2]]", stream=True)
    with httpx.stream("POST", via_openai_to_fake.v1 + "/chat/completions", json=payload) as r:
        events, done = read_sse(r)
    assert done and events[-1]["error"]["type"] == "server_error"
    r = httpx.post(via_openai_to_fake.v1 + "/chat/completions", json=chat(f"[[{failure}:2]]"))
    assert r.status_code == 502


def test_openai_backend_disconnect_closes_upstream(
    via_openai_to_fake: Server, fake_tgi: FakeTgi
) -> None:
    content = "[[slow:0.3]] openai backend, then gone"
    payload = chat(content, stream=True)
    with httpx.stream("POST", via_openai_to_fake.v1 + "/chat/completions", json=payload) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"]["content"]:
                break
    deadline = time.monotonic() + 3
    while not any(
        c.endswith(content + "<|im_end|>\n<|im_start|>assistant\n") for _, c in fake_tgi.disconnects
    ):
        assert time.monotonic() < deadline, fake_tgi.disconnects
        time.sleep(0.05)
