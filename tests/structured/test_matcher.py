"""The character-level matcher: what is fixed, what the model chooses, what a repair
writes; and, for random walks through several schemas (random allowed characters, random
refusals repaired), that every finished text parses and validates against its schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt4all_api.structured.calls import CallMarkup, tool_call_grammar
from gpt4all_api.structured.grammar import AnyValue
from gpt4all_api.structured.matcher import MAX_WHITESPACE, Matcher
from gpt4all_api.structured.schema import Limits, compile_schema

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["a", "bb", "bc"]}, "maxItems": 3},
        "nick": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    },
    "required": ["name", "age", "tags", "nick"],
    "additionalProperties": False,
}
TREE = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "v": {"type": "integer"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
            "required": ["v", "kids"],
        }
    },
    "$ref": "#/$defs/Node",
}
FORMATS = {
    "type": "object",
    "properties": {
        "when": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "id": {"type": "string", "format": "uuid"},
        "n": {"type": "number", "minimum": -2.5, "maximum": -1},
        "k": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 3},
    },
    "required": ["when", "day", "id", "n", "k"],
}
MAP = {"type": "object", "additionalProperties": {"type": "integer"}}
TUPLE = {"type": "array", "prefixItems": [{"type": "boolean"}, {"const": {"x": [1]}}]}
SCHEMAS = [PERSON, TREE, FORMATS, MAP, TUPLE, {}, {"type": "object"}]
ALPHABET = list('abcxyz019-.:"{}[], \nTZ+e\\u\u00e9')


def walk(schema: dict[str, Any], choose: Any, refuse: Any, max_steps: int = 300) -> str:
    """Drive a matcher to a complete reply: forced text taken, an allowed character chosen
    at each choice, sometimes a repair instead (as if the model's character had been
    refused), then repairs to the end."""
    m = Matcher(compile_schema(schema, strict=False, limits=Limits(max_items=6)))
    for _ in range(max_steps):
        m.take_forced()
        if m.done:
            break
        allowed = [c for c in ALPHABET if m.accepts(c)]
        if m.may_end and (not allowed or refuse()):
            break
        if not allowed or refuse():
            m.repair(choose(ALPHABET))
        else:
            m.advance(choose(allowed))
    while not m.may_end:
        m.take_forced()
        if not m.may_end:
            m.repair()
    return m.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from(SCHEMAS))
def test_every_walk_ends_in_a_valid_reply(rnd: Any, schema: dict[str, Any]) -> None:
    text = walk(schema, rnd.choice, lambda: rnd.random() < 0.15)
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


def test_fixed_text_is_forced_and_choices_are_not() -> None:
    m = Matcher(compile_schema(PERSON, strict=True))
    forced = m.take_forced()
    assert forced.text == '{"name": "' and forced.runs == (('{"name": "', False),)
    assert not m.has_forced()  # string contents: the model's
    for c in 'Ann"':
        assert m.advance(c)
    assert m.take_forced().text == ', "age": '
    assert not m.accepts("0") and not m.accepts("-")  # 0 and negatives are below 18
    assert m.advance("4")
    assert m.take_forced().text == ""  # 40-49: a choice
    assert m.advance("2")
    assert m.take_forced().text == ', "tags": ['  # 42 can only end (420 > 99)


def test_whitespace_only_where_the_model_chooses() -> None:
    m = Matcher(compile_schema({"type": "array", "items": {"type": "integer"}}, strict=True))
    assert m.take_forced().text == "["
    assert m.advance("\n") and m.advance(" ")  # before the first item or "]"
    assert m.advance("1")
    for _ in range(MAX_WHITESPACE):
        assert m.advance(" ")
    assert not m.accepts(" ")  # bounded
    assert m.advance(",")
    assert m.take_forced().text == " "  # ", " is fixed once "," is chosen
    obj = Matcher(compile_schema({"type": "object", "properties": {"a": {}}}, strict=False))
    assert obj.take_forced().text == "{"
    assert obj.accepts(" ") and obj.accepts('"') and obj.accepts("}")  # a is optional


def test_enum_common_prefix_is_fixed() -> None:
    m = Matcher(compile_schema({"enum": ["get_weather", "get_time"]}, strict=True))
    assert m.take_forced().text == '"get_'
    assert m.advance("t")
    assert m.take_forced().text == 'ime"'
    assert m.done


def test_repairs_follow_the_models_text_when_they_can() -> None:
    strings = Matcher(compile_schema({"type": "array", "items": {"type": "string"}}, strict=True))
    strings.take_forced()
    assert strings.repair("Alice") == '"Alice'  # an item without its quote
    quoted = Matcher(compile_schema({"type": "integer"}, strict=True))
    assert quoted.repair('"30"') == "30"  # a quoted number: the quote dropped
    enum = Matcher(compile_schema({"enum": ["green", "red", "blue"]}, strict=True))
    enum.take_forced()
    assert enum.repair("purple") == "r"  # nothing fits: the shortest member
    assert enum.take_forced().text == 'ed"'
    closing = Matcher(compile_schema({"type": "string"}, strict=True))
    closing.take_forced()
    closing.advance("a")
    assert closing.repair("\n") == '"'  # a raw newline: the string ends here
    assert closing.done


def test_number_bounds_are_exact() -> None:
    def ok(schema: dict[str, Any], text: str) -> bool:
        m = Matcher(compile_schema(schema, strict=True))
        return all(m.advance(c) for c in text) and m.may_end

    bounded = {"type": "integer", "minimum": 18, "maximum": 99}
    assert ok(bounded, "18") and ok(bounded, "99") and not ok(bounded, "1")
    assert not ok(bounded, "100") and not ok(bounded, "17")
    exclusive = {"type": "number", "exclusiveMinimum": 0.5, "maximum": 1}
    assert ok(exclusive, "0.51") and ok(exclusive, "1") and not ok(exclusive, "0.5")
    assert not ok(exclusive, "1.01") and not ok(exclusive, "1e0")  # no exponent with bounds
    negative = {"type": "integer", "minimum": -10, "maximum": -5}
    assert ok(negative, "-7") and ok(negative, "-10") and not ok(negative, "-11")
    assert not ok(negative, "-4") and not ok(negative, "7")
    m = Matcher(compile_schema(bounded, strict=True))
    while not m.may_end:
        m.repair()
    assert m.text == "18"  # repairs reach the bounds


def test_strings_refuse_what_json_cannot_hold() -> None:
    m = Matcher(compile_schema({"type": "string"}, strict=True))
    m.take_forced()
    assert not m.accepts("\n") and not m.accepts("\x00")
    assert m.advance("\\") and not m.accepts("x") and m.advance("u")
    assert not m.accepts("d")  # \uDxxx could start a lone surrogate
    for c in "00e9":
        assert m.advance(c)
    assert m.advance('"') and json.loads(m.text) == "\u00e9"


def test_a_looping_string_is_closed() -> None:
    m = Matcher(compile_schema({"type": "string"}, strict=True))
    m.take_forced()
    for c in "Santé-Boulogne-" * 3:
        assert m.advance(c)
    forced = m.take_forced()
    assert forced.text == '"' and forced.caps == 1 and m.done


def test_repeated_items_close_the_array() -> None:
    m = Matcher(compile_schema({"type": "array", "items": {"type": "string"}}, strict=True))
    m.take_forced()
    for c in '"eggs", "eggs", "eggs"':
        assert m.advance(c)
    forced = m.take_forced()
    assert forced.text == "]" and forced.caps == 1
    numbers = Matcher(compile_schema({"type": "array", "items": {"type": "integer"}}, strict=True))
    numbers.take_forced()
    for c in "0, 0, 0, 0":
        assert numbers.advance(c)
    assert numbers.accepts(",")  # [0, 0, 0, 0] is data, not a loop


def test_arrays_close_at_the_decoders_cap() -> None:
    m = Matcher(compile_schema({"type": "array"}, strict=True, limits=Limits(max_items=2)))
    m.take_forced()
    for c in "true, null":
        assert m.advance(c)
    assert not m.accepts(",")
    forced = m.take_forced()
    assert forced.text == "]" and forced.caps == 1


def test_json_object_mode_is_any_object() -> None:
    m = Matcher(AnyValue(8, object_only=True))
    assert m.take_forced().text == "{"
    for c in '"a": [true, null, {"b": -1.5e3}], "c": "d"}':
        assert m.advance(c), m.text
    assert m.done and json.loads(m.text) == {"a": [True, None, {"b": -1500}], "c": "d"}


def test_tool_call_markup_is_fixed_and_special() -> None:
    args = compile_schema(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        strict=True,
    )
    empty = compile_schema({"type": "object", "properties": {}}, strict=True)
    markup = CallMarkup("<tool_call>\n", "\n</tool_call>")
    m = Matcher(tool_call_grammar(markup, (("get_weather", args), ("get_time", empty))))
    forced = m.take_forced()
    assert forced.runs == (("<tool_call>\n", True), ('{"name": "get_', False))
    for c in 'weather", "arguments": {"city": "Paris"':
        assert m.advance(c), m.text
    assert m.take_forced().runs == (("}}", False), ("\n</tool_call>", True))
    assert m.done
    assert m.text == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )


@pytest.mark.parametrize("name_first", [True, False])
def test_call_keys_follow_the_template(name_first: bool) -> None:
    empty = compile_schema({"type": "object", "properties": {}}, strict=True)
    markup = CallMarkup("", "", "name", "parameters", name_first)
    m = Matcher(tool_call_grammar(markup, (("f", empty),)))
    m.take_forced()
    assert m.done
    expected = {"name": "f", "parameters": {}}
    assert json.loads(m.text) == expected
    assert (m.text.index('"name"') < m.text.index('"parameters"')) == name_first
