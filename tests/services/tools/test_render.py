"""How a template writes a tool call (``call_markup``, found by rendering a probe call),
and the JSON shape's sketch at the end of the system prompt."""

from __future__ import annotations

import json

from gpt4all_api.engines.base import ChatTurn, GenerationRequest, SamplingParams, ToolCallPart
from gpt4all_api.services.chat_template import CHATML_TEMPLATE, ChatTemplate
from gpt4all_api.services.tools.parse import parse_tool_calls
from gpt4all_api.services.tools.render import HERMES_MARKUP, call_markup, chat_prompt_input
from gpt4all_api.structured import JsonOutput, compile_schema
from gpt4all_api.structured.calls import tool_call_grammar
from gpt4all_api.structured.matcher import Matcher
from tests.support.tinymodel import TOOL_CHAT_TEMPLATE

#: Llama 3.1's way: the call is the whole reply, its arguments under "parameters".
LLAMA_LIKE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['tool_calls'] %}{% for c in m['tool_calls'] %}"
    "{{ '{\"name\": \"' + c['function']['name'] + '\", \"parameters\": ' }}"
    "{{ c['function']['arguments'] | tojson }}}{% endfor %}<|eot_id|>"
    "{% else %}{{ m['content'] }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if tools %}{% endif %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
#: A template that writes calls in a format the parser does not read.
ODD = (
    "{% for m in messages %}{% if m['tool_calls'] %}{% set f = m['tool_calls'][0]['function'] %}"
    "CALL {{ f['name'] }}({{ f['arguments'] }})"
    "{% else %}{{ m['role'] }}: {{ m['content'] }}{% endif %}\n{% endfor %}"
    "{% if tools %}{% endif %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def written_call(template: ChatTemplate) -> str:
    """What the decoder writes for a call of ``get_weather`` with {"city": "Paris"}."""
    args = compile_schema({"const": {"city": "Paris"}}, strict=True)
    m = Matcher(tool_call_grammar(call_markup(template), (("get_weather", args),)))
    m.take_forced()
    assert m.done
    return m.text


def test_the_fallback_format_for_templates_without_tools() -> None:
    assert call_markup(ChatTemplate(CHATML_TEMPLATE)) == HERMES_MARKUP
    text = written_call(ChatTemplate(CHATML_TEMPLATE))
    assert text == '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def test_a_hermes_template_is_written_as_it_renders_calls() -> None:
    """The reply equals what the template renders for the same call in the next turn."""
    template = ChatTemplate(TOOL_CHAT_TEMPLATE, eos_token="<|im_end|>")
    text = written_call(template)
    history = [
        ChatTurn("user", "x"),
        ChatTurn(
            "assistant", "", tool_calls=(ToolCallPart("c1", "get_weather", '{"city": "Paris"}'),)
        ),
    ]
    assert text in template.render(history, [{"type": "function", "function": {"name": "x"}}])
    assert parse_tool_calls(text)[1][0].name == "get_weather"


def test_llama_style_calls_keep_their_keys() -> None:
    markup = call_markup(ChatTemplate(LLAMA_LIKE, eos_token="<|eot_id|>"))
    assert (markup.before, markup.after, markup.args_key) == ("", "", "parameters")
    text = written_call(ChatTemplate(LLAMA_LIKE, eos_token="<|eot_id|>"))
    assert json.loads(text) == {"name": "get_weather", "parameters": {"city": "Paris"}}
    (call,) = parse_tool_calls(text)[1]
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_a_format_the_parser_cannot_read_falls_back() -> None:
    assert call_markup(ChatTemplate(ODD)) == HERMES_MARKUP


def test_a_json_shape_is_sketched_in_the_system_prompt() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "description": "years"}}}
    request = GenerationRequest(
        params=SamplingParams(None, 0.0, 1.0, 1, 0.0, 1.0, 64),
        messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "x")),
        constraint=JsonOutput(compile_schema(schema, strict=False)),
    )
    turns, tools = chat_prompt_input(ChatTemplate(CHATML_TEMPLATE), request)
    assert tools is None and turns[0].role == "system"
    assert turns[0].content.startswith("Be brief.\n\nReply with only a JSON value")
    assert '{"age"?: integer}' in turns[0].content and "- age: years" in turns[0].content
