"""JSON Schema -> grammar: what compiles (Pydantic's and openai's schemas included), what a
strict schema may not use (a SchemaError naming the place), what no schema may say."""

from __future__ import annotations

import datetime
import uuid
from enum import StrEnum
from typing import Any, Literal

import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from gpt4all_api.structured.grammar import Alt, Arr, Lit, MapObj, Num, Obj, Ref, Str
from gpt4all_api.structured.schema import Limits, SchemaError, compile_schema


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Person(BaseModel):
    name: str = Field(description="Full name")
    age: int = Field(ge=0, le=150)
    color: Color
    address: Address
    tags: list[str] = Field(max_length=5)
    kind: Literal["human"]
    born: datetime.date
    id: uuid.UUID
    scores: dict[str, int]
    pair: tuple[int, str]


class Tree(BaseModel):
    value: int
    children: list[Tree]


@pytest.mark.parametrize("model", [Person, Tree, Address])
@pytest.mark.parametrize("strict", [False, True])
def test_pydantic_schemas_compile(model: type[BaseModel], strict: bool) -> None:
    compile_schema(model.model_json_schema(), strict=strict)
    compile_schema(to_strict_json_schema(model), strict=strict)


def test_shapes() -> None:
    node = compile_schema(Person.model_json_schema(), strict=True)
    assert isinstance(node, Obj)
    props = {p.name: p for p in node.props}
    assert props["name"].description == "Full name" and isinstance(props["name"].value, Str)
    age = props["age"].value
    assert isinstance(age, Num) and age.integer and (age.minimum, age.maximum) == (0, 150)
    color = props["color"].value
    assert isinstance(color, Ref) and isinstance(color.target, Alt)
    assert [o.text for o in color.target.options if isinstance(o, Lit)] == ['"red"', '"green"']
    assert isinstance(props["tags"].value, Arr) and props["tags"].value.max_items == 5
    assert isinstance(props["kind"].value, Lit) and props["kind"].value.text == '"human"'
    born = props["born"].value
    assert isinstance(born, Str) and born.pattern is not None
    assert isinstance(props["scores"].value, MapObj)
    assert props["address"].required and not props["address"].value.target.props[1].required


def test_recursion_through_refs() -> None:
    root = compile_schema(Tree.model_json_schema(), strict=True)
    assert isinstance(root, Ref) and isinstance(root.target, Obj)
    children = root.target.props[1].value
    assert isinstance(children, Arr) and children.item is root  # one node, referenced twice


def test_arrays_without_max_items_get_the_decoders_cap() -> None:
    node = compile_schema({"type": "array", "items": {}}, strict=False, limits=Limits(7))
    assert isinstance(node, Arr) and (node.max_items, node.cap) == (None, 7)
    bounded = compile_schema({"type": "array", "maxItems": 3}, strict=False)
    assert isinstance(bounded, Arr) and bounded.cap is None


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "string", "pattern": "^a+$"}, "#/pattern"),
        ({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}},
         "#/properties/n/multipleOf"),
        ({"type": "array", "uniqueItems": True}, "#/uniqueItems"),
        ({"not": {"type": "null"}}, "#/not"),
        ({"$defs": {"A": {"type": "string", "format": "date", "minProperties": 1}},
          "$ref": "#/$defs/A"}, "#/$defs/A/minProperties"),
        ({"type": "object", "properties": {"a~b/c": {"if": {}}}}, "#/properties/a~0b~1c/if"),
    ],
)  # fmt: skip
def test_strict_refuses_unsupported_keywords_naming_the_place(
    schema: dict[str, Any], path: str
) -> None:
    with pytest.raises(SchemaError) as info:
        compile_schema(schema, strict=True)
    assert info.value.path == path
    assert "not supported" in info.value.message
    compile_schema(schema, strict=False)  # ignored without strict


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"enum": []}, "non-empty"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no number"),
        ({"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 5}, "no number"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, "below"),
        ({"type": "array", "minItems": 3, "maxItems": 2}, "below"),
        ({"type": "date"}, "unknown type"),
        ({"$ref": "#/$defs/Nope"}, "does not point"),
        ({"$ref": "https://example.com/s.json"}, "only references"),
        ({"type": "object", "properties": {}, "required": ["a"]}, "required"),
        ({"type": "string", "minLength": -1}, "non-negative"),
        (False, "allows no value"),
        ({"type": "object", "properties": {"a": False}, "required": ["a"]}, "allows no value"),
        ([], "JSON object"),
        ({"allOf": [{"type": "string"}, {"minLength": 1}]}, "one member"),
    ],
)
def test_schemas_no_reply_can_meet(schema: Any, words: str) -> None:
    for strict in (True, False):
        with pytest.raises(SchemaError) as info:
            compile_schema(schema, strict=strict)
        assert words in info.value.message


def test_annotations_never_count_as_unsupported() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "T",
        "description": "d",
        "type": "object",
        "properties": {"a": {"type": "string", "default": "x", "examples": ["y"]}},
        "x-extension": 1,
    }
    compile_schema(schema, strict=True)


def test_type_lists_and_nullable_any_of() -> None:
    node = compile_schema({"type": ["string", "null"]}, strict=True)
    assert isinstance(node, Alt) and len(node.options) == 2
    node = compile_schema({"anyOf": [{"type": "integer"}, {"type": "null"}]}, strict=True)
    assert isinstance(node, Alt)
