"""Schema-driven decoding on a backend that can only evaluate text and sample freely.

gpt4all gives no access to logits, so the grammar cannot mask tokens. Instead:

* the text the grammar fixes (keys, separators, call markup, one-way enum prefixes) is
  evaluated as prompt text, which is cheap and cannot go wrong;
* where the model chooses (string contents, digits, ``,`` or ``]``, an enum member, null
  or a value) it samples, and every character of every token is checked;
* at the first character the grammar does not allow, generation stops, the context goes
  back to the last token boundary that is also a UTF-8 boundary (``n_past``), and the
  allowed part of the token is evaluated again together with what comes next: the text
  the grammar fixes there, or, where the model's choice itself was not allowed, one
  character a *repair* writes towards the nearest complete reply (closing a string that
  took a raw newline, choosing an enum member, ending an array). A token whose leftover
  matches the fixed text that follows is kept as it is.

EOS, the backend's ``### `` stop strings and special tokens end or stop a value the same
way: whatever was allowed stays, and a repair continues it. After ``max_repairs`` repairs
the decoder stops sampling and completes the reply itself (a model that keeps fighting
the schema still gets a valid, bounded reply). A ``max_tokens`` (or the context) that
runs out first ends with ``length`` and the valid prefix written so far.

Text reaches ``emit`` only once it is final: generated tokens when they end on a
character boundary with every character allowed, evaluated text after its evaluation.
Token counts are exact: each emitted piece carries the tokens it added to the context,
and rolled-back tokens are never counted.
"""

from __future__ import annotations

import codecs
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from gpt4all_api.structured.grammar import Node
from gpt4all_api.structured.matcher import Matcher

logger = logging.getLogger(__name__)

Finish = Literal["stop", "length"]
#: Repairs after which the decoder completes the reply without asking the model again.
MAX_REPAIRS = 24


class NoRoom(Exception):
    """The backend refused to evaluate: the context has no room for the text."""


class Cancelled(Exception):
    """The request was abandoned while text was being evaluated."""


class TokenBackend(Protocol):
    """What the decoder needs from one model context (see ``engines.gpt4all_cpu``)."""

    @property
    def n_past(self) -> int:
        """Tokens in the context now."""

    @property
    def room(self) -> int:
        """Tokens that still fit in the context."""

    def rewind(self, n_past: int) -> None:
        """Forget the tokens after ``n_past`` (the next evaluation overwrites them)."""

    def evaluate(self, text: str, special: bool) -> int:
        """Evaluate ``text`` at ``n_past`` (control tokens parsed when ``special``);
        returns the tokens added. Raises ``NoRoom`` (nothing evaluated) or
        ``Cancelled``."""

    def generate(self, limit: int, on_token: Callable[[int, bytes], bool]) -> None:
        """Sample from the logits of the last evaluated token, at most ``limit`` tokens;
        each is evaluated before ``on_token(id, raw bytes)``, and False stops there (that
        token stays). Ends silently on EOS or a backend stop string."""

    def is_special(self, token_id: int) -> bool:
        """Control tokens (end of turn, role markers) that text must never contain."""


@dataclass(slots=True)
class DecodeResult:
    finish_reason: Finish
    completion_tokens: int
    repairs: int = 0
    rollbacks: int = 0
    #: stopped from outside (a stop sequence or the client gone): nothing more to say
    interrupted: bool = False


class _End(enum.Enum):
    CONTINUE = enum.auto()  # the grammar fixes text next, or the reply is complete
    CHOICE_REFUSED = enum.auto()  # a character, token or end the grammar does not allow
    LENGTH = enum.auto()
    CLOSE = enum.auto()  # the context is nearly full: finish the reply now
    INTERRUPTED = enum.auto()


#: Context kept free (beyond twice the characters still needed) to close the reply.
CLOSE_MARGIN = 8


