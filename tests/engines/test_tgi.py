"""GPU mode against text-generation-inference's documented wire format.

Our real server runs with ``INFERENCE_MODE=gpu`` in front of ``tests/support/fake_tgi.py`` (a small
HTTP server that behaves as TGI does: ``data:`` frames without a space and no ``[DONE]``,
422 on ``top_p=1.0``, ``details``, error events, headers) and is driven with the openai
client and raw HTTP.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from gpt4all_api.engines.remote import iter_sse
from gpt4all_api.engines.tgi import TgiEngine
from gpt4all_api.settings import Settings
from tests.support.fake_tgi import ANSWER, MODEL_ID, FakeTgi, count_tokens, render_chat
from tests.support.gpu_fixtures import TGI_READ_TIMEOUT, gpu_env
from tests.support.server import Server, free_port, run_server
from tests.support.sse import read_sse

ANSWER_TOKENS = 8  # 7 words and </s>
NEUTRAL = {"repeat_penalty": 1.0}  # no repetition_penalty upstream, whatever the defaults


def chat_prompt_tokens(messages: list[dict[str, str]]) -> int:
    return count_tokens(render_chat(messages))


def raw_post(
    server: Server, path: str, body: dict[str, Any], timeout: float = 30
) -> httpx.Response:
    return httpx.post(server.v1 + path, json=body, timeout=timeout)


def raw_stream(
    server: Server, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], list[dict[str, Any]], bool]:
    with httpx.stream("POST", server.v1 + path, json={**body, "stream": True}, timeout=30) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, dict(r.headers), [r.json()], False
        events, done = read_sse(r)
        return r.status_code, dict(r.headers), events, done


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- SSE parsing ----------------------------------------------------------------------------


def test_sse_parser_follows_the_spec() -> None:
    lines = [
        ":",  # keep-alive comment
        "",
        'data:{"a":1}',  # TGI: no space
        "",
        'data: {"b":2}',  # OpenAI: one space, which is not part of the value
        "",
        "event: message",
        "data:  two spaces",
        "data:second line",
        "id: 7",
        "",
        "data:[DONE]",  # no blank line at the very end
    ]

    async def collect() -> list[str]:
        async def source() -> AsyncIterator[str]:
            for line in lines:
                yield line

        return [event async for event in iter_sse(source())]

    assert anyio.run(collect) == ['{"a":1}', '{"b":2}', " two spaces\nsecond line", "[DONE]"]


# --- settings --------------------------------------------------------------------------------


def test_gpu_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="GPU_URL is required"):
        Settings(_env_file=None, inference_mode="gpu")
    with pytest.raises(ValueError, match="GPU_URL must be an http"):
        Settings(_env_file=None, inference_mode="gpu", gpu_url="tgi:80")
    with pytest.raises(ValueError, match="GPU_URL must be an http"):
        Settings(_env_file=None, inference_mode="gpu", gpu_url="ftp://tgi")
    s = Settings(
        _env_file=None, inference_mode="gpu", gpu_url=" http://tgi:80/ ", gpu_api_key="sk-xyz"
    )
    assert s.gpu_url == "http://tgi:80" and s.gpu_backend == "tgi"
    assert "sk-xyz" not in repr(s)
    assert Settings(_env_file=None, gpu_url="", gpu_model_id=" ").gpu_url is None


def test_gpu_mode_without_url_does_not_start(tmp_path: Path) -> None:
    env = {"INFERENCE_MODE": "gpu", "EMBEDDING_MODEL": ""}
    with (
        pytest.raises(RuntimeError, match="GPU_URL is required"),
        run_server(env, tmp_path / "log"),
    ):
        pass


# --- models and health --------------------------------------------------------------------


def test_models_report_the_tgi_model(tgi_client: openai.OpenAI) -> None:
    models = tgi_client.models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    extra = models[0].model_extra or {}
    assert extra["context_length"] == 128 and extra["max_input_tokens"] == 64
    assert extra["backend"] == "tgi"
    assert tgi_client.models.retrieve(MODEL_ID).id == MODEL_ID


def test_health_follows_tgi(tgi_server: Server, fake_tgi: FakeTgi) -> None:
    assert httpx.get(tgi_server.base_url + "/health").status_code == 200
    fake_tgi.healthy = False
    try:
        r = httpx.get(tgi_server.base_url + "/health")
        assert r.status_code == 503
        assert r.json()["models"][MODEL_ID]["upstream"] == "unavailable"
    finally:
        fake_tgi.healthy = True
    assert httpx.get(tgi_server.base_url + "/health").status_code == 200


# --- completions ----------------------------------------------------------------------------


def test_completion(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    prompt = "Say hello to the nice people"
    r = tgi_client.completions.create(
        model=MODEL_ID, prompt=prompt, max_tokens=50, temperature=0, extra_body=NEUTRAL
    )
    assert r.choices[0].text == ANSWER
    assert r.choices[0].finish_reason == "stop"  # TGI: eos_token
    assert r.model == MODEL_ID and r.id.startswith("cmpl-")
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_tokens(prompt)  # details.input_length
    assert r.usage.completion_tokens == ANSWER_TOKENS  # details.generated_tokens
    assert r.usage.total_tokens == count_tokens(prompt) + ANSWER_TOKENS
    sent = fake_tgi.last("/generate_stream")
    assert sent == {
        "inputs": prompt,
        "parameters": {"details": True, "max_new_tokens": 50, "do_sample": False},
    }


def test_streamed_completion(tgi_server: Server) -> None:
    body = {"model": MODEL_ID, "prompt": "hi", "max_tokens": 50, "temperature": 0}
    status, headers, events, done = raw_stream(
        tgi_server, "/completions", {**body, "stream_options": {"include_usage": True}}
    )
    assert status == 200 and done
    assert headers["content-type"].startswith("text/event-stream")
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    assert text == ANSWER
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert [f for f in finishes if f] == ["stop"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == ANSWER_TOKENS
    assert len({e["id"] for e in events}) == 1


@pytest.mark.parametrize(
    ("request_params", "expected"),
    [
        # TGI rejects top_p=1.0 and turns sampling on for any sampling parameter
        (
            {"temperature": 0, "top_p": 0.5, "top_k": 5},
            {"do_sample": False},
        ),
        (
            {"temperature": 0.7, "top_p": 1.0, "top_k": 0, "seed": 7},
            {"do_sample": True, "temperature": 0.7, "seed": 7},
        ),
        (
            {"temperature": 0.5, "top_p": 0.9, "top_k": 5, "repeat_penalty": 1.1, "seed": -1},
            {
                "do_sample": True,
                "temperature": 0.5,
                "top_p": 0.9,
                "top_k": 5,
                "repetition_penalty": 1.1,
                "seed": 2**64 - 1,
            },
        ),
        ({"temperature": 0.5, "top_p": 0}, {"do_sample": False}),  # top_p 0: greedy
    ],
)
def test_parameters_follow_tgi_rules(
    tgi_server: Server, fake_tgi: FakeTgi, request_params: dict, expected: dict
) -> None:
    body = {"model": MODEL_ID, "prompt": "hi", "max_tokens": 4, **NEUTRAL, **request_params}
    r = raw_post(tgi_server, "/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "Hello, I am a"
    assert fake_tgi.last("/generate_stream")["parameters"] == {
        "details": True,
        "max_new_tokens": 4,
        **expected,
    }


def test_max_tokens_gives_length(tgi_client: openai.OpenAI) -> None:
    r = tgi_client.completions.create(model=MODEL_ID, prompt="hi", max_tokens=3, temperature=0)
    assert r.choices[0].text == "Hello, I am"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_max_tokens_zero(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    before = fake_tgi.count("/generate_stream")
    r = tgi_client.completions.create(model=MODEL_ID, prompt="one two", max_tokens=0)
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 0)
    assert fake_tgi.count("/generate_stream") == before  # TGI refuses max_new_tokens=0


def test_stop_sequence_that_tgi_applies(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    r = tgi_client.completions.create(
        model=MODEL_ID, prompt="hi", stop=["am a"], max_tokens=50, temperature=0
    )
    assert r.choices[0].text == "Hello, I "
    assert r.choices[0].finish_reason == "stop"  # TGI: stop_sequence
    assert fake_tgi.last("/generate_stream")["parameters"]["stop"] == ["am a"]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 4)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_inside_a_token_ends_the_upstream_request(
    tgi_server: Server, fake_tgi: FakeTgi, stream: bool
) -> None:
    """TGI only stops when the text *ends* with a stop; ours cuts inside a token too, then
    drops the upstream request and counts the prompt with /tokenize."""
    tokenized = fake_tgi.count("/tokenize")
    body = {"model": MODEL_ID, "prompt": "hi there", "stop": ["ak"], "temperature": 0}
    if stream:
        status, _, events, done = raw_stream(
            tgi_server, "/completions", {**body, "stream_options": {"include_usage": True}}
        )
        assert status == 200 and done
        text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        usage = events[-1]["usage"]
    else:
        r = raw_post(tgi_server, "/completions", body)
        assert r.status_code == 200
        text, usage = r.json()["choices"][0]["text"], r.json()["usage"]
        assert r.json()["choices"][0]["finish_reason"] == "stop"
    assert text == "Hello, I am a f"
    assert usage["prompt_tokens"] == 3 and usage["completion_tokens"] == 5
    assert fake_tgi.count("/tokenize") == tokenized + 1


def test_n_and_echo(tgi_client: openai.OpenAI) -> None:
    r = tgi_client.completions.create(
        model=MODEL_ID, prompt="Q:", n=2, echo=True, max_tokens=2, temperature=0
    )
    assert [c.text for c in r.choices] == ["Q:Hello, I"] * 2
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 4)


# --- chat ---------------------------------------------------------------------------------


def test_chat(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
    ]
    r = tgi_client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0)
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.id.startswith("chatcmpl-") and r.model == MODEL_ID
    assert r.usage is not None
    assert r.usage.prompt_tokens == chat_prompt_tokens(messages)
    assert r.usage.completion_tokens == ANSWER_TOKENS
    sent = fake_tgi.last("/v1/chat/completions")
    assert sent == {
        "model": "tgi",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }


def test_chat_sampling_parameters(tgi_client: openai.OpenAI, fake_tgi: FakeTgi) -> None:
    tgi_client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.8,
        top_p=1.0,
        max_completion_tokens=5,
        seed=3,
        stop=["zz"],
    )
    sent = fake_tgi.last("/v1/chat/completions")
    assert "top_p" not in sent
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"]) == (
        0.8,
        5,
        3,
        ["zz"],
    )


def test_streamed_chat_is_normalised(tgi_server: Server) -> None:
    """TGI's chunks have id "", the role in each delta and finish_reason eos_token."""
    messages = [{"role": "user", "content": "hello"}]
    status, _, events, done = raw_stream(
        tgi_server,
        "/chat/completions",
        {
            "model": MODEL_ID,
            "messages": messages,
            "temperature": 0,
            "stream_options": {"include_usage": True},
        },
    )
    assert status == 200 and done
    ids = {e["id"] for e in events}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("content") or "" for d in deltas) == ANSWER
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert [f for f in finishes if f] == ["stop"]
    usage = events[-1]["usage"]
    assert usage["prompt_tokens"] == chat_prompt_tokens(messages)
    assert usage["completion_tokens"] == ANSWER_TOKENS
    assert all(e["object"] == "chat.completion.chunk" for e in events)


