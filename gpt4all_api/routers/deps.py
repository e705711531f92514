"""The routers' dependencies: the services ``create_app`` built (``wiring.AppServices``)."""

from __future__ import annotations

from fastapi import Request

from gpt4all_api.wiring import AppServices


def get_services(request: Request) -> AppServices:
    return request.app.state.services
