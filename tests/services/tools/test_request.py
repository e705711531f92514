"""Validation and normalisation of tools, tool_choice, legacy functions and history."""

from __future__ import annotations

from typing import Any

import pytest

from gpt4all_api.engines.base import ToolChoice
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import CreateChatCompletionRequest
from gpt4all_api.services.tools.request import chat_turns, plan_tools

PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}}


def tool(name: str, parameters: Any = PARAMS) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def req(**kw: Any) -> CreateChatCompletionRequest:
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    return CreateChatCompletionRequest.model_validate({"model": "m", **kw})


def error_param(fn: Any) -> str | None:
    with pytest.raises(InvalidRequest) as info:
        fn()
    return info.value.param


def test_tools_and_choices() -> None:
    plan = plan_tools(req(tools=[tool("a"), tool("b", None)]))
    assert [t.name for t in plan.tools] == ["a", "b"]
    assert plan.tools[1].parameters == {"type": "object", "properties": {}}
    assert plan.choice == ToolChoice("auto") and plan.active and plan.parallel
    named = {"type": "function", "function": {"name": "b"}}
    plan = plan_tools(req(tools=[tool("a"), tool("b")], tool_choice=named))
    assert plan.choice == ToolChoice("named", "b") and plan.allowed_names == {"b"}
    plan = plan_tools(req(tools=[tool("a")], tool_choice="none"))
    assert not plan.active and plan.tools == ()
    assert not plan_tools(req()).active
    assert not plan_tools(req(tool_choice="auto")).active
    assert not plan_tools(req(tools=[tool("a")], parallel_tool_calls=False)).parallel


def test_legacy_functions() -> None:
    plan = plan_tools(req(functions=[{"name": "f", "parameters": PARAMS}]))
    assert plan.legacy and not plan.parallel and plan.choice == ToolChoice("auto")
    plan = plan_tools(req(functions=[{"name": "f"}], function_call={"name": "f"}))
    assert plan.choice == ToolChoice("named", "f")


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"tools": [tool("a"), tool("b", {"type": "string"})]}, "tools[1].function.parameters"),
        ({"tools": [tool("a"), tool("a")]}, "tools[1].function.name"),
        (
            {"tools": [tool("a")], "tool_choice": {"type": "function", "function": {"name": "z"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [tool("a")], "functions": [{"name": "a"}]}, "functions"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
        (
            {"functions": [{"name": "f", "parameters": {"type": "array"}}]},
            "functions[0].parameters",
        ),
    ],
)
def test_invalid_tools(kw: dict[str, Any], param: str) -> None:
    assert error_param(lambda: plan_tools(req(**kw))) == param


def _turns(messages: list[dict[str, Any]]) -> Any:
    return chat_turns(req(messages=messages).messages, lambda i, c: c or "")


CALL = {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}}


def test_history() -> None:
    turns = _turns(
        [
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ]
    )
    assert turns[0].role == "system"
    assert turns[2].tool_calls[0].name == "a" and turns[2].content == ""
    assert turns[3].role == "tool" and turns[3].tool_call_id == "call_1" and turns[3].name == "a"


def test_legacy_history() -> None:
    turns = _turns(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "r"},
        ]
    )
    assert turns[2].role == "tool" and turns[2].tool_call_id == turns[1].tool_calls[0].id


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "messages[0].tool_call_id"),
        (
            [
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_2", "content": "x"},
            ],
            "messages[2].tool_call_id",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "messages[0].tool_calls"),
        ([{"role": "function", "content": "x"}], "messages[0].name"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "a", "arguments": "{x"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([{"role": "assistant", "tool_calls": [CALL, CALL]}], "messages[0].tool_calls[1].id"),
    ],
)
def test_invalid_history(messages: list[dict[str, Any]], param: str) -> None:
    assert error_param(lambda: _turns(messages)) == param