def test_chat_stop_and_length(tgi_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    r = tgi_client.chat.completions.create(
        model=MODEL_ID, messages=messages, stop=["I am"], temperature=0
    )
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Hello, ", "stop")
    r = tgi_client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=2, temperature=0
    )
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Hello, I", "length")


# --- TGI's limits -------------------------------------------------------------------------


def test_more_stops_than_tgi_allows(tgi_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        tgi_client.completions.create(model=MODEL_ID, prompt="hi", stop=["a", "b", "c", "d"])
    assert exc.value.body["param"] == "stop"
    assert "At most 3 stop sequences" in exc.value.body["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_max_input_tokens(tgi_server: Server, stream: bool) -> None:
    prompt = "word " * 70
    body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": 5}
    if stream:
        status, _, events, _ = raw_stream(tgi_server, "/completions", body)
        error = events[0]["error"]
    else:
        r = raw_post(tgi_server, "/completions", body)
        status, error = r.status_code, r.json()["error"]
    assert status == 400
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "must have less than 64 tokens" in error["message"]  # TGI's own message


def test_second_prompt_too_long_is_refused_before_streaming(
    tgi_server: Server, fake_tgi: FakeTgi
) -> None:
    """Later prompts of a list are checked with /tokenize before the first byte is sent."""
    body = {"model": MODEL_ID, "prompt": ["hi", "word " * 70], "max_tokens": 2}
    status, _, events, _ = raw_stream(tgi_server, "/completions", body)
    assert status == 400
    assert events[0]["error"]["code"] == "context_length_exceeded"
    assert fake_tgi.last("/tokenize") == {"inputs": "word " * 70}


def test_prompt_and_max_tokens_over_max_total_tokens(tgi_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "word " * 40}]
    with pytest.raises(openai.BadRequestError) as exc:
        tgi_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=100)
    assert exc.value.body["code"] == "context_length_exceeded"
    assert exc.value.body["param"] == "messages"
    assert "must be <= 128" in exc.value.body["message"]


