"""HuggingFace text-generation-inference (TGI) as the engine (``GPU_BACKEND=tgi``).

Completions go to ``POST /generate_stream`` with ``details: true``, chat to TGI's Messages
API (``POST /v1/chat/completions``, which applies the model's own chat template) with
``stream: true``; non-streamed client requests are streamed upstream too, so both paths
are one code path, stop sequences can end a generation early and a client that leaves
closes the upstream request. What TGI sends is normalised into ``Token``/``Done`` events:

* ``/generate_stream`` frames are ``data:{...}`` (no space), one token each, special tokens
  flagged (their text is dropped), the last one carrying ``details`` (``finish_reason``,
  ``generated_tokens``, ``input_length``), and there is no ``[DONE]``;
* Messages API chunks have ``id: ""``, the role in every delta, TGI's own finish reasons
  (``eos_token``, ``stop_sequence``, ``length``) and a usage chunk at the end;
* an error arrives as ``{"error": ..., "error_type": ...}`` either with an HTTP status or
  as an event in a 200 stream (TGI validates inside the stream).

Parameters are mapped onto TGI's rules, which reject OpenAI's defaults: temperature 0 is
greedy decoding (``do_sample: false`` and no sampling parameters at all, since TGI turns
sampling on when it sees any of them), ``top_p`` is only sent strictly inside (0, 1),
``top_k`` only when > 0, ``repetition_penalty`` only when not 1, seeds as unsigned 64-bit.
TGI's Messages API has no ``top_k``/``repetition_penalty``/``min_p``, and TGI has no
``min_p`` at all: those gpt4all extras are ignored there. ``max_stop_sequences`` and the
token limits from ``/info`` become 400s naming the parameter.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from gpt4all_api.engines.base import (
    Done,
    Event,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    Token,
    ToolCall,
)
from gpt4all_api.engines.remote import (
    RemoteEngine,
    map_finish,
    overloaded,
    parse_event,
    stream_error_kind,
)
from gpt4all_api.errors import APIError, ContextLengthExceeded, InvalidRequest, UpstreamError

logger = logging.getLogger(__name__)

#: TGI parameter names (in its validation messages) -> ours.
_PARAM_NAMES = {
    "max_new_tokens": "max_tokens",
    "repetition_penalty": "repeat_penalty",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
}
_BACKTICKED = re.compile(r"`(\w+)`")


def generate_parameters(p: SamplingParams) -> dict[str, Any]:
    """``parameters`` of a ``/generate(_stream)`` request."""
    params: dict[str, Any] = {"details": True}
    if p.max_tokens is not None:
        params["max_new_tokens"] = p.max_tokens
    if _greedy(p):
        params["do_sample"] = False
    else:
        params["do_sample"] = True
        params["temperature"] = p.temperature
        if 0 < p.top_p < 1:
            params["top_p"] = p.top_p
        if p.top_k > 0:
            params["top_k"] = p.top_k
    if p.repeat_penalty > 0 and p.repeat_penalty != 1:
        params["repetition_penalty"] = p.repeat_penalty
    if p.stop:
        params["stop"] = list(p.stop)
    if p.seed is not None:
        params["seed"] = p.seed % 2**64
    return params


def chat_body(request: GenerationRequest) -> dict[str, Any]:
    """A Messages API request (streamed, with usage)."""
    p = request.params
    body: dict[str, Any] = {
        "model": "tgi",
        "messages": _messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if _greedy(p):
        body["temperature"] = 0.0  # TGI: greedy; leaving it out would mean sampling at 1.0
    else:
        body["temperature"] = p.temperature
        if 0 < p.top_p < 1:
            body["top_p"] = p.top_p
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed % 2**64
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    # TGI's FunctionDefinition names the schema "arguments" ("parameters"
                    # is only an alias: sending both is a duplicate-field error)
                    "arguments": t.parameters,
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "named"
            else choice.mode
        )
    if request.response_format is not None:
        body["response_format"] = grammar(request.response_format)
    return body


def grammar(response_format: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` as TGI's grammar (``GrammarType``)."""
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return {"type": "json", "value": spec.get("schema") or {}}
    return {"type": "json", "value": {"type": "object"}}


