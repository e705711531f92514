"""Prometheus /metrics against the real server: requests by route template and status,
latency, time to first token, tokens, decoding speed, queue depth and loaded models."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpt4all_api.app import create_app
from gpt4all_api.settings import Settings
from tests.support.hardening_fixtures import model_env
from tests.support.server import Server, run_server

TINY = "tiny-test-model"


def scrape(server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = httpx.get(server.base_url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in metrics.get(name, []) if labels.items() <= lab.items())


def test_metrics_after_traffic(tiny_server: Server) -> None:
    before = scrape(tiny_server)
    r = httpx.post(
        tiny_server.v1 + "/completions", json={"model": TINY, "prompt": "hi", "max_tokens": 5}
    )
    assert r.status_code == 200
    body = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", tiny_server.v1 + "/chat/completions", json=body) as s:
        s.read()
    httpx.post(tiny_server.v1 + "/completions", json={"model": TINY})  # 400: no prompt
    httpx.get(tiny_server.base_url + "/no/such/path/12345")  # 404
    after = scrape(tiny_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/completions"
    assert delta("gpt4all_api_requests_total", route=route, status="200", method="POST") == 1
    assert delta("gpt4all_api_requests_total", route=route, status="400") == 1
    assert delta("gpt4all_api_requests_total", route="/v1/chat/completions", status="200") == 1
    assert delta("gpt4all_api_requests_total", route="unmatched", status="404") == 1
    # the raw path of unmatched requests never becomes a label
    assert all("12345" not in str(lab) for lab, _ in after["gpt4all_api_requests_total"])
    assert delta("gpt4all_api_request_duration_seconds_count", route=route) == 2
    assert delta("gpt4all_api_time_to_first_token_seconds_count", model=TINY, stream="false") == 1
    assert delta("gpt4all_api_time_to_first_token_seconds_count", model=TINY, stream="true") == 1
    assert delta("gpt4all_api_generated_tokens_total", model=TINY) == 5 + 7
    assert delta("gpt4all_api_prompt_tokens_total", model=TINY) > 0
    assert delta("gpt4all_api_generation_tokens_per_second_count", model=TINY) == 2
    assert delta("gpt4all_api_queue_wait_seconds_count", model=TINY) == 2
    assert value(after, "gpt4all_api_queue_depth", model=TINY) == 0
    assert value(after, "gpt4all_api_queue_running", model=TINY) == 0
    assert value(after, "gpt4all_api_model_loaded", model=TINY) == 1
    assert value(after, "gpt4all_api_models_loaded") >= 1
    assert 0 < value(after, "gpt4all_api_model_load_seconds", model=TINY) < 60
    assert value(after, "gpt4all_api_requests_in_progress") == 1  # the scrape itself


def test_each_app_has_its_own_registry() -> None:
    a = create_app(Settings(_env_file=None))
    b = create_app(Settings(_env_file=None))
    assert a.state.services.metrics.registry is not b.state.services.metrics.registry
    a.state.services.metrics.requests.labels("GET", "/health", "200").inc()
    assert b"/health" not in b.state.services.metrics.render()
    off = create_app(Settings(_env_file=None, metrics_enabled=False))
    assert off.state.services.metrics is None
    assert all(getattr(r, "path", "") != "/metrics" for r in off.routes)


def test_slots_and_prompt_cache(tiny_server: Server) -> None:
    """CPU chat models: slots, their use and prompt reuse on /metrics, /health and
    /v1/models; usage reports the reused tokens as OpenAI does."""
    before = scrape(tiny_server)
    messages = [
        {"role": "system", "content": "You are a test model with a long system prompt."},
        {"role": "user", "content": "hi"},
    ]
    body = {"model": TINY, "messages": messages, "max_tokens": 3, "temperature": 0}
    usages = []
    for _ in range(2):  # the second one reuses the system message's evaluation
        r = httpx.post(tiny_server.v1 + "/chat/completions", json=body, timeout=60)
        assert r.status_code == 200
        usages.append(r.json()["usage"])
    after = scrape(tiny_server)

    def delta(name: str) -> float:
        return value(after, name, model=TINY) - value(before, name, model=TINY)

    cached = usages[1]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < usages[1]["prompt_tokens"]
    health = httpx.get(tiny_server.base_url + "/health").json()["models"][TINY]
    slots = health["slots"]
    assert slots >= 1
    assert value(after, "gpt4all_api_slots", model=TINY) == slots
    assert value(after, "gpt4all_api_slots_busy", model=TINY) == 0
    assert delta("gpt4all_api_prompt_cache_requests_total") == 2
    assert delta("gpt4all_api_prompt_cache_hits_total") >= 1
    assert delta("gpt4all_api_prompt_cache_cached_tokens_total") >= cached
    assert delta("gpt4all_api_prompt_cache_prompt_tokens_total") == sum(
        u["prompt_tokens"] for u in usages
    )
    total = value(after, "gpt4all_api_prompt_cache_prompt_tokens_total", model=TINY)
    reused = value(after, "gpt4all_api_prompt_cache_cached_tokens_total", model=TINY)
    ratio = value(after, "gpt4all_api_prompt_cache_hit_ratio", model=TINY)
    assert abs(ratio - reused / total) < 1e-3
    # /health and /v1/models show the same slots and cache counters
    assert health["busy"] == 0
    assert health["cache"]["cached_tokens"] == reused
    listed = httpx.get(tiny_server.v1 + "/models/" + TINY).json()
    assert listed["slots"] == slots
    assert listed["cache"]["requests"] == health["cache"]["requests"]


def test_saved_contexts_are_reported_before_the_first_save(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """A fresh server reports its (empty) saved-context store, not null, on /health and
    /metrics; with STATE_CACHE_MB=0 there is none to report."""
    env = model_env(tiny_models_dir)
    with run_server(env, tmp_path / "server.log") as server:
        health = httpx.get(server.base_url + "/health").json()["models"][TINY]
        assert health["saved_contexts"]["entries"] == 0
        assert health["saved_contexts"]["bytes"] == 0
        samples = scrape(server).get("gpt4all_api_saved_contexts", [])
        assert [v for labels, v in samples if labels.get("model") == TINY] == [0]
    with run_server({**env, "STATE_CACHE_MB": "0"}, tmp_path / "off.log") as server:
        health = httpx.get(server.base_url + "/health").json()["models"][TINY]
        assert health["saved_contexts"] is None


def test_usage_schema_has_cached_tokens() -> None:
    """The OpenAPI document describes ``usage.prompt_tokens_details.cached_tokens``."""
    from gpt4all_api.protocol.common import CompletionUsage

    schema = CompletionUsage.model_json_schema()
    assert "prompt_tokens_details" in schema["properties"]
    details = schema["$defs"]["PromptTokensDetails"]["properties"]
    assert details["cached_tokens"]["type"] == "integer"
