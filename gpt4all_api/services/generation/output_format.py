"""What shape a chat reply must have, for engines that hold it there themselves (CPU).

``response_format`` (``json_schema``, ``json_object``) becomes a ``JsonOutput`` (with the
tools as an alternative when ``tool_choice`` is auto);
``tool_choice`` ``required`` or a named function becomes a ``ToolCallOutput`` whose
arguments follow each allowed tool's ``parameters``. Schemas are compiled here, before
anything is held, so a schema the decoder cannot hold a reply to is a 400 naming the
parameter (and, in the message, the place in the schema). GPU mode gets nothing from here:
the upstream is given ``response_format`` and ``tool_choice`` as they are.
"""

from __future__ import annotations

from typing import Any

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import CreateChatCompletionRequest
from gpt4all_api.services.tools import ToolRequest
from gpt4all_api.settings import Settings
from gpt4all_api.structured import (
    AnyValue,
    JsonOutput,
    Limits,
    Node,
    OutputConstraint,
    SchemaError,
    ToolCallOutput,
    compile_schema,
)
from gpt4all_api.structured.schema import ANY_DEPTH


def output_constraint(
    req: CreateChatCompletionRequest, tools: ToolRequest, settings: Settings
) -> OutputConstraint | None:
    """The reply's required shape in CPU mode (None: free text, or GPU mode)."""
    if settings.inference_mode != "cpu":
        return None
    limits = Limits(max_items=settings.structured_max_items)
    if tools.active and tools.choice.mode in ("required", "named"):
        return _calls(tools, limits)
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    # tool_choice auto beside a response format: a call stays possible
    calls = _calls(tools, limits) if tools.active else None
    if fmt.type == "json_object":
        value = AnyValue(ANY_DEPTH, object_only=True, cap=limits.max_items)
        return JsonOutput(value, object_only=True, calls=calls)
    spec = fmt.json_schema
    assert spec is not None and spec.schema_ is not None  # planning checked it
    node = _compile(
        spec.schema_,
        bool(spec.strict),
        limits,
        "response_format.json_schema.schema",
        f"response_format '{spec.name}'",
    )
    return JsonOutput(node, name=spec.name, description=spec.description, calls=calls)


def _calls(tools: ToolRequest, limits: Limits) -> ToolCallOutput:
    """One call of an allowed tool, its arguments held to the tool's ``parameters``."""
    allowed = tools.allowed_names
    calls: list[tuple[str, Node]] = []
    for i, spec in enumerate(tools.tools):
        if spec.name in allowed:
            param = (
                f"functions[{i}].parameters" if tools.legacy else f"tools[{i}].function.parameters"
            )
            what = f"function '{spec.name}'"
            calls.append((spec.name, _compile(spec.parameters, spec.strict, limits, param, what)))
    return ToolCallOutput(tuple(calls))


def _compile(schema: Any, strict: bool, limits: Limits, param: str, what: str) -> Node:
    try:
        return compile_schema(schema, strict=strict, limits=limits)
    except SchemaError as exc:
        raise InvalidRequest(
            f"Invalid schema for {what}: {exc.message} (at {exc.path}).", param=param
        ) from None
