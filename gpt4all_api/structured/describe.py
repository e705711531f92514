"""A compact description of a reply's shape, for the prompt.

Small models follow a one-line sketch of the object (``{"name": string, "age": integer}``)
far better than a pasted JSON Schema; the grammar holds the reply to the schema anyway,
so the sketch only has to make the model's own choices good ones.
"""

from __future__ import annotations

from gpt4all_api.structured.grammar import (
    Alt,
    AnyValue,
    Arr,
    Lit,
    MapObj,
    Node,
    Num,
    Obj,
    Ref,
    Seq,
    Str,
)

#: Characters of the sketch before parts are elided (a huge schema must not fill the context).
MAX_SKETCH = 2000


def sketch(node: Node) -> str:
    """``node`` as a one-line sketch of the value."""
    text = _sketch(node, set())
    return text if len(text) <= MAX_SKETCH else text[: MAX_SKETCH - 3] + "..."


def field_notes(node: Node) -> list[str]:
    """``name: description`` for the described properties (the top object's and nested
    ones, once each), to go under the sketch."""
    notes: list[str] = []
    _notes(node, notes, set())
    return notes[:40]


def _sketch(node: Node, active: set[int]) -> str:
    if isinstance(node, Ref):
        if id(node) in active or node.target is None:
            return node.name.rsplit("/", 1)[-1]
        active.add(id(node))
        try:
            return _sketch(node.target, active)
        finally:
            active.discard(id(node))
    if isinstance(node, Lit):
        return node.text
    if isinstance(node, Str):
        extra = []
        if node.pattern is not None:
            extra.append("formatted")
        if node.max_length is not None:
            extra.append(f"at most {node.max_length} characters")
        if node.min_length:
            extra.append(f"at least {node.min_length} characters")
        return "string" + (f" ({', '.join(extra)})" if extra else "")
    if isinstance(node, Num):
        kind = "integer" if node.integer else "number"
        bounds = []
        if node.minimum is not None:
            bounds.append(f"{'>' if node.exclusive_minimum else '>='} {_number(node.minimum)}")
        if node.maximum is not None:
            bounds.append(f"{'<' if node.exclusive_maximum else '<='} {_number(node.maximum)}")
        return kind + (f" ({', '.join(bounds)})" if bounds else "")
    if isinstance(node, Alt):
        texts = [_sketch(o, active) for o in node.options]
        if sorted(texts) == ["false", "true"]:
            return "boolean"
        return " | ".join(texts)
    if isinstance(node, Seq):
        return "".join(_sketch(o, active) for o in node.items)
    if isinstance(node, Arr):
        return f"[{_sketch(node.item, active)}, ...]"
    if isinstance(node, Obj):
        parts = [
            f'"{p.name}"{"" if p.required else "?"}: {_sketch(p.value, active)}' for p in node.props
        ]
        return "{" + ", ".join(parts) + "}"
    if isinstance(node, MapObj):
        return "{string: " + _sketch(node.value, active) + ", ...}"
    if isinstance(node, AnyValue):
        return "object" if node.object_only else "any JSON value"
    raise TypeError(f"not a grammar node: {node!r}")


def _number(value: object) -> str:
    text = str(value)
    return text if "/" not in text else str(float(value))  # type: ignore[arg-type]


def _notes(node: Node, notes: list[str], seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, Ref) and node.target is not None:
        _notes(node.target, notes, seen)
    elif isinstance(node, Obj):
        for p in node.props:
            if p.description:
                notes.append(f"{p.name}: {p.description}")
        for p in node.props:
            _notes(p.value, notes, seen)
    elif isinstance(node, Alt | Seq):
        for o in node.options if isinstance(node, Alt) else node.items:
            _notes(o, notes, seen)
    elif isinstance(node, Arr):
        _notes(node.item, notes, seen)
    elif isinstance(node, MapObj):
        _notes(node.value, notes, seen)
