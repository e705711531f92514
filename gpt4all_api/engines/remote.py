"""Engines that proxy to an inference server over HTTP (``INFERENCE_MODE=gpu``).

Two backends (chosen by ``GPU_BACKEND`` in ``engines.factory``): HuggingFace
text-generation-inference (``engines.tgi``) or any OpenAI-compatible server
(``engines.openai_upstream``). Both share what is here: one
``httpx.AsyncClient`` per engine, opened in ``start()`` (the app's lifespan) with explicit
timeouts and connection limits and closed in ``close()``; the model info read at start-up
(with a bounded wait); health probes; a Server-Sent Events parser that follows the spec
(``data:`` with or without a space, comments, multi-line data); and the mapping of upstream
failures onto our OpenAI-style errors:

==================================  ===========================================
upstream                            client
==================================  ===========================================
400 / 413 / 422 (validation)        400 invalid_request_error, upstream message
429 (overloaded)                    429 with ``Retry-After``
401 / 403 / 404 / 424 / 500 / ...   502 server_error
503                                 503 server_error
connection refused / DNS            503 server_error
timeout (connect or read)           504 server_error
broken stream, invalid frames       502 server_error
==================================  ===========================================

Engines translate upstream streams into ``Token``/``Done`` events; everything
OpenAI-specific (stop sequences, ``n``, ``echo``, usage, SSE to our clients) stays in
``services.generation``, exactly as in CPU mode. A failure after the first event is raised
from the engine's iterator and becomes an SSE error event followed by ``[DONE]`` there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from gpt4all_api.engines.base import Capabilities, Engine, FinishReason, ModelInfo
from gpt4all_api.errors import APIError, ServiceUnavailable, UpstreamError
from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)

#: Retry-After (seconds) sent with a 429/503 when the upstream did not say.
DEFAULT_RETRY_AFTER = "1"
#: Timeouts of health probes and start-up info requests (never longer than configured).
PROBE_TIMEOUT = 5.0


# --- Server-Sent Events --------------------------------------------------------------------


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The ``data`` of each event in a stream of SSE lines (as ``httpx.aiter_lines`` gives).

    Follows the WHATWG rules: a field's value loses one leading space if it has one (TGI
    writes ``data:{...}``, OpenAI ``data: {...}``), ``:`` lines are comments (keep-alives),
    several ``data`` lines join with ``\\n``, and a blank line ends an event. Fields other
    than ``data`` are not used by either protocol and are ignored. A last event not followed
    by a blank line is still delivered.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    if data:
        yield "\n".join(data)


def parse_event(data: str) -> dict[str, Any]:
    """One event's JSON object; anything else is an upstream protocol failure."""
    try:
        obj = json.loads(data)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise UpstreamError(
            "The inference upstream sent an invalid stream event.", code="upstream_error"
        )
    return obj


# --- errors ----------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` without credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def retry_after(headers: Mapping[str, str] | None) -> dict[str, str]:
    value = (headers or {}).get("retry-after") or DEFAULT_RETRY_AFTER
    return {"Retry-After": value}


def overloaded(message: str, headers: Mapping[str, str] | None = None) -> APIError:
    return APIError(
        f"The model is overloaded; please retry shortly. ({message})",
        status_code=429,
        type="rate_limit_error",  # as the admission queue's own 429
        code="rate_limit_exceeded",
        headers=retry_after(headers),
    )


def transport_error(exc: httpx.HTTPError) -> APIError:
    """A failure to talk to the upstream at all (no HTTP status from it)."""
    if isinstance(exc, httpx.PoolTimeout):
        return ServiceUnavailable(
            "Too many requests are in flight to the inference upstream; please retry shortly.",
            code="upstream_busy",
            headers=retry_after(None),
        )
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(
            "The inference upstream did not answer in time.",
            status_code=504,
            code="upstream_timeout",
        )
    if isinstance(exc, httpx.ConnectError):
        return ServiceUnavailable(
            "The inference upstream is not reachable; please retry shortly.",
            code="upstream_unavailable",
            headers=retry_after(None),
        )
    return UpstreamError(
        "The connection to the inference upstream broke unexpectedly.",
        code="upstream_error",
    )


