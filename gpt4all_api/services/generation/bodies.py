"""The OpenAI JSON shapes of a generation: a whole (non-streamed) response, stream chunks,
usage and ids; and collecting every choice of a non-streamed request."""

from __future__ import annotations

import time
import uuid
from typing import Any

from gpt4all_api import request_context
from gpt4all_api.engines.base import Engine
from gpt4all_api.services.generation.choice import ChoiceOutcome, run_choice
from gpt4all_api.services.generation.planning import ChoicePlan, Kind
from gpt4all_api.services.sse import sse_event
from gpt4all_api.services.tools import (
    ContentDelta,
    ReplyBuilder,
    ToolCallDelta,
    delta_json,
    finish_reason,
)


class UsageTally:
    """The usage of a request's choices: a prompt shared by several choices (``n``) counts
    once, with the cached tokens of its first choice (the one that evaluated it)."""

    def __init__(self) -> None:
        self.prompt_tokens: dict[int, int] = {}
        self.cached_tokens: dict[int, int] = {}
        self.completion_tokens = 0

    def add(self, plan: ChoicePlan, outcome: ChoiceOutcome) -> None:
        self.prompt_tokens[plan.prompt_key] = outcome.prompt_tokens
        self.cached_tokens.setdefault(plan.prompt_key, outcome.cached_tokens)
        self.completion_tokens += outcome.completion_tokens

    def body(self) -> dict[str, Any]:
        """OpenAI's ``usage`` (``cached_tokens`` are part of ``prompt_tokens``); also noted
        for the access log and metrics."""
        p = sum(self.prompt_tokens.values())
        request_context.note_usage(p, self.completion_tokens)
        return {
            "prompt_tokens": p,
            "completion_tokens": self.completion_tokens,
            "total_tokens": p + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": sum(self.cached_tokens.values())},
        }


def new_id(kind: Kind) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex


async def collect(engine: Engine, kind: Kind, model: str, plans: list[ChoicePlan]) -> dict:
    choices: list[dict[str, Any]] = []
    usage = UsageTally()
    for plan in plans:
        pieces: list[str] = [plan.echo] if plan.echo else []
        reply = ReplyBuilder(plan.tools)
        outcome = await run_choice(
            engine, plan.request, pieces.append, tools=plan.tools, on_tool=reply.add
        )
        usage.add(plan, outcome)
        text = "".join(pieces)
        if kind == "completion":
            choices.append(
                {
                    "text": text,
                    "index": plan.index,
                    "logprobs": None,
                    "finish_reason": outcome.finish_reason,
                }
            )
        else:
            reply.add(ContentDelta(text))
            choices.append(
                {
                    "index": plan.index,
                    "message": reply.message(),
                    "logprobs": None,
                    "finish_reason": finish_reason(
                        outcome.finish_reason, outcome.tool_calls, plan.tools.legacy
                    ),
                }
            )
    return {
        "id": new_id(kind),
        "object": "text_completion" if kind == "completion" else "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage.body(),
    }


class Chunks:
    """Builds the SSE chunks of one streamed response (same id and created in each)."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.base = {
            "id": new_id(kind),
            "object": "text_completion" if kind == "completion" else "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def tool(self, index: int, delta: ToolCallDelta, legacy: bool) -> bytes:
        choice = {
            "index": index,
            "delta": delta_json(delta, legacy),
            "logprobs": None,
            "finish_reason": None,
        }
        return sse_event({**self.base, "choices": [choice]})

    def text(self, index: int, text: str, finish: str | None = None) -> bytes:
        if self.kind == "completion":
            choice: dict[str, Any] = {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            # "content" is present in every delta: clients written for openai 0.28 index
            # delta["content"] on every chunk after the first.
            choice = {
                "index": index,
                "delta": {"content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        return sse_event({**self.base, "choices": [choice]})

    def role(self, index: int) -> bytes:
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return sse_event({**self.base, "choices": [choice]})

    def usage(self, usage: dict[str, Any]) -> bytes:
        return sse_event({**self.base, "choices": [], "usage": usage})