def test_streamed_chat_over_max_total_tokens_is_a_400(tgi_server: Server) -> None:
    """TGI rejects it in the first event of a 200 stream (OpenAI's error shape on the
    Messages API): no byte has reached our client yet, so it is the same 400 as without
    streaming, not a 502."""
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "word " * 40}],
        "max_tokens": 100,
    }
    status, _, events, _ = raw_stream(tgi_server, "/chat/completions", body)
    assert status == 400
    error = events[0]["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "must be <= 128" in error["message"]


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        ({"error": "Input validation error: `top_k` must be strictly positive",
          "error_type": "validation"}, 400, None),
        ({"error": {"message": "Input validation error: `inputs` tokens + `max_new_tokens` "
          "must be <= 2048. Given: 2000 `inputs` tokens and 100 `max_new_tokens`",
          "http_status_code": 422}}, 400, "context_length_exceeded"),
        ({"error": {"message": "Model is overloaded", "http_status_code": 429}}, 429,
         "rate_limit_exceeded"),
        ({"error": {"message": "Request failed during generation: boom",
          "http_status_code": 422}}, 502, "upstream_error"),
        ({"error": {"message": "Template error: unknown role", "http_status_code": 422}}, 400,
         None),
        ({"error": "Request failed during generation: boom", "error_type": "generation"}, 502,
         "upstream_error"),
    ],
)  # fmt: skip
def test_error_event_shapes_before_the_first_token(
    event: dict[str, Any], status: int, code: str | None
) -> None:
    engine = TgiEngine(Settings(_env_file=None, inference_mode="gpu", gpu_url="http://x"))  # type: ignore[call-arg]
    error = engine.event_error(event, started=False, prompt_param="messages")
    assert error.status_code == status and error.code == code
    after = engine.event_error(event, started=True, prompt_param="messages")
    assert after.status_code == 502  # mid-stream: an error event after the tokens


