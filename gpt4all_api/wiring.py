"""Builds the services of one app from its settings, each handed its collaborators.

Nothing is loaded or opened here (that happens in the lifespan: ``start``/``close``), so an
app, or just its services in a test, can be built from settings at no cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gpt4all_api.engines.factory import EngineFactory
from gpt4all_api.metrics import Metrics
from gpt4all_api.model_store.downloads import ModelDownloads
from gpt4all_api.registry import ModelRegistry
from gpt4all_api.response_store import ResponseStore
from gpt4all_api.services.admission import Admission
from gpt4all_api.services.embeddings import EmbeddingService
from gpt4all_api.services.generation.service import GenerationService
from gpt4all_api.services.health import HealthService
from gpt4all_api.services.model_listing import ModelListing
from gpt4all_api.services.responses.service import ResponsesService
from gpt4all_api.settings import Settings
from gpt4all_api.shutdown import ShutdownCoordinator
from gpt4all_api.startup import load_configured_models, model_directory

logger = logging.getLogger(__name__)


@dataclass
class AppServices:
    settings: Settings
    engines: EngineFactory
    registry: ModelRegistry
    admission: Admission
    shutdown: ShutdownCoordinator
    metrics: Metrics | None
    generation: GenerationService
    embeddings: EmbeddingService
    listing: ModelListing
    health: HealthService
    responses: ResponsesService

    async def start(self) -> None:
        """Open the response store (an unreachable database stops start-up with one line).
        GPU mode: start the upstream engine and pin it. Then load the configured models
        (MODEL in CPU mode must load; EMBEDDING_MODEL failing is logged)."""
        await self.responses.start()
        if self.settings.inference_mode == "gpu":
            engine = self.engines.remote()
            await engine.start()
            self.registry.pin(engine)
        await load_configured_models(self.registry, self.settings)

    async def close(self) -> None:
        """Let streams still open send their last events, then free every model."""
        self.shutdown.begin(0)
        await self.shutdown.wait_streams(5.0)
        await self.registry.close()
        logger.info("models freed")
        await self.responses.close()


def build_services(settings: Settings) -> AppServices:
    metrics = Metrics() if settings.metrics_enabled else None
    engines = EngineFactory(settings)
    downloads = (
        ModelDownloads(settings.models_dir, settings.catalog_url, settings.catalog_timeout)
        if settings.allow_download
        else None
    )
    registry = ModelRegistry(
        model_directory(settings),
        engines.local,
        max_loaded=settings.max_loaded_models,
        wait_timeout=settings.model_wait_timeout,
        local_chat=settings.inference_mode == "cpu",
        downloads=downloads,
    )
    admission = Admission(settings.max_queue, settings.queue_timeout or None, metrics)
    shutdown = ShutdownCoordinator(settings.graceful_shutdown_seconds)
    if metrics is not None:
        metrics.watch_state(admission.snapshot, registry.load_states, registry.slot_states)
    return AppServices(
        settings=settings,
        engines=engines,
        registry=registry,
        admission=admission,
        shutdown=shutdown,
        metrics=metrics,
        generation=GenerationService(registry, admission, shutdown, settings),
        embeddings=EmbeddingService(registry, admission, shutdown, settings),
        listing=ModelListing(registry, settings),
        health=HealthService(registry, shutdown, settings.inference_mode),
        responses=ResponsesService(
            registry, admission, shutdown, settings, ResponseStore.from_settings(settings)
        ),
    )
