"""``/health``: answers at once, even during a generation (no model call involved)."""

from __future__ import annotations

from typing import Any

from gpt4all_api.registry import ModelRegistry
from gpt4all_api.shutdown import ShutdownCoordinator


class HealthService:
    def __init__(
        self, registry: ModelRegistry, shutdown: ShutdownCoordinator, inference_mode: str
    ) -> None:
        self.registry = registry
        self.shutdown = shutdown
        self.inference_mode = inference_mode

    async def status(self) -> tuple[dict[str, Any], int]:
        """The body and the status: 503 while shutting down (load balancers stop sending
        new requests here) or while a model in memory is not usable."""
        models: dict[str, Any] = {}
        healthy = True
        for model_id, engine in self.registry.engines.items():
            status = await engine.health()
            models[model_id] = status
            healthy = healthy and bool(status.get("loaded", False))
        draining = self.shutdown.draining
        body = {
            "status": "shutting_down" if draining else "ok" if healthy else "unavailable",
            "models": models,
            "inference_mode": self.inference_mode,
        }
        return body, 200 if healthy and not draining else 503
