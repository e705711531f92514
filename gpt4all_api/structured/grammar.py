"""The shapes a structured reply may take: a small grammar of JSON values and fixed text.

``schema.compile_schema`` turns a JSON Schema into these nodes; ``calls`` wraps them in a
model's tool-call markup; ``matcher.Matcher`` walks them one character at a time. Nodes
are compared by identity (a compiled grammar is a DAG, recursive where ``$ref`` is).

The text the grammar fixes (keys, separators, ``const`` values, call markup) is written
in one canonical form, ``json.dumps``' own (``", "`` and ``": "``), so that what the model
reads back in the next turn is what a template renders from the parsed value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction


class Node:
    """A grammar node; ``min_len`` is the length of its shortest text (for repairs)."""

    __slots__ = ()


@dataclass(eq=False, slots=True)
class Lit(Node):
    """Fixed text. ``special``: template markup (evaluated with special tokens parsed).
    ``cap``: a close the decoder forces because of its own limit, not the schema's (counted
    as a repair)."""

    text: str
    special: bool = False
    cap: bool = False


@dataclass(eq=False, slots=True)
class Seq(Node):
    items: tuple[Node, ...]


@dataclass(eq=False, slots=True)
class Alt(Node):
    """One of ``options`` (``anyOf``, ``enum``, booleans); the model's text picks it."""

    options: tuple[Node, ...]


@dataclass(eq=False, slots=True)
class Str(Node):
    """A JSON string (quotes included). Lengths count characters (escapes count as one).
    ``pattern``: a regular expression the content must match (``regex`` syntax, anchored)."""

    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None


@dataclass(eq=False, slots=True)
class Num(Node):
    """A JSON number; ``integer`` allows no fraction or exponent. Bounds are exact
    fractions; a bound makes exponents unavailable (the reachable values stay intervals)."""

    integer: bool = False
    minimum: Fraction | None = None
    maximum: Fraction | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False


@dataclass(eq=False, slots=True)
class Arr(Node):
    """``items`` repeated between ``[`` and ``]``; ``cap``: the decoder's own limit on
    the number of items when the schema gives no ``maxItems``."""

    item: Node
    min_items: int = 0
    max_items: int | None = None
    cap: int | None = None


@dataclass(eq=False, slots=True)
class Prop:
    name: str
    value: Node
    required: bool
    description: str | None = None  # for the prompt


@dataclass(eq=False, slots=True)
class Obj(Node):
    """The declared properties, in schema order; optional ones may be left out, nothing
    else may be added (a reply with only declared keys is valid whatever
    ``additionalProperties`` says)."""

    props: tuple[Prop, ...]


@dataclass(eq=False, slots=True)
class MapObj(Node):
    """An object with any keys, each holding a ``value`` (``dict[str, X]``, free-form
    objects); ``cap``: the decoder's limit on members."""

    value: Node
    cap: int = 32


@dataclass(eq=False, slots=True)
class AnyValue(Node):
    """Any JSON value (``json_object`` mode, ``{}`` schemas), nested at most ``depth``
    levels; ``object_only`` for the root of ``json_object``. ``cap`` limits members and
    items per container."""

    depth: int
    object_only: bool = False
    cap: int = 32
    _options: tuple[Node, ...] | None = field(default=None, init=False, repr=False)

    def options(self) -> tuple[Node, ...]:
        """What the value may be: containers (while depth is left), then scalars."""
        if self._options is None:
            inner = AnyValue(self.depth - 1, cap=self.cap)
            obj: Node = MapObj(inner, self.cap)
            containers: tuple[Node, ...] = ()
            if self.object_only:
                self._options = (obj,)
                return self._options
            if self.depth > 0:
                containers = (obj, Arr(inner, cap=self.cap))
            self._options = (*containers, *_SCALARS)
        return self._options


_SCALARS: tuple[Node, ...] = (
    Str(),
    Num(),
    Lit("true"),
    Lit("false"),
    Lit("null"),
)


@dataclass(eq=False, slots=True)
class Ref(Node):
    """A ``$ref`` (set once its target is compiled, so that definitions may recurse)."""

    name: str
    target: Node | None = None


def min_len(node: Node, memo: dict[int, int] | None = None) -> int:
    """Characters of the shortest text ``node`` accepts (a recursion counts as very long);
    ``memo`` keeps results across calls (a grammar is a DAG: shared parts count once)."""
    memo = {} if memo is None else memo
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1 << 20  # while in progress: a path back here is no shortest path
    memo[key] = _min_len(node, memo)
    return memo[key]


def _min_len(node: Node, seen: dict[int, int]) -> int:
    if isinstance(node, Lit):
        return len(node.text)
    if isinstance(node, Seq):
        return sum(min_len(n, seen) for n in node.items)
    if isinstance(node, Alt):
        return min((min_len(n, seen) for n in node.options), default=1 << 20)
    if isinstance(node, Str):
        return 2 + node.min_length
    if isinstance(node, Num):
        return 1
    if isinstance(node, Arr):
        return 2 + node.min_items * (min_len(node.item, seen) + 2)
    if isinstance(node, Obj):
        return 2 + sum(
            len(key_text(p.name, True)) + min_len(p.value, seen) for p in node.props if p.required
        )
    if isinstance(node, MapObj):
        return 2
    if isinstance(node, AnyValue):
        return 2 if node.object_only else 1
    if isinstance(node, Ref):
        return min_len(node.target, seen) if node.target is not None else 1 << 20
    raise TypeError(f"not a grammar node: {node!r}")


def key_text(name: str, written: bool) -> str:
    """A property's fixed text: ``"name": `` (after ``, `` when a property came before)."""
    return (", " if written else "") + json.dumps(name, ensure_ascii=False) + ": "


def int_low(v: Fraction, excluded: bool) -> int:
    """The least integer above ``v`` (or at it, when ``v`` itself is allowed)."""
    ceil = -((-v.numerator) // v.denominator)
    return ceil + 1 if excluded and v.denominator == 1 else ceil


def int_high(v: Fraction, excluded: bool) -> int:
    """The greatest integer below ``v`` (or at it, when ``v`` itself is allowed)."""
    floor = v.numerator // v.denominator
    return floor - 1 if excluded and v.denominator == 1 else floor
