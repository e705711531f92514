"""Configured request limits against the real server: each over-limit value is a clear 400
naming the parameter; values at the limit are served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(loop_models_dir, max_tokens_limit=5, max_n=2, max_prompts=3, max_stop_length=8)
    with serve(tmp_path_factory, "limits-server", env) as s:
        yield s


COMPLETION = {"model": TINY, "prompt": "hi", "max_tokens": 2}
CHAT = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/completions", {**COMPLETION, "max_tokens": 6}, "max_tokens", "at most 5"),
        ("/chat/completions", {**CHAT, "max_tokens": 6}, "max_tokens", "at most 5"),
        (
            "/chat/completions",
            {**CHAT, "max_tokens": None, "max_completion_tokens": 6},
            "max_tokens",
            "at most 5",
        ),
        ("/completions", {**COMPLETION, "n": 3}, "n", "at most 2"),
        ("/chat/completions", {**CHAT, "n": 3}, "n", "at most 2"),
        ("/chat/completions", {**CHAT, "n": 1000}, "n", "'n' must be at most 2."),  # same words
        ("/completions", {**COMPLETION, "n": 129}, "n", "'n' must be at most 2."),
        ("/completions", {**COMPLETION, "prompt": ["a", "b", "c", "d"]}, "prompt", "at most 3"),
        ("/completions", {**COMPLETION, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ("/chat/completions", {**CHAT, "stop": ["123456789"]}, "stop", "at most 8"),
        (
            "/chat/completions",
            {**CHAT, "max_tokens": 0},
            "max_tokens",
            "greater than or equal to 1",
        ),
        (
            "/chat/completions",
            {**CHAT, "max_tokens": None, "max_completion_tokens": 0},
            "max_completion_tokens",
            "greater than or equal to 1",
        ),
        (
            "/responses",
            {"model": TINY, "input": "hi", "max_output_tokens": 0},
            "max_output_tokens",
            "greater than or equal to 1",
        ),
        ("/completions", {**COMPLETION, "stop": "123456789"}, "stop", "at most 8"),
    ],
)
def test_over_the_limit_is_a_clear_400(
    server: Server, path: str, body: dict[str, Any], param: str, words: str
) -> None:
    r = httpx.post(server.v1 + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert words in err["message"]


def test_at_the_limit_is_served(server: Server) -> None:
    r = httpx.post(
        server.v1 + "/completions",
        json={
            **COMPLETION,
            "max_tokens": 5,
            "n": 2,
            "prompt": ["a", "b", "c"],
            "stop": ["12345678", "Q", "W", "Z"],
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert len(choices) == 6 and {c["text"] for c in choices} == {"Hello, I am a tiny"}
    r = httpx.post(server.v1 + "/chat/completions", json={**CHAT, "max_tokens": 5}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/completions", '{"model": "%s", "max_tokens": 1, "prompt": "a\\ud800b"}', "prompt"),
        (
            "/completions",
            '{"model": "%s", "max_tokens": 1, "prompt": ["ok", "\\udfff"], "echo": true}',
            "prompt[1]",
        ),
        (
            "/chat/completions",
            '{"model": "%s", "messages": [{"role": "user", "content": "x\\ud800"}]}',
            "messages[0].content",
        ),
    ],
)
def test_lone_surrogates_are_a_400_not_a_crash(
    server: Server, path: str, raw: str, param: str
) -> None:
    # found by fuzzing: valid JSON, but not text a model can be fed (used to be a 500)
    r = httpx.post(
        server.v1 + path,
        content=(raw % TINY).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
