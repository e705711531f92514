"""Any OpenAI-compatible server as the engine (``GPU_BACKEND=openai``).

vLLM, llama.cpp's server, LocalAI, another gpt4all-api, ... all serve ``/v1/completions``
and ``/v1/chat/completions``. Requests are always streamed upstream (with
``stream_options.include_usage``) and normalised into ``Token``/``Done`` events, so our
own validation, stop handling, ``n``, ``echo``, usage and response shapes apply unchanged.

``GPU_URL`` may be given with or without the trailing ``/v1``. The upstream model is the
one ``GPU_MODEL_ID`` names when the upstream lists it, else the first it lists; clients see
``GPU_MODEL_ID`` or, unset, the upstream's id. ``GPU_API_KEY`` is sent as a bearer token.

gpt4all's sampling extras are passed under the names the common servers use: ``top_k`` and
``min_p`` (vLLM, llama.cpp, gpt4all-api), ``repetition_penalty`` (vLLM) and
``repeat_penalty``/``repeat_last_n`` (llama.cpp, gpt4all-api) - servers ignore the names
they do not know - and only when they change anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from gpt4all_api.engines.base import (
    Done,
    Event,
    FinishReason,
    GenerationRequest,
    Token,
    ToolCall,
)
from gpt4all_api.engines.remote import (
    RemoteEngine,
    body_message,
    map_finish,
    overloaded,
    parse_event,
    stream_error_kind,
)
from gpt4all_api.errors import APIError, ContextLengthExceeded, InvalidRequest, UpstreamError

#: After our stop sequence matched, events read on (discarded) waiting for the upstream's
#: own end and usage before the connection is dropped.
_DRAIN_AFTER_STOP = 32
#: Error types of in-stream errors that mean a bad request / an overloaded upstream.
_INVALID = {
    "invalid_request_error",
    "validation",
    "template_error",
    "tool_error",
    "BadRequestError",
}
_OVERLOADED = {"overloaded", "requests", "rate_limit_error", "RateLimitError"}


def request_body(request: GenerationRequest, upstream_model: str) -> dict[str, Any]:
    p = request.params
    body: dict[str, Any] = {
        "model": upstream_model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": p.temperature,
    }
    if p.top_p < 1:  # 1 is everyone's default, and TGI's Messages API refuses it
        body["top_p"] = p.top_p
    if request.messages is not None:
        body["messages"] = [_message(t) for t in request.messages]
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        **({"description": t.description} if t.description else {}),
                        "parameters": t.parameters,
                        **({"strict": True} if t.strict else {}),
                    },
                }
                for t in request.tools
            ]
            c = request.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": c.name}} if c.mode == "named" else c.mode
            )
            if not request.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
    else:
        body["prompt"] = request.prompt
        body["max_tokens"] = p.max_tokens  # null: no limit (the completions default is 16)
    if p.top_k > 0:
        body["top_k"] = p.top_k
    if p.min_p > 0:
        body["min_p"] = p.min_p
    if p.repeat_penalty > 0 and p.repeat_penalty != 1:
        body["repetition_penalty"] = p.repeat_penalty
        body["repeat_penalty"] = p.repeat_penalty
        body["repeat_last_n"] = p.repeat_last_n
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    return body


def _message(t: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": t.role, "content": t.content}
    if t.name:
        msg["name"] = t.name
    if t.tool_calls:
        msg["content"] = t.content or None
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in t.tool_calls
        ]
    if t.tool_call_id is not None:
        msg["tool_call_id"] = t.tool_call_id
    return msg


def _choice_text(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return str(choice.get("text") or "")
    delta = choice.get("delta") or choice.get("message") or {}
    return str(delta.get("content") or "")


class OpenAiUpstreamEngine(RemoteEngine):
    """A model served by an OpenAI-compatible server."""

    backend = "openai"
    health_path = "/v1/models"
    parses_tool_calls = True

    @staticmethod
    def normalise_url(url: str) -> str:
        return url.rstrip("/").removesuffix("/v1")

    async def _fetch_info(self) -> tuple[str, dict[str, Any]]:
        resp = await self.client.get("/v1/models", timeout=self.probe_timeout)
        resp.raise_for_status()
        models = [m for m in resp.json()["data"] if isinstance(m, dict) and m.get("id")]
        if not models:
            raise ValueError("the upstream's /v1/models lists no model")
        chosen = next((m for m in models if m["id"] == self.configured_id), models[0])
        context = chosen.get("context_length") or chosen.get("max_model_len")
        self.context_length = context if isinstance(context, int) else None
        extra = {"context_length": self.context_length, "upstream_model": chosen["id"]}
        return str(chosen["id"]), extra

    # --- errors --------------------------------------------------------------------------

    def bad_request(self, message: str, body: dict[str, Any], prompt_param: str) -> APIError:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        assert isinstance(error, dict)
        code = error.get("code") if isinstance(error.get("code"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
        lowered = message.lower()
        if code == "context_length_exceeded" or "context length" in lowered:
            return ContextLengthExceeded(message, param=param or prompt_param)
        return InvalidRequest(message, param=param, code=code)

    def event_error(self, obj: dict[str, Any], started: bool, prompt_param: str) -> APIError:
        message, body = body_message(json.dumps(obj).encode())
        error = obj.get("error")
        tgi_kind = stream_error_kind(obj)  # TGI's shapes (a TGI behind GPU_BACKEND=openai)
        if tgi_kind is not None:
            kind, code = tgi_kind, None
        elif isinstance(error, dict):  # OpenAI, vLLM ({"type": "BadRequestError", "code": 400})
            kind, code = error.get("type"), error.get("code")
        else:
            kind, code = None, None
        if not started and (kind in _INVALID or code in (400, 422, "400", "422")):
            return self.bad_request(message, body, prompt_param)
        if not started and (kind in _OVERLOADED or code in (429, "429", "rate_limit_exceeded")):
            return overloaded(message)
        return UpstreamError(
            f"The inference upstream failed during generation: {message}", code="upstream_error"
        )

    # --- generation ------------------------------------------------------------------------

    async def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        await self.ensure_info()
        assert self.upstream_model is not None
        stop = stop or threading.Event()
        chat = request.messages is not None
        path = "/v1/chat/completions" if chat else "/v1/completions"
        param = "messages" if chat else "prompt"
        body = request_body(request, self.upstream_model)
        generated = 0
        finish: FinishReason | None = None
        usage: dict[str, Any] | None = None
        drain = _DRAIN_AFTER_STOP
        calls: dict[int, dict[str, str]] = {}
        events = self.upstream_events(path, body, param)
        async with aclosing(events):
            async for data in events:
                if data == "[DONE]":
                    break
                obj = parse_event(data)
                if "error" in obj:
                    raise self.event_error(obj, generated > 0, param)
                if isinstance(obj.get("usage"), dict):
                    usage = obj["usage"]
                # a chunk, or the whole response from an upstream that ignores "stream"
                for choice in obj.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or choice.get("message") or {}
                    for piece in delta.get("tool_calls") or []:
                        fn = piece.get("function") or {}
                        acc = calls.setdefault(int(piece.get("index") or 0), {})
                        acc["id"] = acc.get("id") or str(piece.get("id") or "")
                        acc["name"] = acc.get("name") or str(fn.get("name") or "")
                        args = fn.get("arguments")
                        if not isinstance(args, str):  # some servers send an object
                            args = json.dumps(args) if args is not None else ""
                        acc["arguments"] = acc.get("arguments", "") + args
                    text = _choice_text(choice)
                    if text:
                        generated += 1
                        if not stop.is_set():
                            yield Token(text)
                    if choice.get("finish_reason"):
                        finish = map_finish(choice["finish_reason"])
                if stop.is_set() and finish is None:
                    drain -= 1
                    if drain < 0:
                        break  # closing the events drops the connection: the upstream stops
        if finish is None and not stop.is_set():
            raise UpstreamError(
                "The inference upstream's stream ended before the generation finished.",
                code="upstream_error",
            )
        for i, index in enumerate(sorted(calls)):
            c = calls[index]
            yield ToolCall(i, c.get("id", ""), c.get("name", ""), c.get("arguments") or "{}")
        prompt_tokens = _int(usage.get("prompt_tokens")) if usage else None
        completion_tokens = _int(usage.get("completion_tokens")) if usage else None
        yield Done(
            finish or "stop",
            prompt_tokens if prompt_tokens is not None else 0,
            completion_tokens if completion_tokens is not None else generated,
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
