"""Structured output on backends without constrained sampling: JSON Schema -> grammar
(``schema``), a character-level matcher (``matcher``), and a decoder that evaluates the
text the grammar fixes and checks what the model samples (``decode``)."""

from gpt4all_api.structured.calls import CallMarkup, tool_call_grammar
from gpt4all_api.structured.decode import DecodeResult, StructuredDecoder
from gpt4all_api.structured.grammar import AnyValue, Node
from gpt4all_api.structured.output import JsonOutput, OutputConstraint, ToolCallOutput
from gpt4all_api.structured.schema import Limits, SchemaError, compile_schema

__all__ = [
    "AnyValue",
    "CallMarkup",
    "DecodeResult",
    "JsonOutput",
    "Limits",
    "Node",
    "OutputConstraint",
    "SchemaError",
    "StructuredDecoder",
    "ToolCallOutput",
    "compile_schema",
    "tool_call_grammar",
]
