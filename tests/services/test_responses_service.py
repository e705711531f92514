"""ResponsesService's pure parts: chat parameter names become the Responses ones, and a
stream whose finished response cannot be stored fails instead."""

from __future__ import annotations

import pytest

from gpt4all_api.errors import APIError, ContextLengthExceeded, InvalidRequest
from gpt4all_api.protocol.responses import CreateResponseRequest
from gpt4all_api.services.responses import ResponseEvents, start_response
from gpt4all_api.services.responses.service import as_responses_error, responses_param
from tests.support.responses_schema import validate_event


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages", "input"),
        ("messages[3].content", "input"),
        ("max_tokens", "max_output_tokens"),
        ("max_completion_tokens", "max_output_tokens"),
        ("response_format", "text.format"),
        ("response_format.json_schema", "text.format"),
        ("tools[1].function.parameters", "tools[1].parameters"),
        ("tool_choice", "tool_choice"),
        ("model", "model"),
        (None, None),
    ],
)
def test_parameter_names(chat: str | None, responses: str | None) -> None:
    assert responses_param(chat) == responses


def test_context_error_names_the_input() -> None:
    exc = as_responses_error(
        ContextLengthExceeded("... but your messages is longer. Please shorten your messages.")
    )
    assert exc.param == "input" and exc.code == "context_length_exceeded"
    assert exc.message == "... but your input is longer. Please shorten your input."
    assert exc.body()["error"]["param"] == "input"
    same = InvalidRequest("bad", param="temperature")
    assert as_responses_error(same) is same and same.param == "temperature"


def test_the_first_message_is_the_instructions_when_there_are_some() -> None:
    def bad() -> InvalidRequest:
        return InvalidRequest(
            "Invalid value for 'messages[0].content': x", param="messages[0].content"
        )

    exc = as_responses_error(bad(), instructions=True)
    assert exc.param == "instructions" and exc.message == "Invalid value for 'instructions': x"
    assert as_responses_error(bad()).param == "input"
    later = InvalidRequest("bad", param="messages[1].content")
    assert as_responses_error(later, instructions=True).param == "input"


def test_a_finished_response_that_cannot_be_stored_fails() -> None:
    req = CreateResponseRequest.model_validate({"model": "m", "input": "x"})
    events = ResponseEvents(start_response(req, model="m", temperature=1.0, top_p=1.0))
    sent = [*events.start(), *events.text("Hi")]
    events.finish("stop", input_tokens=3, output_tokens=1)  # built, never sent
    failed = events.fail(APIError("store down").message, replace_finish=True)
    sent += failed
    assert [e["type"] for e in failed] == ["error", "response.failed"]
    for event in sent:
        validate_event(event)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert events.response.status == "failed"
    assert events.response.output == []  # the message was never closed on the wire
    assert events.fail("again") == []
