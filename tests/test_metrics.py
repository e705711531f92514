"""Prometheus /metrics against the real server: requests by route template and status,
latency, time to first token, tokens, decoding speed, queue depth and loaded models."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpt4all_api.app import create_app
from gpt4all_api.settings import Settings
from tests.support.server import Server

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
