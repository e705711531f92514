"""Fixtures for the response store: a real PostgreSQL server beside SQLite."""

from postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
