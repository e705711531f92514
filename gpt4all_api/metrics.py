"""Prometheus metrics, kept per app (``app.state.metrics``) in their own registry.

Nothing is registered at import time or in prometheus-client's global registry, so every
app built by ``create_app`` (tests build many) counts on its own. Labels stay low in
cardinality: the route *template* (``/v1/models/{model:path}``), never the raw path; the
model id, which is one of the served models.

Queue depth, running requests, loaded models and their load times, and the slots and
prompt-cache counters of CPU chat models are read when ``/metrics`` is scraped (custom
collectors), so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gpt4all_api.request_context import RequestContext

PREFIX = "gpt4all_api"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _StateCollector(Collector):
    """Gauges read at scrape time from the admission gates and the model registry."""

    def __init__(
        self,
        queues: Callable[[], Iterable[tuple[str, int, int]]],
        models: Callable[[], Iterable[tuple[str, bool, float | None]]],
    ) -> None:
        self._queues = queues
        self._models = models

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected lazily; nothing to describe up front

    def collect(self) -> Iterator[Any]:
        waiting = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Requests waiting for a model.", labels=["model"]
        )
        running = GaugeMetricFamily(
            f"{PREFIX}_queue_running", "Requests being served by a model.", labels=["model"]
        )
        for model, n_waiting, n_running in self._queues():
            waiting.add_metric([model], n_waiting)
            running.add_metric([model], n_running)
        loaded = GaugeMetricFamily(
            f"{PREFIX}_model_loaded", "1 while a model is loaded, else 0.", labels=["model"]
        )
        load_time = GaugeMetricFamily(
            f"{PREFIX}_model_load_seconds",
            "Seconds the last load of a model took.",
            labels=["model"],
        )
        n_loaded = 0
        for model, is_loaded, seconds in self._models():
            loaded.add_metric([model], 1 if is_loaded else 0)
            n_loaded += bool(is_loaded)
            if seconds is not None:
                load_time.add_metric([model], seconds)
        count = GaugeMetricFamily(f"{PREFIX}_models_loaded", "Number of models loaded.")
        count.add_metric([], n_loaded)
        yield from (waiting, running, loaded, load_time, count)


class _SlotCollector(Collector):
    """Slots of CPU chat models, their use and the prompt cache, read at scrape time from
    each engine's ``slots_info()`` (the dict /health shows)."""

    def __init__(self, slots: Callable[[], Iterable[tuple[str, dict[str, Any]]]]) -> None:
        self._slots = slots

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])

        slots = gauge("slots", "Instances (slots) of a model serving requests at once.")
        busy = gauge("slots_busy", "Slots generating for a request now.")
        requests = counter("prompt_cache_requests", "Generations that looked up the cache.")
        hits = counter("prompt_cache_hits", "Generations that reused at least one token.")
        prompt = counter("prompt_cache_prompt_tokens", "Prompt tokens of those generations.")
        cached = counter("prompt_cache_cached_tokens", "Prompt tokens reused, not evaluated again.")
        ratio = gauge("prompt_cache_hit_ratio", "Cached / prompt tokens since start.")
        saved = gauge("saved_contexts", "Contexts kept in RAM beyond the slots.")
        saved_bytes = gauge("saved_contexts_bytes", "Bytes those saved contexts hold.")
        tier_labels = ["model", "tier"]
        tier_hits = CounterMetricFamily(
            f"{PREFIX}_kv_tier_hits",
            "Saved contexts restored from disk or Redis.",
            labels=tier_labels,
        )
        tier_rejected = CounterMetricFamily(
            f"{PREFIX}_kv_tier_rejected",
            "Saved contexts ignored as corrupt, stale or mismatched.",
            labels=tier_labels,
        )
        tier_writes = CounterMetricFamily(
            f"{PREFIX}_kv_tier_writes",
            "Saved contexts written to disk or Redis.",
            labels=tier_labels,
        )
        disk_bytes = gauge("kv_disk_bytes", "Bytes of saved contexts on disk (KV_DISK_MB).")
        redis_up = gauge("kv_redis_up", "1 while the shared KV tier (KV_CACHE_URL) answers.")
        outputs = counter("structured_outputs", "Replies held to a schema or a forced call.")
        repairs = counter(
            "structured_repairs",
            "Values the decoder closed or chose where the model's own text was not allowed.",
        )
        rollbacks = counter(
            "structured_rollbacks", "Tokens taken back because a character was not allowed."
        )
        for model, info in self._slots():
            cache = info.get("cache") or {}
            slots.add_metric([model], info.get("slots", 0))
            busy.add_metric([model], info.get("busy", 0))
            requests.add_metric([model], cache.get("requests", 0))
            hits.add_metric([model], cache.get("hits", 0))
            prompt.add_metric([model], cache.get("prompt_tokens", 0))
            cached.add_metric([model], cache.get("cached_tokens", 0))
            ratio.add_metric([model], cache.get("token_hit_rate", 0.0))
            store = info.get("saved_contexts")
            if store is not None:
                saved.add_metric([model], store.get("entries", 0))
                saved_bytes.add_metric([model], store.get("bytes", 0))
            tiers = info.get("kv_tiers") or {}
            for tier in ("disk", "redis"):
                counts = tiers.get(tier)
                if counts is None:
                    continue
                tier_hits.add_metric([model, tier], counts["hits"])
                tier_rejected.add_metric([model, tier], counts["rejected"])
                tier_writes.add_metric([model, tier], counts["writes"])
            if "disk" in tiers:
                disk_bytes.add_metric([model], tiers["disk"]["bytes"])
            if "redis" in tiers:
                redis_up.add_metric([model], int(tiers["redis"]["up"]))
            structured = info.get("structured") or {}
            outputs.add_metric([model], structured.get("outputs", 0))
            repairs.add_metric([model], structured.get("repairs", 0))
            rollbacks.add_metric([model], structured.get("rollbacks", 0))
        yield from (slots, busy, requests, hits, prompt, cached, ratio, saved, saved_bytes)
        yield from (outputs, repairs, rollbacks)
        yield from (tier_hits, tier_rejected, tier_writes, disk_bytes, redis_up)


