"""Tool-call parsing: every family, malformed and partial output, and streaming at every
split point equal to the whole-text parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpt4all_api.services.tools.parse import (
    ContentDelta,
    ParsedCall,
    ToolCallDelta,
    ToolCallParser,
    new_call_id,
    parse_tool_calls,
)

W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
CALL = ParsedCall("get_weather", '{"city": "Paris"}')

CASES: list[tuple[str, str | None, list[ParsedCall]]] = [
    # Hermes / Qwen, and the generic fallback (same format)
    (f"<tool_call>{W}</tool_call>", None, [CALL]),
    (f"<tool_call>\n{W}\n</tool_call>\n<tool_call>{W}</tool_call>", None, [CALL, CALL]),
    (f"Let me check.\n<tool_call>{W}</tool_call>", "Let me check.", [CALL]),
    (f"<tool_call>{W}</tool_call>\nDone.", "Done.", [CALL]),
    (f"<tool_call>{W}", None, [CALL]),  # ended at EOS before the closing tag
    # Llama 3.x
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', None, [CALL]),
    ('  {"name": "get_weather", "parameters": {"city": "Paris"}}\n', None, [CALL]),
    (
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        None,
        [CALL],
    ),
    (f"[{W}, {W}]", None, [CALL, CALL]),
    (f"{W}; {W}", None, [CALL, CALL]),
    # Mistral
    (f"[TOOL_CALLS][{W}]", None, [CALL]),
    (f"[TOOL_CALLS] [{W}, {W}]", None, [CALL, CALL]),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', None, [CALL]),
    # arguments quoted as a string, or missing
    (
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        None,
        [CALL],
    ),
    ('<tool_call>{"name": "get_weather"}</tool_call>', None, [ParsedCall("get_weather", "{}")]),
    # plain text, and things that look like calls but are not
    ("Hello there.", "Hello there.", []),
    ("a < b and [x] {y}", "a < b and [x] {y}", []),
    ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),
    ('<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    (
        '<tool_call>{"name": "x", "arguments": [1]}</tool_call>',
        '<tool_call>{"name": "x", "arguments": [1]}</tool_call>',
        [],
    ),
    ("<tool_call>", "<tool_call>", []),
    ("Partial <tool_ca", "Partial <tool_ca", []),
    ('{"city": "Paris"}', '{"city": "Paris"}', []),
    ("[TOOL_CALLS]nonsense", "[TOOL_CALLS]nonsense", []),
    (
        "<|python_tag|>brave_search.call(query='x')",
        "<|python_tag|>brave_search.call(query='x')",
        [],
    ),
    ("", None, []),
    ("  \n", "  \n", []),
    # malformed or cut short (max_tokens), per family: content, markup included, never a call
    ('{"name": "get_weather", "parameters": {"city": "Par', None, []),  # Llama, cut
    ('{"name": "get_weather", "parameters": {"city": "Paris"}} and text', None, []),
    ('Text then {"name": "get_weather", "parameters": {}}', None, []),  # not the whole reply
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city"', None, []),
    ('<|python_tag|>{"parameters": {}}', None, []),
    (f"[TOOL_CALLS][{W[:-3]}", None, []),  # Mistral v3, cut
    (f"[TOOL_CALLS][{W}] trailing", None, []),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": ', None, []),  # Mistral v11, cut
    ("[TOOL_CALLS]get_weather", None, []),
    ('<tool_call>{"name": 5}</tool_call>', None, []),  # Hermes: name not a string
    ('<tool_call>{"name": "get_weather", "arguments": "{bad"}</tool_call>', None, []),
    # several calls, per family
    (
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
        None,
        [CALL, ParsedCall("get_time", "{}")],
    ),
    (
        f'<tool_call>[{W}, {{"name": "get_time"}}]</tool_call>',
        None,
        [CALL, ParsedCall("get_time", "{}")],
    ),
    (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", '
        '"parameters": {}}',
        None,
        [CALL, ParsedCall("get_time", "{}")],
    ),
    # a complete call, then a second one cut short: the first is a call, the rest content
    (f"<tool_call>{W}</tool_call><tool_call>{W[:20]}", f"<tool_call>{W[:20]}", [CALL]),
    # OpenAI's own shape inside a block
    (
        '<tool_call>{"function": {"name": "get_weather", "arguments": "{\\"city\\": '
        '\\"Paris\\"}"}}</tool_call>',
        None,
        [CALL],
    ),
]


def _expected(text: str, content: str | None, calls: list[ParsedCall]) -> tuple[Any, Any]:
    """``None`` content with no calls means: the whole text comes back as content."""
    if content is None and not calls and text:
        return text, calls
    return content, calls


@pytest.mark.parametrize(("text", "content", "calls"), CASES)
def test_parse_whole_reply(text: str, content: str | None, calls: list[ParsedCall]) -> None:
    assert parse_tool_calls(text) == _expected(text, content, calls)


def _stream(text: str, cuts: list[int], **kw: object) -> tuple[str | None, list[ParsedCall]]:
    parser = ToolCallParser(id_factory=lambda: "id", **kw)  # type: ignore[arg-type]
    deltas = []
    last = 0
    for cut in [*cuts, len(text)]:
        deltas += parser.feed(text[last:cut])
        last = cut
    deltas += parser.finish()
    content = "".join(d.text for d in deltas if isinstance(d, ContentDelta))
    calls: dict[int, list[str]] = {}
    for d in deltas:
        if isinstance(d, ToolCallDelta):
            if d.name is not None:
                assert d.id == "id" and d.index == len(calls)
                calls[d.index] = [d.name, ""]
            calls[d.index][1] += d.arguments
    return content or None, [ParsedCall(n, a) for n, a in calls.values()]


@pytest.mark.parametrize(("text", "content", "calls"), CASES)
def test_streaming_at_every_split_equals_whole(
    text: str, content: str | None, calls: list[ParsedCall]
) -> None:
    expected = _expected(text, content, calls)
    for i in range(len(text) + 1):
        assert _stream(text, [i]) == expected, i
    assert _stream(text, list(range(len(text)))) == expected  # one char at a time


def test_no_markup_leaks_and_text_streams_early() -> None:
    parser = ToolCallParser()
    assert parser.feed("Sure, ") == [ContentDelta("Sure,")]
    assert parser.feed("<tool") == []  # could be a marker: held back
    out = parser.feed("_call>" + W[:10])
    assert out == []
    out = parser.feed(W[10:] + "</tool_call>")
    assert [type(d) for d in out] == [ToolCallDelta, ToolCallDelta]
    assert out[0].name == "get_weather" and out[0].arguments == ""
    assert out[0].id is not None and out[0].id.startswith("call_")
    assert json.loads(out[1].arguments) == {"city": "Paris"} and out[1].id is None
    assert parser.finish() == []  # the held space is not content once a call was made


def test_allowed_names_and_parallel() -> None:
    text = f'<tool_call>{W}</tool_call><tool_call>{{"name": "other"}}</tool_call>'
    content, calls = parse_tool_calls(text, allowed={"get_weather"})
    assert calls == [CALL] and content == '<tool_call>{"name": "other"}</tool_call>'
    assert parse_tool_calls(f"<tool_call>{W}</tool_call>" * 2, parallel=False) == (None, [CALL])


def test_call_ids() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("call_") and len(i) == 29 and i[5:].isalnum() for i in ids)


def test_feed_after_finish_is_an_error() -> None:
    parser = ToolCallParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")
