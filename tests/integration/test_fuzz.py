"""Fuzzing the real server with schemathesis over its own OpenAPI document.

Every operation in /openapi.json gets generated requests, valid and invalid; responses
must never be 5xx, must match the documented status codes, content types and schemas, and
the server must still be alive and serving afterwards. MAX_TOKENS_LIMIT keeps generations
short so the whole run takes well under a minute on 2 cores.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks

from gpt4all_api.app import create_app
from gpt4all_api.settings import Settings
from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(
    loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = model_env(loop_models_dir, max_tokens_limit=16, max_n=2, max_prompts=4)
    with serve(tmp_path_factory, "fuzz-server", env) as s:
        yield s


def _own_openapi() -> dict:
    """The document the fuzz server publishes (same settings as far as it depends on them;
    ``test_the_fuzzed_document_is_the_served_one`` checks). Loaded at import so that
    schemathesis can make one test per operation (its lazy fixture loader does not work
    with pytest 9)."""
    app = create_app(Settings(_env_file=None, api_keys=[], api_keys_file=None))
    return app.openapi()


def _served_models_only(document: dict) -> dict:
    """The same document with ``model`` narrowed to the served model in the generation
    requests: random model names are all 404s and would leave generation untested."""
    fuzzed = copy.deepcopy(document)
    schemas = fuzzed["components"]["schemas"]
    for name in ("CreateCompletionRequest", "CreateChatCompletionRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [TINY]}
    return fuzzed


OPENAPI = _own_openapi()
schema = schemathesis.openapi.from_dict(_served_models_only(OPENAPI))


def _supported_subset(document: dict) -> dict:
    """Only the generation operations, narrowed to what the server serves (no tools,
    logprobs or penalties; n, max_tokens and prompt lists within the fuzz server's limits)
    so that most generated requests really generate, streamed or not."""
    fuzzed = _served_models_only(document)
    fuzzed["paths"] = {p: fuzzed["paths"][p] for p in ("/v1/completions", "/v1/chat/completions")}
    schemas = fuzzed["components"]["schemas"]
    unsupported = [
        "logit_bias",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "suffix",
        "best_of",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "modalities",
        "audio",
        "parallel_tool_calls",
        "stream_options",
        "max_completion_tokens",
    ]
    for name in ("CreateCompletionRequest", "CreateChatCompletionRequest"):
        props = schemas[name]["properties"]
        for field in unsupported:
            props.pop(field, None)
        props["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
        props["stream"] = {"type": "boolean"}  # always present: half the cases stream
        schemas[name]["required"] = [*schemas[name].get("required", []), "stream"]
        props["max_tokens"] = {"type": "integer", "minimum": 0, "maximum": 16}
    schemas["CreateCompletionRequest"]["properties"]["prompt"] = {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        ]
    }
    message = schemas["ChatMessage"]
    message["properties"] = {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "name": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    }
    return fuzzed


generation_schema = schemathesis.openapi.from_dict(_supported_subset(OPENAPI))
generation_schema.config.generation.update(modes=[GenerationMode.POSITIVE])
generation_schema.config.max_stream_events = 10_000  # read (and check) whole streams


def test_the_fuzzed_document_is_the_served_one(fuzz_server: Server) -> None:
    assert httpx.get(fuzz_server.base_url + "/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # the same cases on every run, so a failure here is reproducible; FUZZ_RANDOM=1 and a
    # larger FUZZ_EXAMPLES explore further
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, fuzz_server: Server) -> None:
    case.call_and_validate(base_url=fuzz_server.base_url, checks=CHECKS, timeout=30)


@generation_schema.parametrize()
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
def test_generation_conforms_to_its_schema(case: schemathesis.Case, fuzz_server: Server) -> None:
    response = case.call_and_validate(base_url=fuzz_server.base_url, checks=CHECKS, timeout=30)
    if response.status_code == 200 and "text/event-stream" in response.headers["content-type"][0]:
        assert response.text.endswith("data: [DONE]\n\n")
        assert '"error"' not in response.text


def test_server_alive_and_serving_after_fuzzing(fuzz_server: Server) -> None:
    assert fuzz_server.alive()
    r = httpx.post(
        fuzz_server.v1 + "/completions",
        json={"model": TINY, "prompt": "hi", "max_tokens": 7},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"] == "Hello, I am a tiny test model."
    assert "Traceback" not in fuzz_server.log()