def tgi_tool_calls(parts: dict[int, dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """Accumulated streamed calls -> ``(name, arguments JSON, text)``.

    TGI 3 streams the name first and the arguments as fragments; TGI 2 sends no name and
    the arguments as ``{"function": {"_name": ..., <arguments>}}``; TGI answers "no call"
    as the ``no_tool`` pseudo-function whose ``content`` is the text (returned as text)."""
    out: list[tuple[str, str, str | None]] = []
    for index in sorted(parts):
        name = parts[index].get("name") or ""
        raw = parts[index].get("arguments") or ""
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise UpstreamError(
                "The inference upstream sent tool call arguments that are not JSON.",
                code="upstream_error",
            ) from None
        if isinstance(args, dict) and isinstance(args.get("function"), dict) and not name:
            args = dict(args["function"])
        if isinstance(args, dict) and not name:
            name = str(args.pop("_name", "") or args.pop("name", ""))
        if not isinstance(args, dict) or not name:
            raise UpstreamError(
                "The inference upstream sent a tool call without a name.", code="upstream_error"
            )
        if name == "no_tool":
            out.append((name, "{}", str(args.get("content") or "")))
            continue
        out.append((name, json.dumps(args, ensure_ascii=False), None))
    return out


def _greedy(p: SamplingParams) -> bool:
    # top_p 0 keeps only the most likely token, as llama.cpp does in CPU mode
    return p.temperature <= 0 or p.top_p <= 0


def _messages(request: GenerationRequest) -> list[dict[str, Any]]:
    assert request.messages is not None
    out: list[dict[str, Any]] = []
    for turn in request.messages:
        msg: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.name:
            msg["name"] = turn.name
        if turn.tool_calls:
            del msg["content"]  # TGI: a message has content or tool_calls
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.loads(c.arguments)},
                }
                for c in turn.tool_calls
            ]
        if turn.tool_call_id is not None:
            msg["tool_call_id"] = turn.tool_call_id
        out.append(msg)
    return out


def _prompt_param(request: GenerationRequest) -> str:
    return "messages" if request.messages is not None else "prompt"


