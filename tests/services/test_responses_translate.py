"""Responses API translation: input items -> stored items -> chat messages, and the
Response objects built from a generation, checked against the official schemas."""

from __future__ import annotations

from typing import Any

import pytest

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.responses import CreateResponseRequest, validate_request
from gpt4all_api.response_store import InputItemPage
from gpt4all_api.services.responses import (
    GenerationResult,
    ToolCall,
    chat_messages,
    chat_request,
    complete_response,
    failed_response,
    input_item_resources,
    item_list,
    response_not_found,
    start_response,
    stored_record,
)
from tests.support.responses_schema import (
    validate_item_list,
    validate_item_resource,
    validate_response,
)

TOOLS = [
    {
        "type": "function",
        "name": "weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    }
]


def request(**body: Any) -> CreateResponseRequest:
    req = CreateResponseRequest.model_validate({"model": "tiny", **body})
    validate_request(req)
    return req


def test_string_input_is_one_user_message() -> None:
    items = input_item_resources(request(input="Say hi"))
    assert len(items) == 1 and items[0]["id"].startswith("msg_")
    assert items[0]["role"] == "user"
    assert items[0]["content"] == [{"type": "input_text", "text": "Say hi"}]
    validate_item_resource(items[0])
    messages = chat_messages(instructions="Be brief.", history=[], input_items=items)
    assert [(m.role, m.content) for m in messages] == [
        ("developer", "Be brief."),
        ("user", "Say hi"),
    ]


def test_item_list_round_trip_with_tool_calls() -> None:
    req = request(
        input=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "input_text", "text": "Paris "},
                                         {"type": "input_text", "text": "and Rome?"}]},
            {"role": "assistant", "content": "Checking both."},
            {"type": "function_call", "call_id": "call_a", "name": "weather",
             "arguments": '{"city":"Paris"}', "id": "fc_given"},
            {"type": "function_call", "call_id": "call_b", "name": "weather",
             "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "rain"}]},
        ],
        tools=TOOLS,
    )  # fmt: skip
    items = input_item_resources(req)
    for item in items:
        validate_item_resource(item)
    assert items[3]["id"] == "fc_given"  # a client's own id is kept
    assert len({i["id"] for i in items}) == len(items)
    assert items[6]["output"] == "rain"
    messages = chat_messages(instructions=None, history=[], input_items=items)
    dumped = [m.model_dump(exclude_none=True) for m in messages]
    assert dumped == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]  # fmt: skip
    chat = chat_request(req, messages)
    assert [t.model_dump(exclude_none=True, by_alias=True) for t in chat.tools or []] == [
        {"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}
    ]
    assert chat.messages[2].tool_calls is not None and chat.max_completion_tokens is None


def test_history_continues_a_stored_conversation() -> None:
    first = start_response(request(input="Weather?"), model="tiny", temperature=1, top_p=1)
    first = complete_response(
        first,
        GenerationResult(
            text="", finish_reason="tool_calls", input_tokens=5, output_tokens=4,
            tool_calls=(ToolCall(name="weather", arguments='{"city":"Oslo"}', call_id="call_o"),),
        ),
    )  # fmt: skip
    history = [
        *input_item_resources(request(input="Weather?")),
        *first.to_json()["output"],
    ]
    follow = request(
        input=[{"type": "function_call_output", "call_id": "call_o", "output": "snow"}],
        previous_response_id=first.id,
    )
    messages = chat_messages(
        instructions=None, history=history, input_items=input_item_resources(follow)
    )
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls is not None
    assert messages[1].tool_calls[0].function.arguments == '{"city":"Oslo"}'
    # An output for a call nobody made names the input item.
    stray = request(input=[{"type": "function_call_output", "call_id": "call_x", "output": "?"}])
    with pytest.raises(InvalidRequest) as info:
        chat_messages(instructions=None, history=[], input_items=input_item_resources(stray))
    assert info.value.param == "input[0].call_id"


def test_chat_request_maps_settings() -> None:
    req = CreateResponseRequest.model_validate(
        {
            "model": "tiny",
            "input": "x",
            "max_output_tokens": 12,
            "temperature": 0.3,
            "top_p": 0.8,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "out",
                                "schema": {"type": "object"}, "strict": True}},
        }
    )  # fmt: skip
    validate_request(req)
    msgs = chat_messages(instructions=None, history=[], input_items=input_item_resources(req))
    chat = chat_request(req, msgs)
    assert (chat.max_completion_tokens, chat.temperature, chat.top_p) == (12, 0.3, 0.8)
    choice = chat.tool_choice
    assert not isinstance(choice, str) and choice is not None
    assert choice.model_dump() == {"type": "function", "function": {"name": "weather"}}
    assert chat.parallel_tool_calls is False
    assert chat.response_format is not None and chat.response_format.type == "json_schema"