class Metrics:
    """The service's metrics; ``render()`` gives the exposition for ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request arrival to the last byte of the response.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_requests_in_progress", "HTTP requests being served.", registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from request arrival to the first generated token (queueing included).",
            ["model", "stream"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            f"{PREFIX}_generated_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.tokens_per_second = Histogram(
            f"{PREFIX}_generation_tokens_per_second",
            "Decoding speed of each request: tokens after the first / the time they took.",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time requests waited for a model before being served.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_rejected = Counter(
            f"{PREFIX}_queue_rejected",
            "Requests refused by admission control (queue_full, queue_timeout).",
            ["model", "reason"],
            registry=r,
        )

    def watch_state(
        self,
        queues: Callable[[], Iterable[tuple[str, int, int]]],
        models: Callable[[], Iterable[tuple[str, bool, float | None]]],
        slots: Callable[[], Iterable[tuple[str, dict[str, Any]]]] | None = None,
    ) -> None:
        """Register the scrape-time gauges (queue depth, loaded models, load times; the
        slots and prompt cache of models that have them)."""
        self.registry.register(_StateCollector(queues, models))
        if slots is not None:
            self.registry.register(_SlotCollector(slots))

    def observe_request(
        self, method: str, route: str, status: int, seconds: float, ctx: RequestContext | None
    ) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if ctx is None or ctx.model is None:
            return
        model = ctx.model
        if ctx.ttft is not None:
            self.ttft.labels(model, "true" if ctx.stream else "false").observe(ctx.ttft)
        if ctx.prompt_tokens:
            self.prompt_tokens.labels(model).inc(ctx.prompt_tokens)
        if ctx.completion_tokens:
            self.completion_tokens.labels(model).inc(ctx.completion_tokens)
        rate = ctx.tokens_per_second
        if rate is not None:
            self.tokens_per_second.labels(model).observe(rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)