class TgiEngine(RemoteEngine):
    """A model served by text-generation-inference."""

    backend = "tgi"
    health_path = "/health"
    parses_tool_calls = True

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.max_input_tokens: int | None = None
        self.max_total_tokens: int | None = None
        self.max_stop_sequences: int | None = None

    async def _fetch_info(self) -> tuple[str, dict[str, Any]]:
        resp = await self.client.get("/info", timeout=self.probe_timeout)
        resp.raise_for_status()
        info = resp.json()
        model_id = info["model_id"]
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("/info has no model_id")
        # TGI < 2.1 called it max_input_length
        self.max_input_tokens = _int(info.get("max_input_tokens", info.get("max_input_length")))
        self.max_total_tokens = _int(info.get("max_total_tokens"))
        self.max_stop_sequences = _int(info.get("max_stop_sequences"))
        self.context_length = self.max_total_tokens
        extra = {
            "context_length": self.max_total_tokens,
            "max_input_tokens": self.max_input_tokens,
            "upstream_model": model_id,
            "upstream_version": info.get("version"),
        }
        return model_id, extra

    # --- errors --------------------------------------------------------------------------

    def bad_request(self, message: str, body: dict[str, Any], prompt_param: str) -> APIError:
        """TGI's validation messages name its parameters in backticks."""
        names = _BACKTICKED.findall(message)
        if "inputs" in names and "tokens" in message:
            return ContextLengthExceeded(message, param=prompt_param)
        param = next((_PARAM_NAMES[n] for n in names if n in _PARAM_NAMES), None)
        if param is None and "inputs" in names:
            param = prompt_param
        return InvalidRequest(message, param=param)

    def event_error(self, obj: dict[str, Any], started: bool, prompt_param: str) -> APIError:
        """An error event inside a 200 stream. TGI sends two shapes: ``/generate_stream``
        ``{"error": str, "error_type": str}``, and the Messages API (TGI 3.x) OpenAI's
        ``{"error": {"message": str, "http_status_code": int}}``. Before the first token
        nothing has reached our client, so it gets the same HTTP error as for a non-streamed
        request (a validation failure is a 400; over the context, ``context_length_exceeded``).
        """
        error = obj.get("error")
        raw = error.get("message") if isinstance(error, dict) else error
        message = str(raw or "unknown error")
        kind = stream_error_kind(obj)
        if not started and kind in ("validation", "template_error", "tool_error"):
            return self.bad_request(message, obj, prompt_param)
        if not started and kind == "overloaded":
            return overloaded(message)
        return UpstreamError(
            f"The inference upstream failed during generation: {message}", code="upstream_error"
        )

    # --- limits ----------------------------------------------------------------------------

    def _check_stops(self, p: SamplingParams) -> None:
        limit = self.max_stop_sequences
        if limit is not None and len(p.stop) > limit:
            raise InvalidRequest(
                f"At most {limit} stop sequences are allowed by this model's server; "
                f"got {len(p.stop)}.",
                param="stop",
            )

    async def count_prompt_tokens(self, request: GenerationRequest) -> int | None:
        """The prompt's token count from TGI's tokenizer routes (None when unavailable)."""
        try:
            if request.messages is not None:
                resp = await self.client.post(
                    "/chat_tokenize",
                    json={"model": "tgi", "messages": _messages(request)},
                    timeout=self.probe_timeout,
                )
                resp.raise_for_status()
                tokens = resp.json().get("tokenize_response")
            else:
                resp = await self.client.post(
                    "/tokenize", json={"inputs": request.prompt}, timeout=self.probe_timeout
                )
                resp.raise_for_status()
                tokens = resp.json()
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            logger.debug("token count unavailable: %r", exc)
            return None
        return len(tokens) if isinstance(tokens, list) else None

    async def check_prompt_fits(self, request: GenerationRequest) -> None:
        await self.ensure_info()
        if self.max_input_tokens is None:
            return
        count = await self.count_prompt_tokens(request)
        if count is not None and count > self.max_input_tokens:
            raise self._too_long(request, count)

    def _too_long(self, request: GenerationRequest, count: int) -> ContextLengthExceeded:
        param = _prompt_param(request)
        return ContextLengthExceeded(
            f"This model's maximum input length is {self.max_input_tokens} tokens, but your "
            f"{param} has {count}. Please shorten your {param}.",
            param=param,
        )

    # --- generation ------------------------------------------------------------------------

    async def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        await self.ensure_info()
        p = request.params
        self._check_stops(p)
        stop = stop or threading.Event()
        if p.max_tokens == 0:
            # TGI refuses max_new_tokens=0; OpenAI answers an empty "length" completion
            count = await self.count_prompt_tokens(request)
            if count is not None and self.max_input_tokens and count > self.max_input_tokens:
                raise self._too_long(request, count)
            yield Done("length", count or 0, 0)
            return
        events = (
            self._stream_chat(request, stop)
            if request.messages is not None
            else self._stream_generate(request, stop)
        )
        async with aclosing(events):
            async for event in events:
                yield event

    async def _stream_generate(
        self, request: GenerationRequest, stop: threading.Event
    ) -> AsyncIterator[Event]:
        body = {"inputs": request.prompt, "parameters": generate_parameters(request.params)}
        generated = 0
        final: Done | None = None
        events = self.upstream_events("/generate_stream", body, "prompt")
        async with aclosing(events):
            async for data in events:
                if data == "[DONE]" or final is not None:
                    continue  # TGI ends the stream after the details (no [DONE])
                obj = parse_event(data)
                if "error" in obj:
                    raise self.event_error(obj, generated > 0, "prompt")
                token = obj.get("token") or {}
                generated += 1
                yield Token("" if token.get("special") else str(token.get("text") or ""))
                details = obj.get("details")
                if details:
                    counted = _int(details.get("generated_tokens"))
                    final = Done(
                        map_finish(details.get("finish_reason")),
                        _int(details.get("input_length")) or 0,
                        counted if counted is not None else generated,
                    )
                elif stop.is_set():
                    break  # closing the events drops the connection: TGI cancels the request
        if final is not None:
            yield final
            return
        if not stop.is_set():
            raise UpstreamError(
                "The inference upstream's stream ended before the generation finished.",
                code="upstream_error",
            )
        yield Done("stop", await self.count_prompt_tokens(request) or 0, generated)

    async def _stream_chat(
        self, request: GenerationRequest, stop: threading.Event
    ) -> AsyncIterator[Event]:
        generated = 0
        finish: FinishReason | None = None
        usage: dict[str, Any] | None = None
        aborted = False
        calls: dict[int, dict[str, Any]] = {}
        events = self.upstream_events("/v1/chat/completions", chat_body(request), "messages")
        async with aclosing(events):
            async for data in events:
                if data == "[DONE]":
                    continue  # TGI ends the stream right after it
                obj = parse_event(data)
                if "error" in obj:
                    raise self.event_error(obj, generated > 0, "messages")
                if isinstance(obj.get("usage"), dict):
                    usage = obj["usage"]
                for choice in obj.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    generated += 1  # TGI sends one chunk per generated token
                    pieces = delta.get("tool_calls")
                    if pieces:  # a list (TGI 3) or one object (TGI 2)
                        for piece in pieces if isinstance(pieces, list) else [pieces]:
                            fn = piece.get("function") or {}
                            acc = calls.setdefault(int(piece.get("index") or 0), {})
                            if fn.get("name"):
                                acc["name"] = fn["name"]
                            args = fn.get("arguments")
                            if isinstance(args, dict):
                                args = json.dumps(args)
                            acc["arguments"] = acc.get("arguments", "") + str(args or "")
                        yield Token("", 1)
                    else:
                        yield Token(str(delta.get("content") or ""))
                    if choice.get("finish_reason"):
                        finish = map_finish(choice["finish_reason"])
                if finish is None and stop.is_set():
                    aborted = True
                    break  # closing the events drops the connection: TGI cancels the request
        index = 0
        for name, arguments, text in tgi_tool_calls(calls):
            if text is not None:
                yield Token(text, 0)
            else:
                yield ToolCall(index, "", name, arguments)
                index += 1
        if aborted:
            yield Done("stop", await self.count_prompt_tokens(request) or 0, generated)
            return
        if finish is None:
            raise UpstreamError(
                "The inference upstream's stream ended before the generation finished.",
                code="upstream_error",
            )
        if usage is not None:
            prompt_tokens = _int(usage.get("prompt_tokens"))
            completion_tokens = _int(usage.get("completion_tokens"))
        else:
            prompt_tokens = completion_tokens = None
        if prompt_tokens is None:
            prompt_tokens = await self.count_prompt_tokens(request) or 0
        if completion_tokens is None:
            completion_tokens = generated
        yield Done(finish, prompt_tokens, completion_tokens)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
