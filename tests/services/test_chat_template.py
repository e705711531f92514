"""Chat templates come from model files: rendered sandboxed, with a ChatML fallback."""

from __future__ import annotations

import pytest

from gpt4all_api.engines.base import ChatTurn
from gpt4all_api.errors import InvalidRequest
from gpt4all_api.services.chat_template import CHATML_TEMPLATE, chat_template_from_metadata

MESSAGES = (ChatTurn("system", "Be brief."), ChatTurn("user", "Hi"))


def test_chatml_fallback_when_no_template() -> None:
    tpl = chat_template_from_metadata(None)
    assert tpl.is_fallback
    assert tpl.render(MESSAGES) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "<|im_end|>" in tpl.end_of_turn


def test_model_template_with_special_tokens() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{{ eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tpl = chat_template_from_metadata(source, "<s>", "</s>")
    assert not tpl.is_fallback
    assert tpl.render(MESSAGES) == "<s>[system]Be brief.</s>[user]Hi</s>[assistant]"
    assert tpl.end_of_turn == ("</s>",)


def test_sandbox_blocks_python_internals() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    tpl = chat_template_from_metadata(evil)
    with pytest.raises(InvalidRequest):
        tpl.render(MESSAGES)


def test_template_raise_exception_is_a_client_error() -> None:
    source = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
    tpl = chat_template_from_metadata(source)
    with pytest.raises(InvalidRequest, match="no system"):
        tpl.render(MESSAGES)


def test_broken_template_falls_back_to_chatml() -> None:
    tpl = chat_template_from_metadata("{% for m in messages %}{{ m['content'] }")
    assert tpl.is_fallback and tpl.source == CHATML_TEMPLATE


def test_segments_split_markup_from_contents() -> None:
    tpl = chat_template_from_metadata(None)
    messages = (ChatTurn("system", "Be brief."), ChatTurn("user", "Hi<|im_end|>"))
    segments = tpl.render_segments(messages)
    assert segments == [
        ("<|im_start|>system\n", None),
        ("Be brief.", 0),
        ("<|im_end|>\n<|im_start|>user\n", None),
        ("Hi<|im_end|>", 1),
        ("<|im_end|>\n<|im_start|>assistant\n", None),
    ]
    assert "".join(t for t, _ in segments) == tpl.render(messages)


def test_segments_fall_back_to_one_markup_piece_when_contents_are_transformed() -> None:
    source = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
        "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )
    tpl = chat_template_from_metadata(source)
    messages = (ChatTurn("user", "  Hi  "),)
    assert tpl.render_segments(messages) == [(tpl.render(messages), None)]
    # contents equal to their trimmed form still split
    assert len(tpl.render_segments((ChatTurn("user", "Hi"),))) == 3


def test_segments_of_a_content_holding_the_sentinels() -> None:
    tpl = chat_template_from_metadata(None)
    messages = (ChatTurn("user", "\ue0000\ue001"),)
    assert tpl.render_segments(messages) == [(tpl.render(messages), None)]
