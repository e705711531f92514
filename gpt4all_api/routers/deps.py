"""Dependencies shared by the routers (state kept on ``app.state`` by the lifespan)."""

from __future__ import annotations

from fastapi import Request

from gpt4all_api.registry import ModelRegistry
from gpt4all_api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry
