"""Responses API request parsing and validation: what is accepted, what is refused and how
the 400 names the parameter."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from gpt4all_api.errors import InvalidRequest, validation_error_response
from gpt4all_api.protocol.responses import (
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    Response,
    validate_request,
)
from tests.support.responses_schema import validate_create_request, validate_response


def parse(body: dict[str, Any]) -> CreateResponseRequest:
    return CreateResponseRequest.model_validate(body)


def schema_error_param(body: dict[str, Any]) -> str | None:
    """The ``param`` the service's 400 names for a body pydantic refuses."""
    with pytest.raises(ValidationError) as info:
        parse(body)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    response = validation_error_response(RequestValidationError(errors))
    assert response.status_code == 400
    import json

    return json.loads(bytes(response.body))["error"]["param"]


def refused(body: dict[str, Any]) -> InvalidRequest:
    request = parse(body)
    with pytest.raises(InvalidRequest) as info:
        validate_request(request)
    assert info.value.status_code == 400
    return info.value


FULL = {
    "model": "tiny",
    "input": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": "Let me see."},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}
            ],
        },
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "system", "content": "System note."},
    ],
    "instructions": "You are helpful.",
    "max_output_tokens": 64,
    "metadata": {"k": "v"},
    "parallel_tool_calls": False,
    "previous_response_id": "resp_abc",
    "store": False,
    "stream": True,
    "temperature": 0.5,
    "text": {"format": {"type": "text"}},
    "tool_choice": {"type": "function", "name": "weather"},
    "tools": [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        }
    ],
    "top_p": 0.9,
    "truncation": "disabled",
    "user": "u1",
}


def test_full_request_is_accepted() -> None:
    validate_create_request(FULL)  # the body is valid by the official schema
    request = parse(FULL)
    validate_request(request)
    kinds = [type(i) for i in request.input]
    assert kinds == [
        MessageItem, MessageItem, MessageItem, MessageItem, FunctionCallItem,
        FunctionCallOutputItem, MessageItem,
    ]  # fmt: skip
    assert request.store is False and request.function_tools()[0].name == "weather"


def test_defaults() -> None:
    request = parse({"model": "m", "input": "hi"})
    validate_request(request)
    assert request.store is True and request.stream is False
    assert request.text_format().type == "text"
    assert request.truncation is None and request.tool_choice is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"truncation": "auto"}, "truncation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]},
            "tools[1].name",
        ),
        ({"tools": [{"type": "function", "name": "a b"}]}, "tools[0].name"),
        (
            {"tools": [{"type": "function", "name": "a", "parameters": {"type": "string"}}]},
            "tools[0].parameters",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        (
            {
                "input": [
                    "x",
                    {"role": "user", "content": [{"type": "input_image", "image_url": "u"}]},
                ]
            },
            None,
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "u"}],
                    }
                ]
            },
            "input[0].output[0]",
        ),
    ],
)
def test_unsupported_options_are_refused_naming_the_parameter(
    body: dict[str, Any], param: str | None
) -> None:
    full = {"model": "m", "input": "hi", **body}
    if param is None:  # a string inside an item list: refused by the schema itself
        assert schema_error_param(full) is not None
        return
    assert refused(full).param == param


def test_structured_output_is_accepted() -> None:
    body = {
        "model": "m",
        "input": "hi",
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
    }
    validate_create_request(body)
    validate_request(parse(body))
    validate_request(parse({**body, "text": {"format": {"type": "json_object"}}}))
    bad = {**body, "text": {"format": {"type": "json_schema", "name": "o u t", "schema": {}}}}
    assert refused(bad).param == "text.format.name"


def test_reasoning_without_effort_is_accepted() -> None:
    validate_request(parse({"model": "m", "input": "x", "reasoning": {"effort": None}}))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -1}, "top_p"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": 5}, "input"),
        ({"model": ""}, "model"),
    ],
)
def test_schema_errors_name_the_parameter(body: dict[str, Any], param: str) -> None:
    assert schema_error_param({"model": "m", "input": "hi", **body}) == param


def test_response_model_validates_against_the_official_schema() -> None:
    response = Response(id="resp_1", created_at=1, status="completed", model="m")
    data = response.to_json()
    assert "user" not in data  # typed as a string by the schema: left out when unset
    validate_response(data)
    validate_response(
        Response(id="r", created_at=1, status="queued", model="m", user="u").to_json()
    )
