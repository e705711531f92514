"""Validate our responses against the official OpenAI OpenAPI schemas.

The document is OpenAPI 3.1 but still uses 3.0's ``nullable: true`` in places; those
nodes are rewritten to JSON Schema (``type: [T, "null"]``) before validating.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(
    os.environ.get(
        "OPENAI_OPENAPI",
        Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml",
    )
)
CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "openai-openapi.json"


def _fix_nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _fix_nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        return node
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


@cache
def _spec() -> dict[str, Any]:
    if CACHE.exists() and CACHE.stat().st_mtime >= SPEC.stat().st_mtime:
        return json.loads(CACHE.read_text())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = _fix_nullable(yaml.load(SPEC.read_text(), Loader=loader))
    CACHE.parent.mkdir(exist_ok=True)
    CACHE.write_text(json.dumps(spec, default=str))
    return spec


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    return Registry().with_resource("urn:openai", resource)


def validator(schema_name: str, relax: dict[str, Any] | None = None) -> Draft202012Validator:
    schema: dict[str, Any] = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    if relax:
        schema = copy.deepcopy(relax)
    return Draft202012Validator(schema, registry=_registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` if ``instance`` does not match the schema."""
    validator(schema_name).validate(instance)


def completion_chunk_schema() -> dict[str, Any]:
    """``CreateCompletionResponse`` for stream chunks: ``finish_reason`` may be null until a
    choice's last chunk (OpenAI streams exactly that; its schema only describes the end)."""
    schema = copy.deepcopy(_spec()["components"]["schemas"]["CreateCompletionResponse"])
    fr = schema["properties"]["choices"]["items"]["properties"]["finish_reason"]
    fr["type"] = ["string", "null"]
    fr["enum"] = [*fr["enum"], None]
    return schema


def validate_completion_chunk(instance: Any) -> None:
    Draft202012Validator(completion_chunk_schema(), registry=_registry()).validate(instance)
