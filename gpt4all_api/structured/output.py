"""What a reply must be, as the services hand it to an engine that decodes it itself.

``JsonOutput``: one JSON value (``response_format`` ``json_schema`` / ``json_object``,
Responses ``text.format``), or, with tools and ``tool_choice`` auto, a call instead.
``ToolCallOutput``: one call of one of the allowed tools (``tool_choice`` ``required`` or
named), its arguments held to the tool's ``parameters``; the engine writes it in the
model's own call markup (``calls``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt4all_api.structured.describe import field_notes, sketch
from gpt4all_api.structured.grammar import Node


@dataclass(frozen=True, slots=True)
class ToolCallOutput:
    """(name, arguments grammar) of each tool the call may be of, in request order."""

    tools: tuple[tuple[str, Node], ...]


@dataclass(frozen=True, slots=True)
class JsonOutput:
    value: Node
    #: ``json_object``: any object; the prompt then asks for JSON without a shape
    object_only: bool = False
    name: str | None = None
    description: str | None = None
    #: Tools the model may call instead (``tool_choice`` auto beside ``response_format``:
    #: the reply is then one call or the JSON value, whichever the model starts).
    calls: ToolCallOutput | None = None

    def instruction(self) -> str:
        """What the system prompt tells the model (the grammar enforces it anyway)."""
        lead = "When you do not call a tool, reply" if self.calls else "Reply"
        if self.object_only:
            return f"{lead} with only a JSON object, nothing else."
        lines = [
            f"{lead} with only a JSON value in this format, nothing else:",
            sketch(self.value),
        ]
        if self.description:
            lines.insert(0, " ".join(self.description.split())[:500])
        notes = field_notes(self.value)
        if notes:
            lines.append("Where:")
            lines.extend(f"- {note}" for note in notes)
        return "\n".join(lines)


OutputConstraint = JsonOutput | ToolCallOutput
