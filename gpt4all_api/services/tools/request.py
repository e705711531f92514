"""Tool-calling fields of a chat request -> one internal form, checked as OpenAI would.

``tools`` and the legacy ``functions`` both become ``ToolSpec``s, ``tool_choice`` and the
legacy ``function_call`` one ``ToolChoice``; the history's assistant ``tool_calls`` /
``function_call`` and ``tool`` / ``function`` messages become ``ChatTurn``s. Whatever a
client gets wrong is a 400 naming the parameter (``tools[1].function.parameters``,
``messages[3].tool_call_id``, ``tool_choice``), never a 500 from a template later on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpt4all_api.engines.base import ChatTurn, ToolCallPart, ToolChoice, ToolSpec
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import (
    ChatCompletionFunctionCallOption,
    ChatCompletionNamedToolChoice,
    ChatMessage,
    CreateChatCompletionRequest,
)

#: What a function without ``parameters`` takes (OpenAI: "omitting means an empty list").
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """The request's tools as the service uses them.

    ``legacy``: the client used ``functions``/``function_call``, so the answer uses
    ``message.function_call`` and ``finish_reason: "function_call"`` (one call at most).
    ``active``: calls may be returned (tools given and the choice is not none).
    """

    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=lambda: ToolChoice("none"))
    parallel: bool = True
    legacy: bool = False

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice.mode != "none"

    @property
    def allowed_names(self) -> frozenset[str]:
        """Names a returned call may have: the forced one for a named choice."""
        if self.choice.mode == "named" and self.choice.name:
            return frozenset({self.choice.name})
        return frozenset(t.name for t in self.tools)


def _parameters(params: dict[str, Any] | None, param: str) -> dict[str, Any]:
    if params is None or params == {}:
        return dict(EMPTY_PARAMETERS)
    kind = params.get("type", "object" if "properties" in params else None)
    if kind != "object":
        raise InvalidRequest(
            f"Invalid schema for '{param}': a function's parameters must be a JSON Schema "
            f'object ({{"type": "object", ...}}), got type {kind!r}.',
            param=param,
        )
    return params


def plan_tools(req: CreateChatCompletionRequest) -> ToolRequest:
    """``tools``/``functions`` and the choice, validated; raises ``InvalidRequest``."""
    if req.tools and req.functions:
        raise InvalidRequest(
            "Give 'tools' or the deprecated 'functions', not both.", param="functions"
        )
    legacy = bool(req.functions) and not req.tools
    specs: list[ToolSpec] = []
    seen: dict[str, int] = {}
    if req.tools:
        for i, tool in enumerate(req.tools):
            fn = tool.function
            prefix = f"tools[{i}].function"
            if fn.name in seen:
                raise InvalidRequest(
                    f"Duplicate tool name '{fn.name}' (also tools[{seen[fn.name]}]).",
                    param=f"{prefix}.name",
                )
            seen[fn.name] = i
            specs.append(
                ToolSpec(
                    fn.name,
                    fn.description,
                    _parameters(fn.parameters, f"{prefix}.parameters"),
                    bool(fn.strict),
                )
            )
    elif req.functions:
        for i, f in enumerate(req.functions):
            if f.name in seen:
                raise InvalidRequest(
                    f"Duplicate function name '{f.name}' (also functions[{seen[f.name]}]).",
                    param=f"functions[{i}].name",
                )
            seen[f.name] = i
            specs.append(
                ToolSpec(
                    f.name, f.description, _parameters(f.parameters, f"functions[{i}].parameters")
                )
            )
    choice = _choice(req, legacy, seen)
    if choice.mode == "none":
        specs = []  # never shown to the model, never returned
    parallel = False if legacy else req.parallel_tool_calls is not False
    return ToolRequest(tuple(specs), choice, parallel, legacy)


def _choice(req: CreateChatCompletionRequest, legacy: bool, names: dict[str, int]) -> ToolChoice:
    param = "function_call" if legacy else "tool_choice"
    raw: Any = req.function_call if legacy else req.tool_choice
    if not legacy and raw is None and req.function_call is not None and req.tools:
        param, raw = "function_call", req.function_call
    if raw is None:
        return ToolChoice("auto" if names else "none")
    if isinstance(raw, ChatCompletionNamedToolChoice | ChatCompletionFunctionCallOption):
        name = raw.function.name if isinstance(raw, ChatCompletionNamedToolChoice) else raw.name
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise InvalidRequest(
                f"'{param}' names the function '{name}', which is not in "
                f"'{'functions' if legacy else 'tools'}' (known: {known}).",
                param=param,
            )
        return ToolChoice("named", name)
    if raw in ("required", "auto") and not names:
        if raw == "auto":
            return ToolChoice("none")
        raise InvalidRequest(f"'{param}' is 'required' but no tools were given.", param=param)
    return ToolChoice(raw)


def _arguments(raw: str, param: str) -> str:
    """The JSON object string of a history call ('' means no arguments)."""
    if not raw.strip():
        return "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest(f"Invalid value for '{param}': not valid JSON.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Invalid value for '{param}': the arguments must be a JSON object.", param=param
        )
    return raw


def chat_turns(
    messages: Sequence[ChatMessage], text_of: Callable[[int, Any], str]
) -> tuple[ChatTurn, ...]:
    """The history as ``ChatTurn``s; ``text_of(i, content)`` extracts message text.

    A ``tool`` message must answer a call of an earlier assistant message; a legacy
    ``function`` message (``name``, content) answers the latest unanswered
    ``function_call`` of that name and gets its synthetic id.
    """
    turns: list[ChatTurn] = []
    open_calls: dict[str, str] = {}  # id -> name, calls not yet answered
    known_ids: dict[str, str] = {}
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        content = text_of(i, m.content)
        name = m.name or None
        calls: list[ToolCallPart] = []
        if (m.tool_calls or m.function_call) and m.role != "assistant":
            field = "tool_calls" if m.tool_calls else "function_call"
            raise InvalidRequest(
                f"Only assistant messages may carry '{field}'.", param=f"messages[{i}].{field}"
            )
        for j, call in enumerate(m.tool_calls or ()):
            param = f"messages[{i}].tool_calls[{j}]"
            if call.id in known_ids or any(c.id == call.id for c in calls):
                raise InvalidRequest(f"Duplicate tool call id '{call.id}'.", param=f"{param}.id")
            args = _arguments(call.function.arguments, f"{param}.function.arguments")
            calls.append(ToolCallPart(call.id, call.function.name, args))
        if m.function_call is not None:
            param = f"messages[{i}].function_call.arguments"
            calls.append(
                ToolCallPart(
                    f"call_fn{i}",
                    m.function_call.name,
                    _arguments(m.function_call.arguments, param),
                )
            )
        for c in calls:
            known_ids[c.id] = c.name
            open_calls[c.id] = c.name
        call_id: str | None = None
        if m.role == "tool":
            call_id = m.tool_call_id
            if not call_id:
                raise InvalidRequest(
                    "A 'tool' message needs 'tool_call_id'.", param=f"messages[{i}].tool_call_id"
                )
            if call_id not in known_ids:
                raise InvalidRequest(
                    f"'tool_call_id' '{call_id}' does not match any tool call of an earlier "
                    "assistant message.",
                    param=f"messages[{i}].tool_call_id",
                )
            name = name or known_ids[call_id]
            open_calls.pop(call_id, None)
        elif m.role == "function":
            if not name:
                raise InvalidRequest(
                    "A 'function' message needs 'name'.", param=f"messages[{i}].name"
                )
            call_id = next(
                (cid for cid, n in reversed(open_calls.items()) if n == name), f"call_fn{i}"
            )
            open_calls.pop(call_id, None)
            role = "tool"
        turns.append(
            ChatTurn(
                role=role, content=content, name=name, tool_calls=tuple(calls), tool_call_id=call_id
            )
        )
    return tuple(turns)
