"""A forced tool call as a grammar, in the markup of the model's own template.

``CallMarkup`` says how a template writes one call (found by rendering a probe call, see
``services.tools.render.call_markup``): text before the JSON object, the object's two keys
in their order, text after it. The grammar fixes all of it but the tool's name (a choice
among the allowed ones) and its arguments (the tool's ``parameters``), so that the reply
reads exactly as the template will render it back in the next turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpt4all_api.structured.grammar import Alt, Lit, Node, Seq


@dataclass(frozen=True, slots=True)
class CallMarkup:
    before: str
    after: str
    name_key: str = "name"
    args_key: str = "arguments"
    name_first: bool = True


def tool_call_grammar(markup: CallMarkup, tools: tuple[tuple[str, Node], ...]) -> Node:
    """One call of one of ``tools`` ((name, arguments grammar) pairs)."""
    name_key = json.dumps(markup.name_key)
    args_key = json.dumps(markup.args_key)
    options: list[Node] = []
    for name, args in tools:
        name_part = f"{name_key}: {json.dumps(name, ensure_ascii=False)}"
        if markup.name_first:
            body: tuple[Node, ...] = (Lit(f"{{{name_part}, {args_key}: "), args, Lit("}"))
        else:
            body = (Lit(f"{{{args_key}: "), args, Lit(f", {name_part}}}"))
        options.append(
            Seq((Lit(markup.before, special=True), *body, Lit(markup.after, special=True)))
        )
    if not options:
        raise ValueError("no tool to call")
    return options[0] if len(options) == 1 else Alt(tuple(options))
