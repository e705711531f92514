"""Turning a completions or chat request into choice plans: validation beyond the schema,
sampling defaults, prompt lists, ``n`` and ``echo``. Nothing here touches a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gpt4all_api.engines.base import GenerationRequest, SamplingParams
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import CreateChatCompletionRequest, TextContentPart
from gpt4all_api.protocol.common import SamplingFields
from gpt4all_api.protocol.completions import CreateCompletionRequest
from gpt4all_api.services.generation.output_format import output_constraint
from gpt4all_api.services.tools import ToolRequest, chat_turns, plan_tools
from gpt4all_api.settings import Settings

T = TypeVar("T")
#: The two generation endpoints: ``/v1/completions`` and ``/v1/chat/completions``.
Kind = Literal["completion", "chat"]


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not supported by this server: {why}", param=param)


def _check_common(req: SamplingFields, settings: Settings, max_tokens: int | None) -> None:
    if req.logit_bias:
        raise _unsupported("logit_bias", "the gpt4all backend cannot bias logits.")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(req, name)
        if value not in (None, 0, 0.0):
            raise _unsupported(name, "use 'repeat_penalty' (gpt4all's repetition penalty).")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    n = req.n or 1
    if n > settings.max_n:
        raise InvalidRequest(f"'n' must be at most {settings.max_n}.", param="n")
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequest(
            f"'max_tokens' must be at most {settings.max_tokens_limit} on this server.",
            param="max_tokens",
        )
    if any(len(s) > settings.max_stop_length for s in req.stop_list()):
        raise InvalidRequest(
            f"Each stop sequence may be at most {settings.max_stop_length} characters long.",
            param="stop",
        )


def sampling_params(
    req: SamplingFields, settings: Settings, max_tokens: int | None
) -> SamplingParams:
    """Request values over configured defaults."""

    def pick(value: T | None, default: T) -> T:
        return default if value is None else value

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=pick(req.temperature, settings.default_temperature),
        top_p=pick(req.top_p, settings.default_top_p),
        top_k=pick(req.top_k, settings.default_top_k),
        min_p=pick(req.min_p, settings.default_min_p),
        repeat_penalty=pick(req.repeat_penalty, settings.default_repeat_penalty),
        repeat_last_n=pick(req.repeat_last_n, settings.default_repeat_last_n),
        stop=tuple(req.stop_list()),
        seed=req.seed,
    )


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    index: int
    request: GenerationRequest
    prompt_key: int  # choices sharing a prompt count its tokens once
    echo: str = ""
    tools: ToolRequest = field(default_factory=ToolRequest)


def plan_completion(req: CreateCompletionRequest, settings: Settings) -> list[ChoicePlan]:
    _check_common(req, settings, req.max_tokens)
    if req.logprobs is not None:
        raise _unsupported("logprobs", "the gpt4all backend does not expose token logprobs.")
    if req.suffix:
        raise _unsupported("suffix", "insertion (fill-in-the-middle) is not available.")
    n = req.n or 1
    if req.best_of is not None and req.best_of > n:
        raise _unsupported("best_of", "'best_of' greater than 'n' needs logprobs to rank.")
    prompt = req.prompt
    if isinstance(prompt, str):
        prompts = [prompt]
    elif not prompt:
        raise InvalidRequest("'prompt' must not be empty.", param="prompt")
    elif all(isinstance(p, str) for p in prompt):
        prompts = [str(p) for p in prompt]
    else:
        raise InvalidRequest(
            "Token arrays are not supported for 'prompt': send a string or a list of strings.",
            param="prompt",
        )
    if len(prompts) > settings.max_prompts:
        raise InvalidRequest(
            f"'prompt' may hold at most {settings.max_prompts} prompts.", param="prompt"
        )
    for i, p in enumerate(prompts):
        _check_unicode(p, "prompt" if isinstance(prompt, str) else f"prompt[{i}]")
    params = sampling_params(req, settings, req.max_tokens)
    return [
        ChoicePlan(
            index=pi * n + j,
            request=GenerationRequest(params=params, prompt=p),
            prompt_key=pi,
            echo=p if req.echo else "",
        )
        for pi, p in enumerate(prompts)
        for j in range(n)
    ]


def _check_unicode(text: str, param: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``), which no model can be fed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"Invalid value for '{param}': not valid Unicode (it holds a lone surrogate).",
            param=param,
        ) from None
    return text


def _message_text(msg_index: int, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for k, part in enumerate(content):
        if not isinstance(part, TextContentPart):
            raise InvalidRequest(
                f"Content parts of type '{part.type}' are not supported; only 'text'.",
                param=f"messages[{msg_index}].content[{k}]",
            )
        parts.append(part.text)
    return "".join(parts)


def plan_chat(req: CreateChatCompletionRequest, settings: Settings) -> list[ChoicePlan]:
    both = req.max_tokens is not None and req.max_completion_tokens is not None
    if both and req.max_tokens != req.max_completion_tokens:
        raise InvalidRequest(
            "Give 'max_tokens' or 'max_completion_tokens', not two different values.",
            param="max_tokens",
        )
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else (req.max_tokens)
    )
    _check_common(req, settings, max_tokens)
    if req.logprobs:
        raise _unsupported("logprobs", "the gpt4all backend does not expose token logprobs.")
    if req.top_logprobs is not None:
        raise _unsupported("top_logprobs", "the gpt4all backend does not expose logprobs.")
    tools = plan_tools(req)
    response_format = _response_format(req)
    if req.modalities and any(m != "text" for m in req.modalities):
        raise _unsupported("modalities", "only text output is available.")
    if req.audio is not None:
        raise _unsupported("audio", "only text output is available.")
    turns = chat_turns(
        req.messages,
        lambda i, content: _check_unicode(_message_text(i, content), f"messages[{i}].content"),
    )
    params = sampling_params(req, settings, max_tokens)
    request = GenerationRequest(
        params=params,
        messages=turns,
        tools=tools.tools,
        tool_choice=tools.choice,
        parallel_tool_calls=tools.parallel,
        response_format=response_format,
        constraint=output_constraint(req, tools, settings),
    )
    return [
        ChoicePlan(index=j, request=request, prompt_key=0, tools=tools) for j in range(req.n or 1)
    ]


def _response_format(req: CreateChatCompletionRequest) -> dict[str, Any] | None:
    """The client's ``response_format`` for the engine (None for plain text)."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type not in ("json_object", "json_schema"):
        raise InvalidRequest(
            f"Invalid value for 'response_format.type': '{fmt.type}' (expected 'text', "
            "'json_object' or 'json_schema').",
            param="response_format.type",
        )
    if fmt.type == "json_schema" and (fmt.json_schema is None or fmt.json_schema.schema_ is None):
        raise InvalidRequest(
            "'response_format' of type 'json_schema' needs 'json_schema.schema'.",
            param="response_format.json_schema",
        )
    return fmt.model_dump(by_alias=True, exclude_none=True)


def include_usage(req: SamplingFields) -> bool:
    """``stream_options.include_usage``: a last chunk with the usage."""
    return bool(req.stream_options and req.stream_options.include_usage)
