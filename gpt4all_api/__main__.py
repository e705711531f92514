"""``python -m gpt4all_api``: serve with uvicorn using the validated settings."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError


def main() -> int:
    from gpt4all_api.settings import Settings

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
