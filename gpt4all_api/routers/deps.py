"""The routers' dependencies: the services ``create_app`` built (``wiring.AppServices``)
and who is calling (the API key a request was accepted with)."""

from __future__ import annotations

from fastapi import Request

from gpt4all_api.middleware.auth import api_key_digest
from gpt4all_api.wiring import AppServices


def get_services(request: Request) -> AppServices:
    return request.app.state.services


def get_caller(request: Request) -> bytes | None:
    """The caller's API key digest (None when no keys are configured)."""
    return api_key_digest(request.scope)
