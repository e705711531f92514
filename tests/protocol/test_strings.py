"""Lone surrogates: found anywhere in a body and named by their path; scrubbed from stored
data. (The real server refusing them on every endpoint: tests/integration/
test_lone_surrogates.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpt4all_api.errors import InvalidRequest
from gpt4all_api.protocol.chat import CreateChatCompletionRequest
from gpt4all_api.protocol.embeddings import CreateEmbeddingRequest
from gpt4all_api.protocol.responses import CreateResponseRequest
from gpt4all_api.protocol.strings import check_text, lone_surrogate_at, scrub

BAD = "a\ud800b"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("fine é 🌍", None),
        (BAD, ""),
        ({"messages": [{"content": "ok"}, {"content": BAD}]}, "messages[1].content"),
        ({"metadata": {BAD: "v"}}, "metadata"),
        ({BAD: 1}, ""),
        ({"a": [1, 2.5, None, True, ["x", {"y": BAD}]]}, "a[4][1].y"),
        ({"input": [[1, 2], [3]]}, None),
        (["\udfff"], "[0]"),
    ],
)
def test_lone_surrogate_at_names_the_path(value: Any, path: str | None) -> None:
    assert lone_surrogate_at(value) == path


def test_a_valid_surrogate_pair_from_json_is_one_character() -> None:
    # JSON's escaped pair decodes to one astral character: valid text
    text = json.loads('"\\ud83d\\ude00"')
    assert text == "😀" and lone_surrogate_at(text) is None


def test_check_text_is_a_400_naming_the_param() -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_text({"tools": [{"function": {"description": BAD}}]})
    assert exc.value.param == "tools[0].function.description"
    assert exc.value.status_code == 400
    assert "'tools[0].function.description'" in exc.value.message
    json.dumps(exc.value.body()).encode("utf-8")  # the error itself is valid text
    with pytest.raises(InvalidRequest) as exc:
        check_text({BAD: "unknown top-level field"})
    assert exc.value.param is None and "the request body" in exc.value.message


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        (
            CreateChatCompletionRequest,
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function",
                             "function": {"name": "f", "arguments": '{"a": "\ud800"}'}},
                        ],
                    },
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            CreateResponseRequest,
            {"model": "m", "input": "hi", "metadata": {"k": BAD}},
            "metadata.k",
        ),
        (
            CreateResponseRequest,
            {"model": "m", "input": "hi", "tools": [
                {"type": "function", "name": "f", "parameters": {
                    "type": "object", "properties": {"x": {"enum": ["ok", BAD]}}}}]},
            "tools[0].parameters.properties.x.enum[1]",
        ),
        (CreateEmbeddingRequest, {"model": "m", "input": ["ok", BAD]}, "input[1]"),
    ],
)  # fmt: skip
def test_request_models_refuse_them_while_parsing(
    model: type[Any], body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        model.model_validate(body)
    assert exc.value.param == param


def test_scrub_replaces_each_lone_surrogate_and_keeps_clean_data_as_is() -> None:
    clean = {"a": ["é", {"b": "🌍"}]}
    assert scrub(clean) is clean
    dirty = {"output": [{"text": BAD + "\udfff"}], BAD: "k"}
    assert scrub(dirty) == {"output": [{"text": "a\ufffdb\ufffd"}], "a\ufffdb": "k"}
    json.dumps(scrub(dirty), ensure_ascii=False).encode("utf-8")
