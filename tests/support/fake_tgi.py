"""A fake HuggingFace text-generation-inference server for contract tests (a helper module).

TGI needs a GPU, so the GPU mode is tested against this small real HTTP server (Starlette
under uvicorn, in a thread) that follows TGI's documented wire format
(TGI's OpenAPI document and its observed behaviour):

* ``GET /info``, ``GET /health`` (200, or 503 ``{"error":"unhealthy",...}``),
  ``POST /tokenize``, ``POST /chat_tokenize``, ``POST /generate``, ``POST /generate_stream``,
  ``POST /v1/chat/completions`` (the Messages API, streamed or not), ``GET /v1/models``;
* ``/generate_stream`` frames are ``data:{...}`` without a space, one token per event, the
  EOS token flagged ``special``, ``details`` in the last event, and no ``[DONE]``; the
  Messages API stream has ``id: ""``, the role in every chunk, TGI's finish reasons
  (``eos_token``/``stop_sequence``/``length``), a usage chunk and ``data:[DONE]``;
* TGI's validation (422 ``{"error","error_type":"validation"}``): temperature > 0,
  0 < top_p < 1 (1.0 rejected), top_k > 0, repetition_penalty > 0, max_new_tokens > 0,
  at most ``max_stop_sequences`` stops, input and total token limits, unsigned seeds.
  Streams report validation errors as an error event in a 200 stream, as TGI does:
  ``{"error","error_type"}`` on ``/generate_stream``, OpenAI's ``{"error": {"message",
  "http_status_code"}}`` on the Messages API (TGI 3.x); unknown fields are ignored;
* stop sequences end generation when the generated text *ends with* one (TGI's rule), the
  stop text included in the output.

Generation is deterministic: whatever the prompt, the answer is :data:`ANSWER`, one token
per word (with its leading space), then ``</s>``. Tokens are words too: a prompt of ``w``
words has ``w + 1`` tokens (BOS).

Failures are injected by directives in the prompt (or any chat message):
``[[status:429]]`` answers that HTTP status with TGI's error body; ``[[error:2]]`` sends an
error event after 2 tokens; ``[[drop:2]]`` breaks the connection after 2 tokens;
``[[slow:0.2]]`` waits 0.2 s before each token; ``[[stall:3]]`` waits 3 s before the first
byte of the body; ``[[long]]`` makes the answer 20 times longer.

``requests`` records every request body by path and ``disconnects`` the path and prompt of
every stream whose client went away before its end.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = "Hello, I am a fake TGI model."
TOOL_ARGUMENTS = {"location": "Paris", "unit": "celsius"}
MODEL_ID = "fake-org/fake-tgi-7b"
VERSION = "3.3.6-dev0"
FINGERPRINT = f"{VERSION}-native"
EOS_TEXT = "</s>"

_WORD = re.compile(r"\s*\S+")
_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([\d.]+))?\]\]")
_ERROR_TYPES = {
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "incomplete_generation",
    503: "unhealthy",
}


class DropConnection(Exception):
    """Raised inside a response body: uvicorn closes the connection mid-response."""


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def count_tokens(text: str) -> int:
    return 1 + len(words(text))


def render_chat(messages: list[dict[str, Any]]) -> str:
    out = "".join(
        f"<|im_start|>{m.get('role')}\n{m.get('content') or ''}<|im_end|>\n" for m in messages
    )
    return out + "<|im_start|>assistant\n"


def directives(text: str) -> dict[str, float]:
    return {name: float(value) if value else 1.0 for name, value in _DIRECTIVE.findall(text)}


class Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FakeTgi:
    """The fake server; ``start()`` it (or use it as a context manager), then use ``url``."""

    def __init__(
        self,
        *,
        model_id: str = MODEL_ID,
        max_input_tokens: int = 64,
        max_total_tokens: int = 128,
        max_stop_sequences: int = 3,
    ) -> None:
        self.model_id = model_id
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_stop_sequences = max_stop_sequences
        self.healthy = True
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.disconnects: list[tuple[str, str]] = []  # (path, prompt)
        self.last_authorization: str | None = None  # of the latest POST
        self.app = Starlette(
            routes=[
                Route("/info", self.info, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
                Route("/chat_tokenize", self.chat_tokenize, methods=["POST"]),
                Route("/generate", self.generate, methods=["POST"]),
                Route("/generate_stream", self.generate_stream, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeTgi:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake TGI did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeTgi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def last(self, path: str) -> dict[str, Any]:
        """The body of the latest request to ``path``."""
        for p, body in reversed(self.requests):
            if p == path:
                return body
        raise LookupError(f"no request to {path}")

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def error(status: int, message: str, error_type: str | None = None) -> JSONResponse:
        kind = error_type or _ERROR_TYPES.get(status, "generation")
        return JSONResponse({"error": message, "error_type": kind}, status_code=status)

    async def _body(self, request: Request, path: str) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Invalid("Failed to parse the request body as JSON")
        self.requests.append((path, body))
        self.last_authorization = request.headers.get("authorization")
        return body

    def _validate(self, params: dict[str, Any], input_tokens: int) -> int:
        """TGI's validation; returns max_new_tokens."""
        temperature = params.get("temperature")
        if temperature is not None and not temperature > 0:
            raise Invalid("Input validation error: `temperature` must be strictly positive")
        top_p = params.get("top_p")
        if top_p is not None and not 0 < top_p < 1:
            raise Invalid("Input validation error: `top_p` must be > 0.0 and < 1.0")
        top_k = params.get("top_k")
        if top_k is not None and not top_k > 0:
            raise Invalid("Input validation error: `top_k` must be strictly positive")
        penalty = params.get("repetition_penalty")
        if penalty is not None and not penalty > 0:
            raise Invalid("Input validation error: `repetition_penalty` must be strictly positive")
        frequency = params.get("frequency_penalty")
        if frequency is not None and not -2 <= frequency <= 2:
            raise Invalid("Input validation error: `frequency_penalty` must be >= -2.0 and <= 2.0")
        seed = params.get("seed")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**64):
            raise Invalid(
                "Failed to deserialize the JSON body into the target type: parameters.seed: "
                f"invalid value: integer `{seed}`, expected u64"
            )
        stop = params.get("stop") or []
        if len(stop) > self.max_stop_sequences:
            raise Invalid(
                f"Input validation error: `stop` supports up to {self.max_stop_sequences} "
                f"stop sequences. Given: {len(stop)}"
            )
        if input_tokens > self.max_input_tokens:
            raise Invalid(
                f"Input validation error: `inputs` must have less than {self.max_input_tokens} "
                f"tokens. Given: {input_tokens}"
            )
        max_new = params.get("max_new_tokens")
        if max_new is None:
            max_new = self.max_total_tokens - input_tokens
        if max_new == 0:
            raise Invalid("Input validation error: `max_new_tokens` must be strictly positive")
        if input_tokens + max_new > self.max_total_tokens:
            raise Invalid(
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                f"{self.max_total_tokens}. Given: {input_tokens} `inputs` tokens and {max_new} "
                "`max_new_tokens`"
            )
        return max_new

    @staticmethod
    def _generate(
        text: str, max_new: int, stop: list[str]
    ) -> tuple[list[dict[str, Any]], str, str]:
        """Tokens (TGI's Token objects), finish reason and generated text."""
        answer = ANSWER * 20 if "long" in directives(text) else ANSWER
        pieces = [*words(answer), EOS_TEXT]
        tokens: list[dict[str, Any]] = []
        generated = ""
        finish = "eos_token"
        for i, piece in enumerate(pieces):
            special = piece == EOS_TEXT
            tokens.append(
                {
                    "id": 2 if special else 100 + i,
                    "text": piece,
                    "logprob": -0.25,
                    "special": special,
                }
            )
            if not special:
                generated += piece
            if special:
                finish = "eos_token"
                break
            if any(generated.endswith(s) for s in stop):
                finish = "stop_sequence"
                break
            if len(tokens) >= max_new:
                finish = "length"
                break
        return tokens, finish, generated

    async def _tokens(
        self, text: str, tokens: list[dict[str, Any]], path: str
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Yields tokens with the directives' delays and failures applied."""
        d = directives(text)
        finished = False
        try:
            if "stall" in d:
                await asyncio.sleep(d["stall"])
            for i, token in enumerate(tokens):
                if "drop" in d and i == int(d["drop"]):
                    finished = True
                    raise DropConnection(path)
                if "error" in d and i == int(d["error"]):
                    finished = True
                    yield -1, {}
                    return
                if "slow" in d:
                    await asyncio.sleep(d["slow"])
                yield i, token
            finished = True
        finally:
            if not finished:
                self.disconnects.append((path, text))

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data:" + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    # --- routes -------------------------------------------------------------------------------

    async def info(self, _: Request) -> Response:
        return JSONResponse(
            {
                "model_id": self.model_id,
                "model_sha": "0123456789abcdef0123456789abcdef01234567",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": self.max_stop_sequences,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(self, _: Request) -> Response:
        if self.healthy:
            return Response(status_code=200)
        return self.error(503, "unhealthy", "healthcheck")

    async def models(self, _: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_id,
                        "object": "model",
                        "created": 0,
                        "owned_by": self.model_id,
                    }
                ],
            }
        )

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request, "/tokenize")
        except Invalid as exc:
            return self.error(422, exc.message)
        return JSONResponse(self._simple_tokens(str(body.get("inputs", ""))))

    async def chat_tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request, "/chat_tokenize")
        except Invalid as exc:
            return self.error(422, exc.message)
        text = render_chat(body.get("messages") or [])
        return JSONResponse(
            {"tokenize_response": self._simple_tokens(text), "templated_text": text}
        )

    @staticmethod
    def _simple_tokens(text: str) -> list[dict[str, Any]]:
        out = [{"id": 1, "text": "<s>", "start": 0, "stop": 0}]
        pos = 0
        for i, w in enumerate(words(text)):
            start = text.index(w, pos)
            pos = start + len(w)
            out.append({"id": 100 + i, "text": w, "start": start, "stop": pos})
        return out

    def _status_directive(self, text: str) -> Response | None:
        status = directives(text).get("status")
        if status is None:
            return None
        code = int(status)
        messages = {
            422: "Input validation error: `inputs` cannot be empty",
            424: "Request failed during generation: Server error: CUDA out of memory",
            429: "Model is overloaded",
            500: "Incomplete generation",
            503: "unhealthy",
        }
        return self.error(code, messages.get(code, "Internal error"))

    async def generate(self, request: Request) -> Response:
        try:
            body = await self._body(request, "/generate")
            inputs = str(body.get("inputs", ""))
            params = body.get("parameters") or {}
            if (early := self._status_directive(inputs)) is not None:
                return early
            max_new = self._validate(params, count_tokens(inputs))
        except Invalid as exc:
            return self.error(422, exc.message)
        tokens, finish, text = self._generate(inputs, max_new, params.get("stop") or [])
        if "stall" in directives(inputs):
            await asyncio.sleep(directives(inputs)["stall"])
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            out["details"] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": params.get("seed") if params.get("do_sample") else None,
                "prefill": [],
                "tokens": tokens,
            }
        headers = {
            "x-prompt-tokens": str(count_tokens(inputs)),
            "x-generated-tokens": str(len(tokens)),
            "x-compute-type": "1-nvidia-h100",
            "x-compute-time": "0.01",
            "x-queue-time": "0",
            "x-inference-time": "0.01",
            "x-time-per-token": "1",
        }
        return JSONResponse(out, headers=headers)

    async def generate_stream(self, request: Request) -> Response:
        try:
            body = await self._body(request, "/generate_stream")
        except Invalid as exc:
            return self.error(422, exc.message)
        inputs = str(body.get("inputs", ""))
        params = body.get("parameters") or {}
        if (early := self._status_directive(inputs)) is not None:
            return early
        input_tokens = count_tokens(inputs)
        try:
            max_new = self._validate(params, input_tokens)
        except Invalid as exc:
            # TGI validates inside the stream: a 200 whose only event is the error
            return self._stream([self._sse({"error": exc.message, "error_type": "validation"})])
        tokens, finish, text = self._generate(inputs, max_new, params.get("stop") or [])

        async def events() -> AsyncIterator[bytes]:
            async for i, token in self._tokens(inputs, tokens, "/generate_stream"):
                if i < 0:
                    yield self._sse(
                        {
                            "error": "Request failed during generation: Server error: boom",
                            "error_type": "generation",
                        }
                    )
                    return
                last = i == len(tokens) - 1
                details = None
                if last and params.get("details", True):
                    details = {
                        "finish_reason": finish,
                        "generated_tokens": len(tokens),
                        "input_length": input_tokens,
                        "seed": params.get("seed") if params.get("do_sample") else None,
                    }
                yield self._sse(
                    {
                        "index": i,
                        "token": token,
                        "top_tokens": None,
                        "generated_text": text if last else None,
                        "details": details,
                    }
                )

        return self._stream(events())

    @staticmethod
    def _stream(body: Any) -> StreamingResponse:
        async def with_keepalive() -> AsyncIterator[bytes]:
            yield b":\n\n"  # axum's keep-alive comment
            if isinstance(body, list):
                for item in body:
                    yield item
            else:
                async for item in body:
                    yield item

        return StreamingResponse(
            with_keepalive(),
            media_type="text/event-stream",
            headers={"x-compute-type": "1-nvidia-h100", "x-accel-buffering": "no"},
        )

    async def _tool_events(
        self,
        body: dict[str, Any],
        prompt: str,
        base: dict[str, Any],
        usage: dict[str, Any],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        """A streamed tool call of the named (else the first) tool with arguments
        :data:`TOOL_ARGUMENTS`, in TGI 3's shape (name first, then argument fragments), or
        with ``[[tgi2]]`` in TGI 2's (``tool_calls`` an object, name null, the arguments
        ``{"function": {"_name": ..., ...}}``); ``[[no_tool]]`` answers with TGI's
        ``no_tool`` pseudo-call carrying text; ``[[tgi_object]]`` sends the whole call in
        one chunk in the shape of TGI's ``ToolCall``/``FunctionDefinition`` (id ``"0"``,
        ``description`` null, ``arguments`` a JSON object, not a string)."""
        choice = body.get("tool_choice")
        name = (
            choice["function"]["name"]
            if isinstance(choice, dict)
            else body["tools"][0]["function"]["name"]
        )
        args = dict(TOOL_ARGUMENTS)
        if "[[no_tool]]" in prompt:
            name, args = "no_tool", {"content": ANSWER}
        old = "[[tgi2]]" in prompt
        if old:
            text = json.dumps({"function": {"_name": name, **args}})
            first: dict[str, Any] = {"name": None, "arguments": ""}
        else:
            text = json.dumps(args)
            first = {"name": name, "arguments": ""}
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)]

        def chunk(function: dict[str, Any], finish: str | None) -> bytes:
            call = {"index": 0, "id": "", "type": "function", "function": function}
            delta = {"role": "assistant", "tool_calls": call if old else [call]}
            c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self._sse({**base, "object": "chat.completion.chunk", "choices": [c]})

        if "[[tgi_object]]" in prompt:
            function = {"description": None, "name": name, "arguments": args}
            call = {"index": 0, "id": "0", "type": "function", "function": function}
            delta = {"role": "assistant", "tool_calls": [call]}
            c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "eos_token"}
            yield self._sse({**base, "object": "chat.completion.chunk", "choices": [c]})
            pieces = []
        else:
            yield chunk(first, None)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            yield chunk({"name": None, "arguments": piece}, "eos_token" if last else None)
        if include_usage:
            yield self._sse(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        yield b"data:[DONE]\n\n"

    async def chat(self, request: Request) -> Response:
        try:
            body = await self._body(request, "/v1/chat/completions")
        except Invalid as exc:
            return self.error(422, exc.message)
        messages = body.get("messages") or []
        prompt = render_chat(messages)
        if (early := self._status_directive(prompt)) is not None:
            return early
        # TGI's Messages API: temperature 0 means greedy, other values pass through as they are
        temperature = body.get("temperature")
        params: dict[str, Any] = {
            "temperature": None if temperature == 0 else temperature,
            "do_sample": temperature != 0,
            "top_p": body.get("top_p"),
            "max_new_tokens": body.get("max_tokens"),
            "stop": body.get("stop"),
            "seed": body.get("seed"),
            "frequency_penalty": body.get("frequency_penalty"),
        }
        input_tokens = count_tokens(prompt)
        stream = bool(body.get("stream"))
        try:
            max_new = self._validate(params, input_tokens)
        except Invalid as exc:
            if stream:
                # the Messages API (TGI 3.x) streams errors in OpenAI's shape
                error = {"message": exc.message, "http_status_code": 422}
                return self._stream([self._sse({"error": error})])
            return self.error(422, exc.message)
        tokens, finish, text = self._generate(prompt, max_new, params.get("stop") or [])
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": input_tokens + len(tokens),
        }
        base = {
            "id": "",
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": FINGERPRINT,
        }
        if not stream:
            return JSONResponse(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if body.get("tools") and body.get("tool_choice") != "none":
            return self._stream(self._tool_events(body, prompt, base, usage, include_usage))

        async def events() -> AsyncIterator[bytes]:
            async for i, token in self._tokens(prompt, tokens, "/v1/chat/completions"):
                if i < 0:
                    yield self._sse(
                        {
                            "error": "Request failed during generation: Server error: boom",
                            "error_type": "generation",
                        }
                    )
                    return
                last = i == len(tokens) - 1
                choice = {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": "" if token["special"] else token["text"],
                    },
                    "logprobs": None,
                    "finish_reason": finish if last else None,
                }
                yield self._sse(
                    {**base, "object": "chat.completion.chunk", "choices": [choice], "usage": None}
                )
            if include_usage:
                yield self._sse(
                    {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                )
            yield b"data:[DONE]\n\n"

        return self._stream(events())
