"""API keys: ``Authorization: Bearer <key>`` on every route except a few public ones.

Deny by default: every path needs a key except ``/health``, the API docs (``/docs``,
``/redoc``, ``/openapi.json``, ``/static-docs/...``) and, with ``METRICS_PUBLIC``,
``/metrics``; routes added later are protected without anyone remembering to. Keys are
compared as SHA-256 digests with ``hmac.compare_digest`` against *every* configured key
(no early exit), so timing reveals neither a key nor which one matched. Keys and the
presented token are never logged or echoed.

An accepted request carries the key's SHA-256 digest in its scope (``api_key_digest``):
stored responses belong to the key that stored them (``ResponseStore.owner_of``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from gpt4all_api.errors import send_error

PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static-docs/",)
#: Scope key of the accepted key's SHA-256 digest.
KEY_DIGEST_SCOPE_KEY = "gpt4all_api.api_key_digest"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def api_key_digest(scope: Scope) -> bytes | None:
    """The SHA-256 digest of the API key the request was accepted with; None without
    configured keys (or on a public route)."""
    return scope.get(KEY_DIGEST_SCOPE_KEY)


class APIKeyMiddleware:
    def __init__(
        self, app: ASGIApp, keys: Iterable[SecretStr], extra_public: Iterable[str] = ()
    ) -> None:
        self.app = app
        self._digests = [_digest(k.get_secret_value().encode()) for k in keys]
        self._public = PUBLIC_PATHS | frozenset(extra_public)

    def is_public(self, path: str) -> bool:
        return path in self._public or path.startswith(PUBLIC_PREFIXES)

    def check(self, token: bytes) -> bytes | None:
        """The token's digest when it is one of the keys, else None."""
        presented = _digest(token)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(presented, digest)
        return presented if ok else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._digests or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        token: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, rest = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and rest.strip():
                    token = rest.strip()
                break
        if token is None:
            await send_error(
                send,
                401,
                "You didn't provide an API key. Send it in the Authorization header as "
                "'Bearer YOUR_KEY'.",
                "authentication_error",
                "missing_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        digest = self.check(token)
        if digest is None:
            await send_error(
                send,
                401,
                "Incorrect API key provided.",
                "authentication_error",
                "invalid_api_key",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            return
        scope[KEY_DIGEST_SCOPE_KEY] = digest
        await self.app(scope, receive, send)
