"""The official-schema checks the Responses API tests use (on top of ``openai_schema``)."""

from __future__ import annotations

from typing import Any

from tests.support.openai_schema import _spec, validate, validator

#: Each stream event type and its schema in OpenAI's spec.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
}


def validate_response(instance: Any) -> None:
    validate("Response", instance)


def validate_item_list(instance: Any) -> None:
    validate("ResponseItemList", instance)


def validate_create_request(instance: Any) -> None:
    """A request body as the spec defines it (so tests only send what clients may send).

    Input items are checked one by one against the members of ``InputItem``: the spec's
    ``oneOf`` relies on OpenAPI's discriminator, and plain JSON Schema finds a user message
    with a content list valid under two members (``EasyInputMessage`` and ``InputMessage``).
    """
    items = instance.get("input")
    if isinstance(items, list):
        validate("CreateResponse", {**instance, "input": "x"})
        members = _spec()["components"]["schemas"]["InputItem"]["oneOf"]
        any_item = validator("InputItem", relax={"anyOf": _urn(members)})
        for item in items:
            any_item.validate(item)
    else:
        validate("CreateResponse", instance)


def _urn(node: Any) -> Any:
    """Local ``#/components/...`` references, made absolute for a standalone schema."""
    if isinstance(node, dict):
        return {
            k: (f"urn:openai{v}" if k == "$ref" and v.startswith("#") else _urn(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_urn(v) for v in node]
    return node


def validate_event(event: dict[str, Any]) -> None:
    """Against its own event schema and the ``ResponseStreamEvent`` union."""
    validate(EVENT_SCHEMAS[event["type"]], event)
    validate("ResponseStreamEvent", event)


def validate_item_resource(instance: Any) -> None:
    validate("ItemResource", instance)