def full_request() -> CreateResponseRequest:
    return request(
        input="Weather?",
        instructions="Be brief.",
        max_output_tokens=20,
        metadata={"session": "s1"},
        tools=TOOLS,
        tool_choice="auto",
        previous_response_id="resp_prev",
        user="u1",
        store=False,
    )


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (GenerationResult(text="Hello!", finish_reason="stop", input_tokens=9, output_tokens=3,
                          cached_tokens=6), "completed"),
        (GenerationResult(text="Hel", finish_reason="length", input_tokens=9, output_tokens=20),
         "incomplete"),
        (GenerationResult(text="Let me check.", finish_reason="tool_calls", input_tokens=9,
                          output_tokens=12,
                          tool_calls=(ToolCall("weather", '{"city":"Paris"}'),
                                      ToolCall("weather", '{"city":"Rome"}', "call_r"))),
         "completed"),
        (GenerationResult(text="", finish_reason="stop", input_tokens=1, output_tokens=0),
         "completed"),
    ],
)  # fmt: skip
def test_responses_validate_against_the_official_schema(
    result: GenerationResult, status: str
) -> None:
    base = start_response(full_request(), model="tiny", temperature=0.7, top_p=0.9)
    validate_response(base.to_json())
    assert base.status == "in_progress" and "usage" not in base.to_json()
    done = complete_response(base, result).to_json()
    validate_response(done)
    assert done["id"].startswith("resp_") and done["status"] == status
    assert done["usage"] == {
        "input_tokens": result.input_tokens,
        "input_tokens_details": {"cached_tokens": result.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": result.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": result.input_tokens + result.output_tokens,
    }
    # Echoed settings.
    assert done["instructions"] == "Be brief." and done["max_output_tokens"] == 20
    assert done["metadata"] == {"session": "s1"} and done["user"] == "u1"
    assert done["store"] is False and done["previous_response_id"] == "resp_prev"
    assert (done["temperature"], done["top_p"], done["tool_choice"]) == (0.7, 0.9, "auto")
    assert done["tools"][0]["name"] == "weather" and done["tools"][0]["strict"] is True
    assert done["text"] == {"format": {"type": "text"}} and done["truncation"] == "disabled"
    if status == "incomplete":
        assert done["incomplete_details"] == {"reason": "max_output_tokens"}
        assert done["completed_at"] is None and done["output"][0]["status"] == "incomplete"
    else:
        assert done["incomplete_details"] is None and done["completed_at"] is not None
    kinds = [item["type"] for item in done["output"]]
    if result.tool_calls:
        assert kinds == ["message", "function_call", "function_call"]
        calls = done["output"][1:]
        assert calls[0]["call_id"].startswith("call_") and calls[1]["call_id"] == "call_r"
        assert calls[0]["arguments"] == '{"city":"Paris"}'
    else:
        assert kinds == ["message"] and done["output"][0]["content"][0]["text"] == result.text


def test_tool_calls_without_text_have_no_message() -> None:
    base = start_response(request(input="x", tools=TOOLS), model="tiny", temperature=1, top_p=1)
    result = GenerationResult(
        text="", finish_reason="tool_calls", input_tokens=1, output_tokens=1,
        tool_calls=(ToolCall("weather", "{}"),),
    )  # fmt: skip
    done = complete_response(base, result).to_json()
    assert [i["type"] for i in done["output"]] == ["function_call"]
    validate_response(done)


def test_failed_response_and_named_tool_choice_echo() -> None:
    req = request(input="x", tools=TOOLS, tool_choice={"type": "function", "name": "weather"})
    base = start_response(req, model="tiny", temperature=1, top_p=1)
    assert base.tool_choice == {"type": "function", "name": "weather"}
    failed = failed_response(base, "The model crashed.").to_json()
    validate_response(failed)
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "The model crashed."}


def test_json_schema_format_is_echoed() -> None:
    req = CreateResponseRequest.model_validate(
        {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "o",
                                                         "schema": {"type": "object"}}}}
    )  # fmt: skip
    base = start_response(req, model="m", temperature=1, top_p=1).to_json()
    assert base["text"]["format"] == {
        "type": "json_schema",
        "name": "o",
        "schema": {"type": "object"},
    }
    validate_response(base)


def test_stored_record_and_item_list() -> None:
    req = request(input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    items = input_item_resources(req)
    base = start_response(req, model="tiny", temperature=1, top_p=1)
    done = complete_response(
        base, GenerationResult(text="c", finish_reason="stop", input_tokens=2, output_tokens=1)
    )
    rec = stored_record(done, items)
    assert rec.id == done.id and rec.response["output"][0]["content"][0]["text"] == "c"
    page = item_list(InputItemPage(data=items, has_more=False, first_id=items[0]["id"],
                                   last_id=items[1]["id"])).model_dump()  # fmt: skip
    validate_item_list(page)
    empty = item_list(InputItemPage(data=[], has_more=False, first_id=None, last_id=None))
    validate_item_list(empty.model_dump())


def test_not_found_error_shape() -> None:
    err = response_not_found("resp_x", "previous_response_id")
    assert err.status_code == 404
    assert err.body() == {
        "error": {
            "message": "Previous response with id 'resp_x' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "response_not_found",
        }
    }
