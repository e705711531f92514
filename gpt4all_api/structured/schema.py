"""JSON Schema -> grammar: the subset a reply can be held to, character by character.

Supported (``SUPPORTED``): ``type`` (one or a list), ``properties``/``required``/
``additionalProperties``, ``enum``, ``const``, ``items``/``prefixItems``/``minItems``/
``maxItems``, ``anyOf`` (``oneOf`` as ``anyOf``: exact when its branches exclude each
other, as discriminated unions do), ``allOf`` with one member, ``$ref`` into ``$defs``/
``definitions`` (or ``#``, recursion included), ``minLength``/``maxLength``,
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``, and ``format``
``date``, ``time``, ``date-time`` and ``uuid``. Annotations (``title``, ``description``,
``default``, ``examples``, ...) are read by nobody but the prompt's description.

Any other keyword (``pattern``, ``multipleOf``, ``uniqueItems``, ``not``, ...): with
``strict`` a ``SchemaError`` naming its place in the schema; without, it is ignored (the
reply then follows the schema without it). Other ``format`` values (``email``, ``uri``,
...) are annotations here, as JSON Schema itself defines ``format``.

Objects are written with their declared properties only, in schema order: a reply never
holds keys the schema did not name, so it is valid whatever ``additionalProperties`` says;
an object schema without ``properties`` (``dict[str, X]``, ``{"type": "object"}``) is a
map whose values follow ``additionalProperties``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from gpt4all_api.structured.grammar import (
    Alt,
    AnyValue,
    Arr,
    Lit,
    MapObj,
    Node,
    Num,
    Obj,
    Prop,
    Ref,
    Seq,
    Str,
    int_high,
    int_low,
)

#: Keywords that shape the reply.
SUPPORTED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "enum", "const", "items",
        "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "$defs",
        "definitions", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "format",
    }
)  # fmt: skip
#: Keywords that say something about the schema, not the value.
ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "example", "$schema", "$id",
        "$comment", "$anchor", "deprecated", "readOnly", "writeOnly", "discriminator",
        "contentEncoding", "contentMediaType", "nullable", "strict", "name",
    }
)  # fmt: skip
#: ``format`` values held exactly (as regular expressions over the string's content).
FORMATS = {
    "date": r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])",
    "time": (
        r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
        r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
    ),
    "date-time": (
        r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
        r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
        r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    ),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
}
_TYPES = ("string", "integer", "number", "boolean", "null", "object", "array")
#: Nesting of free-form values (``{}``, ``json_object``) at most.
ANY_DEPTH = 8


class SchemaError(ValueError):
    """The schema cannot be used: ``path`` says where (a JSON pointer, ``#/...``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} (at {path})")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    """The decoder's own bounds where the schema sets none: items per array (and members
    per free-form object) before the decoder closes it."""

    max_items: int = 32


def compile_schema(schema: Any, *, strict: bool, limits: Limits = Limits()) -> Node:
    """The grammar of the values ``schema`` allows; raises ``SchemaError``."""
    return _Compiler(schema, strict, limits).compile()


class _Compiler:
    def __init__(self, root: Any, strict: bool, limits: Limits) -> None:
        if not isinstance(root, dict):
            raise SchemaError("#", "a schema must be a JSON object")
        self.root = root
        self.strict = strict
        self.limits = limits
        self.refs: dict[str, Ref] = {}

    def compile(self) -> Node:
        node = self.node(self.root, "#")
        for ref in self.refs.values():
            if ref.target is None:  # pragma: no cover - every ref is compiled on first use
                raise SchemaError(ref.name, "unresolved reference")
        return node

    # --- dispatch ------------------------------------------------------------------------

    def node(self, schema: Any, path: str) -> Node:
        if schema is True:
            return AnyValue(ANY_DEPTH, cap=self.limits.max_items)
        if schema is False:
            raise SchemaError(path, "the schema 'false' allows no value")
        if not isinstance(schema, dict):
            raise SchemaError(path, "a schema must be a JSON object or a boolean")
        self._check_keywords(schema, path)
        if "$ref" in schema:
            return self._ref(schema, path)
        if "allOf" in schema:
            return self._all_of(schema, path)
        if "anyOf" in schema or "oneOf" in schema:
            key = "anyOf" if "anyOf" in schema else "oneOf"
            return self._any_of(schema, key, path)
        if "const" in schema:
            return Lit(_dump(schema["const"]))
        if "enum" in schema:
            return self._enum(schema, path)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._type_list(schema, kind, path)
        if kind is None:
            kind = self._implied_type(schema)
        if kind is None:
            return AnyValue(ANY_DEPTH, cap=self.limits.max_items)
        return self._typed(schema, kind, path)

    def _check_keywords(self, schema: dict[str, Any], path: str) -> None:
        for key in schema:
            if key in SUPPORTED or key in ANNOTATIONS or key.startswith("x-"):
                continue
            if self.strict:
                raise SchemaError(
                    f"{path}/{key}",
                    f"'{key}' is not supported in strict mode (supported: "
                    f"{', '.join(sorted(SUPPORTED))})",
                )

    @staticmethod
    def _implied_type(schema: dict[str, Any]) -> str | None:
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def _typed(self, schema: dict[str, Any], kind: Any, path: str) -> Node:
        if kind == "string":
            return self._string(schema, path)
        if kind in ("integer", "number"):
            return self._number(schema, kind == "integer", path)
        if kind == "boolean":
            return Alt((Lit("true"), Lit("false")))
        if kind == "null":
            return Lit("null")
        if kind == "object":
            return self._object(schema, path)
        if kind == "array":
            return self._array(schema, path)
        raise SchemaError(f"{path}/type", f"unknown type {kind!r} (one of {', '.join(_TYPES)})")

    def _type_list(self, schema: dict[str, Any], kinds: list[Any], path: str) -> Node:
        if not kinds:
            raise SchemaError(f"{path}/type", "an empty list of types allows no value")
        options = [self._typed(schema, k, path) for k in dict.fromkeys(kinds)]
        return options[0] if len(options) == 1 else Alt(tuple(options))

    # --- composition -------------------------------------------------------------------------

    def _ref(self, schema: dict[str, Any], path: str) -> Node:
        target = schema["$ref"]
        if not isinstance(target, str) or not target.startswith("#"):
            raise SchemaError(f"{path}/$ref", "only references inside the schema ('#/...')")
        siblings = {k for k in schema if k not in ANNOTATIONS and k != "$ref"}
        if siblings and self.strict:
            raise SchemaError(
                f"{path}/$ref", f"'$ref' beside {', '.join(sorted(siblings))} is not supported"
            )
        ref = self.refs.get(target)
        if ref is None:
            ref = self.refs[target] = Ref(target)
            ref.target = self.node(self._resolve(target, f"{path}/$ref"), target)
        return ref

    def _resolve(self, pointer: str, path: str) -> Any:
        value: Any = self.root
        for raw in pointer[1:].split("/")[1:] if pointer != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise SchemaError(path, f"'{pointer}' does not point into the schema")
        return value

    def _all_of(self, schema: dict[str, Any], path: str) -> Node:
        members = schema["allOf"]
        if not isinstance(members, list) or not members:
            raise SchemaError(f"{path}/allOf", "'allOf' must be a non-empty list")
        if len(members) == 1:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            if not (set(rest) - ANNOTATIONS):
                return self.node(members[0], f"{path}/allOf/0")
        raise SchemaError(f"{path}/allOf", "'allOf' is supported with one member only")

    def _any_of(self, schema: dict[str, Any], key: str, path: str) -> Node:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise SchemaError(f"{path}/{key}", f"'{key}' must be a non-empty list")
        options = tuple(self.node(b, f"{path}/{key}/{i}") for i, b in enumerate(branches))
        return options[0] if len(options) == 1 else Alt(options)

    def _enum(self, schema: dict[str, Any], path: str) -> Node:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{path}/enum", "'enum' must be a non-empty list")
        texts = list(dict.fromkeys(_dump(v) for v in values))
        return Lit(texts[0]) if len(texts) == 1 else Alt(tuple(Lit(t) for t in texts))

    # --- values ----------------------------------------------------------------------------

    def _string(self, schema: dict[str, Any], path: str) -> Node:
        low = _count(schema, "minLength", path, 0)
        high = _count(schema, "maxLength", path, None)
        if high is not None and high < low:
            raise SchemaError(path, "'maxLength' is below 'minLength'")
        fmt = schema.get("format")
        pattern = FORMATS.get(fmt) if isinstance(fmt, str) else None
        return Str(low, high, pattern)

    def _number(self, schema: dict[str, Any], integer: bool, path: str) -> Node:
        node = Num(integer=integer)
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            value = schema.get(key)
            if value is None:
                continue
            if isinstance(value, bool) and key.startswith("exclusive"):  # draft 4 style
                if key == "exclusiveMinimum":
                    node.exclusive_minimum = value
                else:
                    node.exclusive_maximum = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SchemaError(f"{path}/{key}", f"'{key}' must be a number")
            bound = Fraction(value)
            if key in ("minimum", "exclusiveMinimum"):
                tighter = node.minimum is None or bound > node.minimum
                if tighter or (bound == node.minimum and key == "exclusiveMinimum"):
                    node.minimum, node.exclusive_minimum = bound, key == "exclusiveMinimum"
            else:
                tighter = node.maximum is None or bound < node.maximum
                if tighter or (bound == node.maximum and key == "exclusiveMaximum"):
                    node.maximum, node.exclusive_maximum = bound, key == "exclusiveMaximum"
        if not _has_value(node):
            raise SchemaError(path, "no number satisfies these bounds")
        return node

    def _object(self, schema: dict[str, Any], path: str) -> Node:
        props = schema.get("properties") or {}
        if not isinstance(props, dict):
            raise SchemaError(f"{path}/properties", "'properties' must be an object")
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{path}/required", "'required' must be a list of names")
        missing = [r for r in required if r not in props]
        extra = schema.get("additionalProperties", True)
        if missing and extra is False:
            raise SchemaError(
                f"{path}/required",
                f"'{missing[0]}' is required but not a property, and no other key is allowed",
            )
        if missing:
            raise SchemaError(
                f"{path}/required", f"'{missing[0]}' is required but has no schema here"
            )
        if "properties" not in schema and extra is not False:
            value = (
                self.node(extra, f"{path}/additionalProperties")
                if extra is not True
                else (AnyValue(ANY_DEPTH - 1, cap=self.limits.max_items))
            )
            return MapObj(value, cap=self.limits.max_items)
        if isinstance(extra, dict):
            self.node(extra, f"{path}/additionalProperties")  # checked, never written
        return Obj(
            tuple(
                Prop(
                    name,
                    self.node(sub, f"{path}/properties/{_escape(name)}"),
                    name in required,
                    _description(sub),
                )
                for name, sub in props.items()
            )
        )

    def _array(self, schema: dict[str, Any], path: str) -> Node:
        low = _count(schema, "minItems", path, 0)
        high = _count(schema, "maxItems", path, None)
        if high is not None and high < low:
            raise SchemaError(path, "'maxItems' is below 'minItems'")
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if prefix is not None:
            if not isinstance(prefix, list) or not prefix:
                raise SchemaError(f"{path}/prefixItems", "'prefixItems' must be a non-empty list")
            if items is not False:
                raise SchemaError(
                    f"{path}/prefixItems", "'prefixItems' is supported with 'items': false"
                )
            if not low <= len(prefix) <= (high if high is not None else len(prefix)):
                raise SchemaError(path, "'minItems'/'maxItems' conflict with 'prefixItems'")
            parts: list[Node] = [Lit("[")]
            for i, sub in enumerate(prefix):
                if i:
                    parts.append(Lit(", "))
                parts.append(self.node(sub, f"{path}/prefixItems/{i}"))
            parts.append(Lit("]"))
            return Seq(tuple(parts))
        if isinstance(items, list):  # draft 4 tuples
            raise SchemaError(f"{path}/items", "'items' as a list (use 'prefixItems')")
        if items is False:
            if low:
                raise SchemaError(f"{path}/items", "'items': false with 'minItems' above 0")
            return Lit("[]")
        item = self.node(items, f"{path}/items")
        cap = None if high is not None else max(low, self.limits.max_items)
        return Arr(item, low, high, cap)


def _description(schema: Any) -> str | None:
    if isinstance(schema, dict) and isinstance(schema.get("description"), str):
        return " ".join(schema["description"].split())[:200] or None
    return None


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _count(schema: dict[str, Any], key: str, path: str, default: int | None) -> Any:
    value = schema.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(f"{path}/{key}", f"'{key}' must be a non-negative integer")
    return value


def _has_value(node: Num) -> bool:
    if node.minimum is None or node.maximum is None:
        return True
    if node.integer:
        return int_low(node.minimum, node.exclusive_minimum) <= int_high(
            node.maximum, node.exclusive_maximum
        )
    if node.minimum < node.maximum:
        return True
    return node.minimum == node.maximum and not (node.exclusive_minimum or node.exclusive_maximum)
