"""The reply's required shape from a chat request: which constraint, which parameter a bad
schema is reported under, nothing in GPU mode."""

from __future__ import annotations

from typing import Any

import pytest

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import CreateChatCompletionRequest
from gpt4all_api.services.generation.output_format import output_constraint
from gpt4all_api.services.tools import plan_tools
from gpt4all_api.settings import Settings
from gpt4all_api.structured import AnyValue, JsonOutput, ToolCallOutput
from gpt4all_api.structured.grammar import Obj

CPU = Settings(inference_mode="cpu", structured_max_items=5)
GPU = Settings(inference_mode="gpu", gpu_url="http://tgi:80")
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
PATTERN = {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}


def tool(name: str, parameters: Any = None, strict: bool = False) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "strict": strict}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def constraint(settings: Settings = CPU, **body: Any) -> Any:
    req = CreateChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    )
    return output_constraint(req, plan_tools(req), settings)


def schema_format(schema: Any, strict: bool = False) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "S", "schema": schema, "strict": strict}}


def test_response_formats() -> None:
    assert constraint() is None
    assert constraint(response_format={"type": "text"}) is None
    obj = constraint(response_format={"type": "json_object"})
    assert isinstance(obj, JsonOutput) and obj.object_only and isinstance(obj.value, AnyValue)
    assert obj.value.cap == 5 and obj.calls is None
    out = constraint(response_format=schema_format(SCHEMA))
    assert isinstance(out, JsonOutput) and isinstance(out.value, Obj) and out.name == "S"
    assert '"a": integer' in out.instruction()


def test_forced_calls_take_the_allowed_tools() -> None:
    tools = [tool("a", SCHEMA), tool("b")]
    required = constraint(tools=tools, tool_choice="required")
    assert isinstance(required, ToolCallOutput)
    assert [name for name, _ in required.tools] == ["a", "b"]
    named = constraint(tools=tools, tool_choice={"type": "function", "function": {"name": "b"}})
    assert isinstance(named, ToolCallOutput) and [n for n, _ in named.tools] == ["b"]
    # a forced call wins over a response format
    both = constraint(tools=tools, tool_choice="required", response_format=schema_format(SCHEMA))
    assert isinstance(both, ToolCallOutput)
    legacy = constraint(functions=[tool("f")["function"]], function_call={"name": "f"})
    assert isinstance(legacy, ToolCallOutput)


def test_auto_tools_beside_a_format_stay_callable() -> None:
    out = constraint(tools=[tool("a", SCHEMA)], response_format=schema_format(SCHEMA))
    assert isinstance(out, JsonOutput) and out.calls is not None
    assert out.instruction().startswith("When you do not call a tool")
    assert constraint(tools=[tool("a", SCHEMA)]) is None  # auto alone: free text, as always
    none = constraint(
        tools=[tool("a", SCHEMA)], tool_choice="none", response_format=schema_format(SCHEMA)
    )
    assert isinstance(none, JsonOutput) and none.calls is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": schema_format(PATTERN, strict=True)},
         "response_format.json_schema.schema"),
        ({"tools": [tool("a", PATTERN, strict=True)], "tool_choice": "required"},
         "tools[0].function.parameters"),
        ({"tools": [tool("b"), tool("a", {"type": "object", "properties": {"x": {"enum": []}}})],
          "tool_choice": {"type": "function", "function": {"name": "a"}}},
         "tools[1].function.parameters"),
        ({"functions": [{"name": "f", "parameters": {"type": "object", "required": ["z"],
                                                     "properties": {}}}],
          "function_call": {"name": "f"}}, "functions[0].parameters"),
    ],
)  # fmt: skip
def test_bad_schemas_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        constraint(**body)
    assert info.value.param == param and "Invalid schema" in info.value.message
    assert "(at #/" in info.value.message


def test_gpu_mode_gets_nothing() -> None:
    """TGI and OpenAI upstreams get response_format and tool_choice as they are."""
    assert constraint(GPU, response_format=schema_format(PATTERN, strict=True)) is None
    assert constraint(GPU, tools=[tool("a")], tool_choice="required") is None
