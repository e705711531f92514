"""The decoder on a scripted model (the rare paths, exactly): fixed text evaluated, sampled
text checked, rollbacks to a token and UTF-8 boundary, EOS and special tokens inside a
value, a character split across tokens, the context or max_tokens running out.

The fake context tokenizes evaluated text one token per character and keeps every token's
bytes, so each test also checks the decoder's own invariants: what it emitted is exactly
what the context holds after the prompt, and the tokens it reported are the tokens there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from gpt4all_api.structured.decode import Cancelled, NoRoom, StructuredDecoder
from gpt4all_api.structured.schema import Limits, compile_schema

EOS = object()  # the model ends its turn
SPECIAL_ID = 2
TEXT_ID = 100


@dataclass
class Special:
    text: str


@dataclass
class FakeContext:
    """A model context whose generated tokens come from ``script``, in order, whatever
    happened before (a rollback does not rewind the script: the model's next choice)."""

    script: list[Any]
    n_ctx: int = 4096
    prompt: int = 5  # tokens of the prompt, before the reply
    tokens: list[bytes] = field(default_factory=list)
    calls: list[tuple[str, bool]] = field(default_factory=list)
    generations: int = 0
    cancel_after_calls: int | None = None

    def __post_init__(self) -> None:
        self.tokens = [b"p"] * self.prompt

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    @property
    def room(self) -> int:
        return self.n_ctx - self.n_past

    def rewind(self, n_past: int) -> None:
        assert self.prompt <= n_past <= self.n_past
        del self.tokens[n_past:]

    def evaluate(self, text: str, special: bool) -> int:
        if self.n_past + len(text) > self.n_ctx:
            raise NoRoom()
        self.calls.append((text, special))
        if self.cancel_after_calls is not None and len(self.calls) > self.cancel_after_calls:
            raise Cancelled()
        self.tokens.extend(c.encode() for c in text)
        return len(text)

    prefix_tokens: int = 0

    def generate(
        self,
        limit: int,
        on_token: Callable[[int, bytes], bool],
        prefix: tuple[str, bool] | None = None,
    ) -> None:
        self.prefix_tokens = 0
        if prefix is not None:
            if len(prefix[0]) > min(limit, self.room):
                raise NoRoom()
            self.prefix_tokens = self.evaluate(*prefix)
        self.generations += 1
        for _ in range(limit - self.prefix_tokens):
            if not self.script or self.n_past >= self.n_ctx:
                return
            item = self.script.pop(0)
            if item is EOS:
                return
            if isinstance(item, Special):
                token_id, piece = SPECIAL_ID, item.text.encode()
            else:
                token_id, piece = TEXT_ID, item if isinstance(item, bytes) else item.encode()
            self.tokens.append(piece)
            if not on_token(token_id, piece):
                return

    def is_special(self, token_id: int) -> bool:
        return token_id == SPECIAL_ID

    def reply(self) -> str:
        return b"".join(self.tokens[self.prompt :]).decode()


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def decode(
    schema: dict[str, Any],
    script: list[Any],
    *,
    max_tokens: int | None = None,
    n_ctx: int = 4096,
    stop_after: int | None = None,
    limits: Limits | None = None,
) -> tuple[str, Any, FakeContext]:
    ctx = FakeContext(list(script), n_ctx=n_ctx)
    pieces: list[tuple[str, int]] = []
    decoder = StructuredDecoder(
        compile_schema(schema, strict=False, limits=limits or Limits()),
        ctx,
        max_tokens=max_tokens,
        emit=lambda text, tokens: pieces.append((text, tokens)),
        interrupted=lambda: stop_after is not None and ctx.generations > stop_after,
    )
    result = decoder.run()
    text = "".join(t for t, _ in pieces)
    assert text == ctx.reply()  # emitted == in the context
    assert sum(n for _, n in pieces) == result.completion_tokens == ctx.n_past - ctx.prompt
    assert all(t for t, _ in pieces)
    return text, result, ctx


def valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def test_fixed_text_is_evaluated_and_a_matching_leftover_kept() -> None:
    text, result, ctx = decode(PERSON, ["Ann", '",', "3", "1", "}"])
    assert valid(text, PERSON) == {"name": "Ann", "age": 31}
    assert ctx.calls == [('{"name": "', False), (' "age": ', False)]
    assert (result.finish_reason, result.rollbacks, result.repairs) == ("stop", 0, 0)


def test_a_refused_character_rolls_its_token_back() -> None:
    """``"}`` closes the string but ends the object too early: the token goes, its
    allowed part is evaluated again with the text the schema fixes next."""
    text, result, ctx = decode(PERSON, ["Ann", '"}', "7", "}"])
    assert valid(text, PERSON) == {"name": "Ann", "age": 7}
    assert ctx.calls[1] == ('", "age": ', False)
    assert (result.rollbacks, result.repairs) == (1, 0)


def test_eos_inside_a_value_is_repaired() -> None:
    """EOS (or gpt4all's silent stop on ``### Instruction``) inside the string: it is
    closed; at the end, EOS after a complete number: the object is closed."""
    text, result, _ = decode(PERSON, ["Ann", EOS, "4", "2", EOS])
    assert valid(text, PERSON) == {"name": "Ann", "age": 42}
    assert result.repairs == 2 and result.finish_reason == "stop"


def test_a_special_token_inside_a_string_never_becomes_text() -> None:
    text, result, _ = decode(PERSON, ["An", Special("<|im_end|>"), "5", "}"])
    assert "im_end" not in text
    assert valid(text, PERSON) == {"name": "An", "age": 5}
    assert result.rollbacks == 1 and result.repairs == 1


def test_a_character_split_across_tokens() -> None:
    """``é`` in two tokens is emitted once whole; a refused character after it takes both
    halves back (no token boundary lies inside a character) and evaluates ``é`` again."""
    pieces: list[str] = []
    ctx = FakeContext([b"Ren", b"\xc3", b"\xa9\n", b"1", b"}"])
    decoder = StructuredDecoder(
        compile_schema(PERSON, strict=True),
        ctx,
        max_tokens=None,
        emit=lambda t, _: pieces.append(t),
        interrupted=lambda: False,
    )
    result = decoder.run()
    text = "".join(pieces)
    assert valid(text, PERSON) == {"name": "René", "age": 1}
    assert ("é", False) in [(t[:1], s) for t, s in ctx.calls]  # evaluated again as text
    assert result.rollbacks == 1 and result.repairs == 1  # the raw newline closed it


def test_max_tokens_cuts_with_length_and_exact_usage() -> None:
    """The text is then the valid prefix written so far; fixed text that does not fit is
    cut to what does."""
    text, result, _ = decode(PERSON, ["Ann", '",', "3"], max_tokens=12)
    assert (text, result.completion_tokens, result.finish_reason) == (
        '{"name": "Ann",',
        12,
        "length",
    )
    short, result, _ = decode(PERSON, ["Ann"], max_tokens=4)
    assert (short, result.completion_tokens, result.finish_reason) == ('{"na', 4, "length")


def test_a_full_context_closes_the_reply() -> None:
    """No max_tokens: before the context runs out the decoder closes the reply itself
    (valid, and finish_reason length: its content was cut short)."""
    endless = [f"w{i} " for i in range(500)]
    text, result, ctx = decode(PERSON, endless, n_ctx=120)
    assert valid(text, PERSON)["name"].startswith("w0 w1 w2")
    assert result.finish_reason == "length" and ctx.n_past <= ctx.n_ctx


def test_repairs_are_bounded() -> None:
    """A model that never writes what the schema wants: after a few repairs the decoder
    finishes the reply without it."""
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 30}
    text, result, _ = decode(schema, ["x"] * 200)
    assert len(valid(text, schema)) == 30 and result.repairs >= 24


def test_interrupted_keeps_only_final_text() -> None:
    text, result, _ = decode(PERSON, ["Ann", " Lee", " Smith"] * 5, stop_after=0)
    assert result.interrupted and result.finish_reason == "stop"
    assert text == '{"name": "'  # the token sampled when the stop came is not kept


def test_cancelled_while_evaluating() -> None:
    ctx = FakeContext(["Ann", '",', "1", EOS], cancel_after_calls=1)
    decoder = StructuredDecoder(
        compile_schema(PERSON, strict=True),
        ctx,
        max_tokens=None,
        emit=lambda *_: None,
        interrupted=lambda: False,
    )
    with pytest.raises(Cancelled):
        decoder.run()
