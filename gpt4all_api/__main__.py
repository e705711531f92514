"""``python -m gpt4all_api``: serve with uvicorn using the validated settings."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import uvicorn
from pydantic import ValidationError

from gpt4all_api.logs import configure_logging
from gpt4all_api.serving import http_protocol
from gpt4all_api.settings import Settings
from gpt4all_api.startup import preflight

#: uvicorn's own last resort, after our grace period has ended what was left.
SHUTDOWN_BACKSTOP_SECONDS = 5.0


class GracefulServer(uvicorn.Server):
    """uvicorn, telling the app when shutdown starts (uvicorn itself tells it only after
    every connection has closed): the app drains, lets in-flight requests finish within
    GRACEFUL_SHUTDOWN_SECONDS and then ends what is left cleanly."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets=sockets)


def main() -> int:
    if sys.argv[1:2] == ["models"]:  # `python -m gpt4all_api models list|pull|rm|fetch-default`
        from gpt4all_api.model_store.__main__ import main as models_main

        return models_main(sys.argv[2:])
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in exc.errors()
        ]
        sys.stderr.write("Invalid settings:\n" + "\n".join(lines) + "\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)
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
            http=http_protocol(settings),  # header deadline, connection limit
        )
        return 0
    from gpt4all_api.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's handler: one format, request ids
        access_log=False,  # the service writes its own access line, with tokens and timings
        http=http_protocol(settings),  # header deadline, connection limit
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds + SHUTDOWN_BACKSTOP_SECONDS,
    )
    server = GracefulServer(config, app.state.services.shutdown.begin)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    raise SystemExit(main())