def status_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> APIError:
    """An upstream HTTP error status other than a validation error (400/422)."""
    if status == 429:
        return overloaded(message, headers)
    if status in (401, 403):
        return UpstreamError(
            "The inference upstream refused the request's credentials (check GPU_API_KEY).",
            code="upstream_error",
        )
    if status == 503:
        return ServiceUnavailable(
            f"The inference upstream is unavailable: {message}",
            code="upstream_unavailable",
            headers=retry_after(headers),
        )
    if status == 504:
        return UpstreamError(
            f"The inference upstream timed out: {message}",
            status_code=504,
            code="upstream_timeout",
        )
    return UpstreamError(
        f"The inference upstream failed (HTTP {status}): {message}", code="upstream_error"
    )


def body_message(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The message of an error body and the parsed object (TGI's ``{"error": str}``,
    OpenAI's ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}``, SSE-framed
    or plain text)."""
    text = raw.decode("utf-8", errors="replace").strip()
    candidates = [text]
    if text.startswith("data:"):
        candidates.append(text.removeprefix("data:").strip().split("\n", 1)[0])
    for candidate in candidates:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        error = obj.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]), obj
        if isinstance(error, str) and error:
            return error, obj
        if obj.get("message"):
            return str(obj["message"]), obj
        if obj.get("detail"):
            return str(obj["detail"]), obj
    return (text[:500] or "no details"), {}


#: How TGI's errors begin (``InferError``'s messages), by its ``error_type``.
_TGI_ERROR_PREFIXES = (
    ("Input validation error", "validation"),
    ("Model is overloaded", "overloaded"),
    ("Template error", "template_error"),
    ("Missing template", "template_error"),
    ("Tool error", "tool_error"),
)


def stream_error_kind(obj: dict[str, Any]) -> str | None:
    """TGI's ``error_type`` of an error event inside a 200 stream, in either of its shapes:
    ``/generate_stream``'s ``{"error": str, "error_type": str}``, or the Messages API's
    (TGI 3.x) OpenAI-like ``{"error": {"message", "http_status_code"}}``, which sends 422
    for every kind: there the kind is in the message, which starts with TGI's own wording.
    None for other shapes (an OpenAI-compatible upstream's ``{"error": {"type", ...}}``)."""
    error = obj.get("error")
    if isinstance(error, dict):
        if "http_status_code" not in error:
            return None
        if error["http_status_code"] == 429:
            return "overloaded"
        message = str(error.get("message", ""))
        return next((k for p, k in _TGI_ERROR_PREFIXES if message.startswith(p)), None)
    kind = obj.get("error_type")
    return kind if isinstance(kind, str) else None


def map_finish(reason: Any) -> FinishReason:
    """TGI's ``length``/``eos_token``/``stop_sequence`` and OpenAI's reasons -> ours."""
    return "length" if reason == "length" else "stop"


# --- the shared engine ----------------------------------------------------------------------


class RemoteEngine(Engine):
    """An engine whose model runs behind an HTTP upstream."""

    backend: ClassVar[str]
    #: GET route answering 200 while the upstream can serve.
    health_path: ClassVar[str]
    capabilities = Capabilities.for_kind(embedding=False)

    def __init__(self, settings: Settings) -> None:
        assert settings.gpu_url is not None  # Settings requires it in gpu mode
        self.base_url = self.normalise_url(settings.gpu_url)
        self.configured_id = settings.gpu_model_id or None
        self.model_id = self.configured_id or ""  # the upstream's id once known
        self.upstream_model: str | None = None
        self.upstream_extra: dict[str, Any] = {}
        self.created = 0
        self.startup_timeout = settings.gpu_startup_timeout
        read = settings.gpu_read_timeout
        connect = settings.gpu_connect_timeout
        # read: between two chunks of the upstream (the first token included); pool: waiting
        # for one of gpu_max_connections, which is queueing behind other requests.
        self.timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=read)
        self.probe_timeout = httpx.Timeout(
            min(PROBE_TIMEOUT, read), connect=min(PROBE_TIMEOUT, connect)
        )
        self.limits = httpx.Limits(
            max_connections=settings.gpu_max_connections,
            max_keepalive_connections=settings.gpu_max_connections,
            keepalive_expiry=30.0,
        )
        self._api_key = settings.gpu_api_key
        # One request holds one upstream connection at a time (choices run in turn), so the
        # admission queue (MAX_QUEUE, QUEUE_TIMEOUT) applies beyond GPU_MAX_CONNECTIONS
        # requests instead of an unbounded wait for a pooled connection.
        self.max_concurrency = settings.gpu_max_connections
        self._client: httpx.AsyncClient | None = None
        self._info_loaded = False
        self._info_lock: asyncio.Lock | None = None
        self._readers: set[asyncio.Future[None]] = set()

    @staticmethod
    def normalise_url(url: str) -> str:
        return url.rstrip("/")

    @property
    def loaded(self) -> bool:
        """Whether the upstream's model info was read (it has answered since start-up)."""
        return self._info_loaded

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ServiceUnavailable("The inference upstream client is not started.")
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    async def start(self) -> None:
        httpx_logger = logging.getLogger("httpx")
        if httpx_logger.level == logging.NOTSET:
            # httpx logs every upstream request at INFO; uvicorn's access log is enough
            httpx_logger.setLevel(logging.WARNING)
        self._info_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            limits=self.limits,
            headers=self._headers(),
            follow_redirects=False,
            trust_env=False,
        )
        where = redact_url(self.base_url)
        # With GPU_MODEL_ID the id is known: start at once, unhealthy until the upstream is up.
        wait = 0.0 if self.configured_id else self.startup_timeout
        error = await self._wait_for_info(wait)
        if error is not None and not self.configured_id:
            await self.close()
            raise RuntimeError(
                f"the {self.backend} upstream at {where} did not answer within "
                f"{self.startup_timeout:g}s ({error}); check GPU_URL, or set GPU_MODEL_ID "
                "to start without waiting for it"
            )
        if error is not None:
            logger.warning(
                "%s upstream at %s is not available yet (%s); serving %s once it is",
                self.backend,
                where,
                error,
                self.model_id,
            )
        else:
            logger.info(
                "gpu mode: serving %s from the %s upstream at %s (upstream model %s)",
                self.model_id,
                self.backend,
                where,
                self.upstream_model,
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _wait_for_info(self, wait_s: float) -> str | None:
        """Load the upstream's model info, retrying with backoff for up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        delay = 0.25
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._load_info()
                return None
            except (httpx.HTTPError, APIError, ValueError, KeyError, TypeError) as exc:
                error = _describe(exc)
            if time.monotonic() + delay > deadline:
                return error
            if attempt % 4 == 1:
                logger.info("waiting for the %s upstream: %s", self.backend, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)

    async def _load_info(self) -> None:
        upstream_id, extra = await self._fetch_info()
        self.upstream_model = upstream_id
        self.upstream_extra = extra
        if not self.model_id:
            self.model_id = self.configured_id or upstream_id
        self.created = int(time.time())
        self._info_loaded = True

    async def ensure_info(self) -> None:
        """Called before each generation: the info is needed (limits, upstream model id)."""
        if self._info_loaded:
            return
        assert self._info_lock is not None
        async with self._info_lock:
            if self._info_loaded:
                return
            try:
                await self._load_info()
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.HTTPStatusError):
                    raise ServiceUnavailable(
                        "The inference upstream is not ready yet; please retry shortly.",
                        code="upstream_unavailable",
                        headers=retry_after(None),
                    ) from exc
                raise transport_error(exc) from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise UpstreamError(
                    f"The inference upstream's model info is unusable: {exc}",
                    code="upstream_error",
                ) from exc

    @abstractmethod
    async def _fetch_info(self) -> tuple[str, dict[str, Any]]:
        """The upstream's model id and what ``/v1/models`` reports about it."""

    async def health(self) -> dict[str, Any]:
        status: dict[str, Any] = {"backend": self.backend}
        try:
            resp = await self.client.get(self.health_path, timeout=self.probe_timeout)
            up = resp.status_code == 200
            if not up:
                status["error"] = f"upstream health answered HTTP {resp.status_code}"
        except (httpx.HTTPError, APIError) as exc:
            up = False
            status["error"] = _describe(exc)
        if up and not self._info_loaded:
            try:
                await self.ensure_info()
            except APIError as exc:
                up = False
                status["error"] = exc.message
        status["upstream"] = "ok" if up else "unavailable"
        status["loaded"] = up and self._info_loaded
        return status

    async def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            created=self.created,
            extra={
                "capabilities": self.capabilities.names(),
                **self.upstream_extra,
                "backend": self.backend,
                "loaded": self._info_loaded,
            },
        )

    # --- requests ------------------------------------------------------------------------

    @abstractmethod
    def bad_request(self, message: str, body: dict[str, Any], prompt_param: str) -> APIError:
        """The client error for an upstream validation failure (400/422)."""

    def http_error(
        self, status: int, raw: bytes, headers: Mapping[str, str], prompt_param: str
    ) -> APIError:
        message, body = body_message(raw)
        if status in (400, 413, 422):
            return self.bad_request(message, body, prompt_param)
        return status_error(status, message, headers)

    @asynccontextmanager
    async def post_stream(
        self, path: str, body: dict[str, Any], prompt_param: str
    ) -> AsyncIterator[httpx.Response]:
        """POST and yield the (successful) streamed response; every httpx failure, here or
        while the caller reads the body, becomes an ``APIError``. Leaving the block closes
        the response (and its connection when unfinished, which makes the upstream stop)."""
        try:
            async with self.client.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    raise self.http_error(resp.status_code, raw, resp.headers, prompt_param)
                yield resp
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    async def upstream_events(
        self, path: str, body: dict[str, Any], prompt_param: str
    ) -> AsyncIterator[str]:
        """The ``data`` of each SSE event of a streamed POST (a non-SSE answer: its body).

        The response is read by a task of its own. Closing this iterator cancels that task
        once, and its cancellation closes the connection, which is how the upstream learns
        to stop generating. It is deliberately not awaited: when the client went away, the
        task closing us sits in a cancelled scope and is cancelled again at every step, a
        cancellation that ``await`` would forward to the reader, interrupting the
        connection's close (leaving the upstream generating for nobody).
        """
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def read() -> None:
            try:
                async with self.post_stream(path, body, prompt_param) as resp:
                    if resp.headers.get("content-type", "").startswith("text/event-stream"):
                        async for data in iter_sse(resp.aiter_lines()):
                            queue.put_nowait(("data", data))
                    else:
                        text = (await resp.aread()).decode("utf-8", errors="replace")
                        queue.put_nowait(("data", text))
                queue.put_nowait(("end", None))
            except asyncio.CancelledError:
                raise
            except httpx.HTTPError as exc:  # raised while closing
                queue.put_nowait(("error", transport_error(exc)))
            except BaseException as exc:
                queue.put_nowait(("error", exc))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            if not reader.done():
                reader.cancel()
                self._readers.add(reader)  # a strong reference until it has closed
                reader.add_done_callback(self._readers.discard)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return exc.message
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url.path}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
