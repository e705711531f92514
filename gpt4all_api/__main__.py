"""``python -m gpt4all_api``: serve with uvicorn using the validated settings."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from gpt4all_api.settings import Settings


def preflight(settings: Settings) -> str | None:
    """Problems that would make start-up fail, as one clear line (no traceback)."""
    if settings.inference_mode == "cpu":
        from gpt4all_api.registry import resolve_model_path

        try:
            resolve_model_path(settings)
        except FileNotFoundError as exc:
            return str(exc)
    return None


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in exc.errors()
        ]
        sys.stderr.write("Invalid settings:\n" + "\n".join(lines) + "\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problem = preflight(settings)
    if problem:
        sys.stderr.write(f"Cannot start: {problem}\n")
        return 2
    if settings.reload:
        uvicorn.run(
            "gpt4all_api.asgi:app",
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            reload=True,
            reload_dirs=["gpt4all_api"],
            reload_includes=["*.py"],
        )
        return 0
    from gpt4all_api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
