"""Validate our responses against the official OpenAI OpenAPI schemas.

The document is vendored and pinned in openai_openapi/ (see its README.md); the
``OPENAI_OPENAPI`` environment variable may name another copy (``.yaml`` or ``.yaml.gz``).
It is OpenAPI 3.1 but still uses 3.0's ``nullable: true`` in places; those nodes are
rewritten to JSON Schema (``type: [T, "null"]``) before validating. Parsing 3 MB of YAML
takes seconds, so the result is cached as JSON under .pytest_cache, keyed by the
document's hash.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support.server import ROOT

VENDORED = Path(__file__).resolve().parent / "openai_openapi" / "openapi.yaml.gz"
#: sha256 of the vendored document, uncompressed (OpenAI API spec 2.3.0).
VENDORED_SHA256 = "db5d7478feae10b4d331834c60d9765a8aa042e38419f9b1694288c11aa8ebc8"
CACHE_DIR = ROOT / ".pytest_cache" / "openai-openapi"
#: Bump when the rewriting below changes, so that old caches are not used.
_REWRITE_VERSION = 1


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


def spec_path() -> Path:
    """The document to validate against: ``OPENAI_OPENAPI`` if set, else the vendored one."""
    return Path(os.environ.get("OPENAI_OPENAPI") or VENDORED)


@cache
def _spec() -> dict[str, Any]:
    path = spec_path()
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    digest = hashlib.sha256(raw).hexdigest()
    if path == VENDORED and digest != VENDORED_SHA256:
        raise RuntimeError(f"{path} is not the pinned document (sha256 {digest})")
    cached = CACHE_DIR / f"{digest[:16]}-v{_REWRITE_VERSION}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = _fix_nullable(yaml.load(raw, Loader=loader))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.part")
    partial.write_text(json.dumps(spec, default=str))
    partial.replace(cached)  # atomic: parallel sessions never read half a file
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