# --- upstream failures ----------------------------------------------------------------------


def test_tgi_422_becomes_400_with_its_message(tgi_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        tgi_client.completions.create(model=MODEL_ID, prompt="[[status:422]]")
    assert exc.value.body["type"] == "invalid_request_error"
    assert exc.value.body["message"] == "Input validation error: `inputs` cannot be empty"
    assert exc.value.body["param"] == "prompt"


@pytest.mark.parametrize("stream", [False, True])
def test_tgi_429_becomes_429_with_retry_after(tgi_server: Server, stream: bool) -> None:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "[[status:429]]"}]}
    if stream:
        status, headers, events, _ = raw_stream(tgi_server, "/chat/completions", body)
        error = events[0]["error"]
    else:
        r = raw_post(tgi_server, "/chat/completions", body)
        status, headers, error = r.status_code, r.headers, r.json()["error"]
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert "overloaded" in error["message"] and error["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(("upstream", "ours"), [(500, 502), (424, 502), (503, 503)])
def test_tgi_server_errors(tgi_server: Server, upstream: int, ours: int) -> None:
    r = raw_post(
        tgi_server, "/completions", {"model": MODEL_ID, "prompt": f"[[status:{upstream}]]"}
    )
    assert r.status_code == ours
    error = r.json()["error"]
    assert error["type"] == "server_error" and "Traceback" not in error["message"]


def test_error_event_before_any_token(tgi_client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        tgi_client.completions.create(model=MODEL_ID, prompt="[[error:0]]")
    assert exc.value.status_code == 502
    assert "boom" in exc.value.body["message"]


@pytest.mark.parametrize("failure", ["error", "drop"])
@pytest.mark.parametrize("path", ["/completions", "/chat/completions"])
def test_failure_midstream_ends_with_error_event_then_done(
    tgi_server: Server, failure: str, path: str
) -> None:
    prompt = f"[[{failure}:3]]"
    body: dict[str, Any] = {"model": MODEL_ID, "temperature": 0}
    if path == "/completions":
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    status, _, events, done = raw_stream(tgi_server, path, body)
    assert status == 200 and done  # [DONE] still ends the stream
    assert events[-1]["error"]["type"] == "server_error"
    assert all("error" not in e for e in events[:-1])
    texts = [
        e["choices"][0].get("text") or e["choices"][0].get("delta", {}).get("content") or ""
        for e in events[:-1]
    ]
    assert "".join(texts) == "Hello, I am"
    # not streamed: a clean 502
    r = raw_post(tgi_server, path, {k: v for k, v in body.items() if k != "stream"})
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"


def test_timeout_before_first_token_is_504(tgi_server: Server) -> None:
    started = time.monotonic()
    r = raw_post(tgi_server, "/completions", {"model": MODEL_ID, "prompt": "[[stall:4]]"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < TGI_READ_TIMEOUT + 3


def test_unreachable_tgi(tmp_path: Path) -> None:
    """With GPU_MODEL_ID the service starts while TGI is down: unhealthy, 503 on requests.
    Without it, start-up waits GPU_STARTUP_TIMEOUT for /info and then fails clearly."""
    url = f"http://127.0.0.1:{free_port()}"
    env = gpu_env(url, GPU_MODEL_ID="my-model")
    with run_server(env, tmp_path / "a.log", expect_healthy=False) as server:
        assert wait_for(lambda: _health(server) == 503, 20)
        assert httpx.get(server.v1 + "/models").json()["data"][0]["id"] == "my-model"
        r = raw_post(server, "/completions", {"model": "my-model", "prompt": "hi"})
        assert r.status_code == 503 and "retry-after" in r.headers
        assert r.json()["error"]["code"] == "upstream_unavailable"
    env = gpu_env(url, GPU_STARTUP_TIMEOUT="0.5")
    with (
        pytest.raises(RuntimeError, match="set GPU_MODEL_ID"),
        run_server(env, tmp_path / "b.log", timeout=20),
    ):
        pass


def _health(server: Server) -> int:
    try:
        return httpx.get(server.base_url + "/health", timeout=2).status_code
    except httpx.HTTPError:
        return 0


# --- clients that go away -----------------------------------------------------------------


def test_streaming_client_disconnect_closes_upstream(tgi_server: Server, fake_tgi: FakeTgi) -> None:
    prompt = "[[slow:0.3]] streamed, then gone"
    body = {"model": MODEL_ID, "prompt": prompt, "stream": True}
    with httpx.stream("POST", tgi_server.v1 + "/completions", json=body, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["choices"][0]["text"]
                break
    assert wait_for(lambda: ("/generate_stream", prompt) in fake_tgi.disconnects, 3)


def test_non_streaming_client_disconnect_closes_upstream(
    tgi_server: Server, fake_tgi: FakeTgi
) -> None:
    messages = [{"role": "user", "content": "[[slow:0.3]] waiting, then gone"}]
    with pytest.raises(httpx.ReadTimeout):
        raw_post(tgi_server, "/chat/completions", {"model": MODEL_ID, "messages": messages}, 0.5)
    gone = ("/v1/chat/completions", render_chat(messages))
    assert wait_for(lambda: gone in fake_tgi.disconnects, 3)


def test_gpu_mode_queue_is_bounded(fake_tgi: FakeTgi, tmp_path: Path) -> None:
    """Beyond GPU_MAX_CONNECTIONS running requests, MAX_QUEUE applies as in CPU mode."""
    env = gpu_env(fake_tgi.url, GPU_MAX_CONNECTIONS="1", MAX_QUEUE="1")
    with run_server(env, tmp_path / "server.log", timeout=30) as server:
        slow = {"model": MODEL_ID, "prompt": "[[slow:0.3]] hi", "max_tokens": 8}

        def post(_: int) -> httpx.Response:
            return httpx.post(server.v1 + "/completions", json=slow, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(post, range(4)))
        codes = sorted(r.status_code for r in responses)
        # one runs, one waits, the rest are turned away at once with Retry-After
        assert codes.count(200) >= 2 and 429 in codes, codes
        rejected = next(r for r in responses if r.status_code == 429)
        assert rejected.json()["error"]["code"] == "queue_full"
        assert int(rejected.headers["retry-after"]) >= 1