class StructuredDecoder:
    """One reply held to ``grammar``, on ``backend``; ``emit(text, tokens)`` receives the
    final text in order, with the tokens each piece added."""

    def __init__(
        self,
        grammar: Node,
        backend: TokenBackend,
        *,
        max_tokens: int | None,
        emit: Callable[[str, int], None],
        interrupted: Callable[[], bool],
        plain_is_safe: Callable[[str], bool] = lambda _: False,
        max_repairs: int = MAX_REPAIRS,
    ) -> None:
        self.matcher = Matcher(grammar)
        self.backend = backend
        self.max_tokens = max_tokens
        self.emit = emit
        self.interrupted = interrupted
        self.plain_is_safe = plain_is_safe
        self.max_repairs = max_repairs
        self.start = backend.n_past
        self.pending: list[tuple[str, bool]] = []
        self.repairs = 0
        self.rollbacks = 0
        self.refused = ""  # the model's text from its last refused character on

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> DecodeResult:
        m = self.matcher
        closing = False  # the context is nearly full: the reply is finished without sampling
        while True:
            forced = m.take_forced()
            self.repairs += forced.caps
            self.pending.extend(forced.runs)
            finishing = closing or self.repairs >= self.max_repairs
            if m.done or (m.may_end and finishing):
                ok = self._flush()
                return self._result("length" if closing or not ok else "stop")
            if finishing:
                self._repair()  # the model had its chances: finish the reply without it
                continue
            if not self._flush() or self._remaining() <= 0:
                return self._result("length")
            end = self._generate()
            if end is _End.INTERRUPTED:
                return self._result("stop", interrupted=True)
            if end is _End.LENGTH:
                return self._result("length")
            if end is _End.CLOSE:
                closing = True
                continue
            if end is _End.CONTINUE or m.has_forced():
                continue
            # the model's choice here was not allowed (or it ended too early)
            if m.may_end:
                return self._result("stop" if self._flush() else "length")
            self._repair(self.refused)

    def _repair(self, intent: str = "") -> None:
        self.pending.append((self.matcher.repair(intent), False))
        self.repairs += 1

    def _result(self, finish: Finish, interrupted: bool = False) -> DecodeResult:
        if self.repairs or self.rollbacks:
            logger.debug(
                "structured reply: %d repair(s), %d rollback(s)", self.repairs, self.rollbacks
            )
        return DecodeResult(
            finish,
            self.backend.n_past - self.start,
            self.repairs,
            self.rollbacks,
            interrupted,
        )

    def _reserve(self) -> int:
        """Tokens to keep for closing the reply (a character of markup or a key may take
        more than one token)."""
        return 2 * self.matcher.min_left() + CLOSE_MARGIN

    def _remaining(self) -> int:
        room = self.backend.room
        if self.max_tokens is None:
            return room
        return min(room, self.max_tokens - (self.backend.n_past - self.start))

    # --- evaluating fixed text -----------------------------------------------------------

    def _calls(self, runs: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        """Runs merged into as few evaluation calls as allowed: plain text that cannot
        hold a control token's text may share a call with markup."""
        calls: list[tuple[str, bool]] = []
        for text, special in runs:
            if not text:
                continue
            if calls:
                last_text, last_special = calls[-1]
                if last_special == special:
                    calls[-1] = (last_text + text, special)
                    continue
                if last_special and self.plain_is_safe(text):
                    calls[-1] = (last_text + text, True)
                    continue
                if special and self.plain_is_safe(last_text):
                    calls[-1] = (last_text + text, True)
                    continue
            calls.append((text, special))
        return calls

    def _evaluate_all(self, calls: list[tuple[str, bool]]) -> int:
        return sum(self.backend.evaluate(text, special) for text, special in calls)

    def _flush(self) -> bool:
        """Evaluate and emit the pending text; False when only a prefix fitted (the
        tokens or the context ran out: that prefix is emitted)."""
        runs, self.pending = self.pending, []
        calls = self._calls(runs)
        if not calls:
            return True
        budget = self._remaining()
        start = self.backend.n_past
        try:
            count = self._evaluate_all(calls)
        except NoRoom:
            count = budget + 1
        if count <= budget:
            self.emit("".join(t for t, _ in calls), count)
            return True
        self.backend.rewind(start)
        self._fit(calls, budget, start)
        return False

    def _fit(self, calls: list[tuple[str, bool]], budget: int, start: int) -> None:
        """Evaluate the longest prefix of ``calls`` found within ``budget`` tokens."""
        total = sum(len(t) for t, _ in calls)
        best = 0
        lo, hi = 1, total - 1
        while lo <= hi:  # a longer prefix usually costs more tokens: binary search
            mid = (lo + hi) // 2
            try:
                count = self._evaluate_all(_prefix(calls, mid))
            except NoRoom:
                count = budget + 1
            self.backend.rewind(start)
            if count <= budget:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best:
            part = _prefix(calls, best)
            count = self._evaluate_all(part)
            self.emit("".join(t for t, _ in part), count)

    # --- sampling ------------------------------------------------------------------------

    def _generate(self) -> _End:
        m = self.matcher
        backend = self.backend
        base = backend.n_past
        limit = self._remaining()
        # the context, not max_tokens, is what runs out first: keep room to close the reply
        guard_room = backend.room if limit == backend.room else None
        raw = bytearray()
        ends: list[int] = []  # bytes of the reply so far after each token
        decoder = codecs.getincrementaldecoder("utf-8")()
        accepted = 0  # bytes whose characters the grammar took
        emitted = 0  # bytes emitted (always the end of some token)
        emitted_tokens = 0
        outcome = _End.CHOICE_REFUSED  # what ending by itself means
        refused = False
        self.refused = ""

        def on_token(token_id: int, piece: bytes) -> bool:
            nonlocal accepted, emitted, emitted_tokens, outcome, refused
            ends.append(len(raw) + len(piece))
            if self.interrupted():
                outcome = _End.INTERRUPTED
                return False
            if backend.is_special(token_id):
                raw.extend(piece)
                refused = True
                return False
            raw.extend(piece)
            try:
                chars = decoder.decode(piece)
            except UnicodeDecodeError:
                refused = True
                return False
            pos = accepted
            for k, ch in enumerate(chars):
                if not m.advance(ch):
                    accepted = pos
                    refused = True
                    self.refused = chars[k:]
                    return False
                pos += len(ch.encode())
            accepted = pos
            if accepted != len(raw):
                return True  # a character continues in the next token
            self.emit(raw[emitted:accepted].decode(), len(ends) - emitted_tokens)
            emitted, emitted_tokens = accepted, len(ends)
            if m.done or m.has_forced():
                outcome = _End.CONTINUE
                return False
            if guard_room is not None and guard_room - len(ends) <= self._reserve():
                outcome = _End.CLOSE
                return False
            return True

        backend.generate(limit, on_token)
        if backend.n_past != base + len(ends):
            raise RuntimeError(
                f"context at {backend.n_past}, expected {base + len(ends)} after sampling"
            )
        if outcome is _End.INTERRUPTED:
            backend.rewind(base + emitted_tokens)  # what the caller saw, nothing after
            return outcome
        if outcome in (_End.CONTINUE, _End.CLOSE) and not refused:
            return outcome
        if not refused and len(ends) >= limit:
            outcome = _End.LENGTH
        # keep what was allowed: back to the last token boundary that is also a character
        # boundary, and evaluate the allowed rest of the tokens after it again
        keep = 0
        for j in range(len(ends), 0, -1):
            if ends[j - 1] <= accepted and _char_boundary(raw, ends[j - 1]):
                keep = j
                break
        kept_bytes = ends[keep - 1] if keep else 0
        if kept_bytes < emitted:  # pragma: no cover - emission only happens at such ends
            raise RuntimeError("emitted text would be rolled back")
        if keep < len(ends):
            backend.rewind(base + keep)
            self.rollbacks += refused
            redo = raw[kept_bytes:accepted].decode()
            if redo:
                self.pending.append((redo, False))
        return outcome


def _char_boundary(raw: bytearray, at: int) -> bool:
    return at == 0 or at >= len(raw) or (raw[at] & 0xC0) != 0x80


def _prefix(calls: list[tuple[str, bool]], chars: int) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for text, special in calls:
        if chars <= 0:
            break
        out.append((text[:chars], special))
        chars -= len(text)
    return out
