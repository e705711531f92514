"""ASGI entry point for uvicorn's reloader and other servers: ``gpt4all_api.asgi:app``."""

from gpt4all_api.app import create_app

app = create_app()
