"""Walks a grammar one character at a time: what may come next, what is forced, what a
repair writes.

A *configuration* is a stack of frames (a linked list of tuples: ``(frame, rest)``,
``None`` when the reply is complete). The matcher holds the set of configurations that
the text so far can be in (several while an ``anyOf``, an optional property or an
``enum`` is undecided). A primitive frame consumes characters (fixed text, a string, a
number, whitespace); a composite frame (a sequence, an array, an object) expands into the
frames of what may come next when it reaches the top, so recursion (``$ref``) unfolds only
as far as the text goes.

Whitespace is only accepted where the model chooses anyway (before ``,``/``]``/``}`` and
the next property or item): where the text is fixed, it is fixed without whitespace, so
that it can be evaluated as prompt text instead of generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

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
    int_high,
    int_low,
    key_text,
    min_len,
)

Stack = tuple["Frame", "Stack"] | None
#: The configurations the text so far can be in, in a fixed order (repairs that tie are
#: decided by it, so that the same reply always gets the same repair).
Configs = tuple[Stack, ...]
#: Whitespace characters accepted in a row where the model chooses.
MAX_WHITESPACE = 8
#: Characters of one number (a model that never stops writing digits is cut here).
MAX_NUMBER_CHARS = 24
_WS = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')
#: Deep recursion with nothing consumed means a grammar that cannot make progress.
_MAX_EXPANSION = 400


class _Finished:
    """A frame's ``step`` result: it consumed the character and is over."""


FINISHED = _Finished()


class Frame:
    __slots__ = ()
    composite = False

    # primitive frames
    def first(self) -> frozenset[str] | None:
        """The characters that may come next, None when many (string contents)."""
        raise NotImplementedError

    def step(self, c: str) -> Frame | _Finished | None:
        raise NotImplementedError

    @property
    def can_end(self) -> bool:
        return False

    @property
    def alive(self) -> bool:
        return True

    def repair_chars(self) -> str:
        """Characters a repair may write here, most wanted first."""
        return ""

    # composite frames
    def expand(self, rest: Stack, text: str) -> list[Stack]:
        """``text``: the reply so far (arrays compare their items)."""
        raise NotImplementedError

    def min_left(self, memo: dict[int, int]) -> int:
        raise NotImplementedError


# --- primitive frames --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LitF(Frame):
    text: str
    i: int = 0
    special: bool = False
    cap: bool = False

    def first(self) -> frozenset[str]:
        return frozenset(self.text[self.i])

    def step(self, c: str) -> Frame | _Finished | None:
        if c != self.text[self.i]:
            return None
        if self.i + 1 == len(self.text):
            return FINISHED
        return LitF(self.text, self.i + 1, self.special, self.cap)

    def repair_chars(self) -> str:
        return self.text[self.i]

    def min_left(self, memo: dict[int, int]) -> int:
        return len(self.text) - self.i


@dataclass(frozen=True, slots=True)
class StrF(Frame):
    """Inside a string. ``esc``: 0 plain, 1 after a backslash, 2-5 inside ``\\uXXXX``
    (hex digits read + 2). ``content`` is kept only when a pattern must be checked."""

    node: Str
    count: int = 0
    esc: int = 0
    content: str = ""  # all of it with a pattern, else the tail the loop check needs
    looping: bool = False  # the content repeats itself: only the closing quote is left

    @property
    def _full(self) -> bool:
        if self.looping:
            return True
        return self.node.max_length is not None and self.count >= self.node.max_length

    def _may_close(self) -> bool:
        if self.count < self.node.min_length:
            return False
        return self.node.pattern is None or _pattern_matches(self.node.pattern, self.content)

    def first(self) -> frozenset[str] | None:
        if self.esc == 1:
            return _ESCAPES
        if self.esc:
            return _HEX
        if self._full:
            return frozenset('"') if self._may_close() else frozenset()
        return None

    def step(self, c: str) -> Frame | _Finished | None:
        node = self.node
        if self.esc == 1:
            if c == "u":
                return StrF(node, self.count, 2, self.content)
            if c in _ESCAPES:
                return self._add(_UNESCAPE[c])
            return None
        if self.esc:
            if c not in _HEX:
                return None
            if self.esc == 2 and c in "dD":  # \uD800-\uDFFF: a lone surrogate
                return None
            if self.esc == 5:
                return self._add("?")
            return StrF(node, self.count, self.esc + 1, self.content)
        if c == '"':
            return FINISHED if self._may_close() else None
        if self._full or ord(c) < 0x20:
            return None
        if c == "\\":  # (no escapes where a format is checked: none is needed)
            return StrF(node, self.count, 1, self.content) if node.pattern is None else None
        return self._add(c)

    def _add(self, char: str) -> StrF | None:
        if self._full:
            return None
        content = self.content + char
        if self.node.pattern is not None:
            if not _pattern_viable(self.node.pattern, content):
                return None
            return StrF(self.node, self.count + 1, 0, content)
        content = content[-_LOOP_TAIL:]
        looping = self.count + 1 >= self.node.min_length and _loops(content, self.count + 1)
        return StrF(self.node, self.count + 1, 0, content, looping)

    def repair_chars(self) -> str:
        if self.esc == 1:
            return "\\"
        if self.esc:
            return "0"
        if self._may_close():
            return '"'
        if self.node.pattern is not None:  # formats: every shape ends in a few of these
            return "Z0123456789-:T.+"
        return "_x0aA-.:@ "

    def min_left(self, memo: dict[int, int]) -> int:
        escape = {0: 0, 1: 1}.get(self.esc, 6 - self.esc)
        return escape + max(0, self.node.min_length - self.count) + 1


#: A string whose end is one piece written again and again (at least ``_LOOP_REPEATS``
#: times, or twice as often for pieces under 8 characters) is closed: small models fall
#: into such loops and would otherwise fill ``max_tokens`` with them.
_LOOP_REPEATS = 3
_LOOP_MAX_PIECE = 64
_LOOP_TAIL = _LOOP_REPEATS * _LOOP_MAX_PIECE
_LOOP_DISTINCT = 0.5


def _loops(tail: str, count: int) -> bool:
    """Whether a string ends in a loop: one piece repeated, or (every few characters, on
    a long tail) few distinct 6-grams, as in "A-Chicken-B-Chicken-C-Chicken-..."."""
    n = len(tail)
    if n >= _LOOP_TAIL and count % 8 == 0:
        grams = {tail[i : i + 6] for i in range(n - 5)}
        if len(grams) < _LOOP_DISTINCT * (n - 5):
            return True
    for size in range(3, min(_LOOP_MAX_PIECE, n // _LOOP_REPEATS) + 1):
        repeats = _LOOP_REPEATS if size >= 8 else 2 * _LOOP_REPEATS
        if size * repeats > n:
            break
        piece = tail[-size:]
        if tail[-size * repeats :] == piece * repeats:
            return True
    return False


_UNESCAPE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _pattern_viable(pattern: str, content: str) -> bool:
    import regex

    return regex.fullmatch(pattern, content, partial=True) is not None


def _pattern_matches(pattern: str, content: str) -> bool:
    import regex

    return regex.fullmatch(pattern, content) is not None


# Number prefixes: states of JSON's number grammar.
_START, _MINUS, _ZERO, _INT, _DOT, _FRAC, _E, _ESIGN, _EXP = range(9)
_COMPLETE = frozenset({_ZERO, _INT, _FRAC, _EXP})


def _num_next(state: int, c: str) -> int | None:
    digit = c in _DIGITS
    if state in (_START, _MINUS):
        if c == "-" and state == _START:
            return _MINUS
        return _ZERO if c == "0" else _INT if digit else None
    if state in (_ZERO, _INT, _FRAC):
        if digit and state != _ZERO:
            return state
        if c == "." and state != _FRAC:
            return _DOT
        return _E if c in "eE" else None
    if state == _DOT:
        return _FRAC if digit else None
    if state == _E:
        return _ESIGN if c in "+-" else _EXP if digit else None
    if state in (_ESIGN, _EXP):
        return _EXP if digit else None
    return None


@dataclass(frozen=True, slots=True)
class NumF(Frame):
    node: Num
    text: str = ""
    state: int = _START

    @property
    def _bounded(self) -> bool:
        return self.node.minimum is not None or self.node.maximum is not None

    def first(self) -> frozenset[str] | None:
        chars = {c for c in "-0123456789.eE+" if self.step(c) is not None}
        return frozenset(chars)

    def step(self, c: str) -> Frame | _Finished | None:
        if len(self.text) >= MAX_NUMBER_CHARS:
            return None
        state = _num_next(self.state, c)
        if state is None:
            return None
        if self.node.integer and state in (_DOT, _E):
            return None
        if state == _E and self._bounded:
            return None
        nxt = NumF(self.node, self.text + c, state)
        if self._bounded and not nxt._feasible():
            return None
        return nxt

    @property
    def can_end(self) -> bool:
        return self.state in _COMPLETE and (not self._bounded or self._in_range(self._value()))

    @property
    def alive(self) -> bool:
        return len(self.text) < MAX_NUMBER_CHARS

    def repair_chars(self) -> str:
        return "0123456789-"

    def min_left(self, memo: dict[int, int]) -> int:
        return 0 if self.can_end else 1

    def _value(self) -> Fraction:
        return Fraction(self.text)

    def _in_range(self, v: Fraction) -> bool:
        n = self.node
        if n.minimum is not None and (v < n.minimum or (n.exclusive_minimum and v == n.minimum)):
            return False
        return not (
            n.maximum is not None and (v > n.maximum or (n.exclusive_maximum and v == n.maximum))
        )

    def _feasible(self) -> bool:
        """Whether some number written on from this prefix is within the bounds."""
        return any(self._meets(span) for span in self._reachable())

    def _meets(self, span: _Span) -> bool:
        """Whether the interval ``span`` holds a value allowed by the bounds (an integer,
        for integers)."""
        lo, lo_open, hi, hi_open = span
        n = self.node
        if self.node.integer:
            first = None if lo is None else int_low(lo, lo_open)
            last = None if hi is None else int_high(hi, hi_open)
            if n.minimum is not None:
                low = int_low(n.minimum, n.exclusive_minimum)
                first = low if first is None else max(first, low)
            if n.maximum is not None:
                high = int_high(n.maximum, n.exclusive_maximum)
                last = high if last is None else min(last, high)
            return first is None or last is None or first <= last
        if n.minimum is not None:
            lo, lo_open = _tighter_low(lo, lo_open, n.minimum, n.exclusive_minimum)
        if n.maximum is not None:
            hi, hi_open = _tighter_high(hi, hi_open, n.maximum, n.exclusive_maximum)
        if lo is None or hi is None:
            return True
        return lo < hi or (lo == hi and not lo_open and not hi_open)

    def _reachable(self) -> Iterator[_Span]:
        """Intervals of the values this prefix can still become."""
        text, state = self.text, self.state
        negative = text.startswith("-")
        body = text[1:] if negative else text
        spans: list[_Span] = []
        if state == _START:
            yield (None, False, None, False)
            return
        if state == _MINUS:
            spans.append((Fraction(0), False, None, False))
        elif state in (_ZERO, _INT):
            whole = Fraction(int(body))
            spans.append((whole, False, whole, False))
            room = MAX_NUMBER_CHARS - len(text)
            if not self.node.integer and room >= 2:
                spans.append((whole, False, whole + 1, True))
            if state == _INT:
                for k in range(1, room + 1):
                    scale = 10**k
                    spans.append((whole * scale, False, (whole + 1) * scale, True))
        elif state == _DOT:
            whole = Fraction(int(body[:-1]))
            spans.append((whole, False, whole + 1, True))
        elif state == _FRAC:
            value = Fraction(body)
            step = Fraction(1, 10 ** len(body.split(".")[1]))
            if len(text) >= MAX_NUMBER_CHARS:
                spans.append((value, False, value, False))
            else:
                spans.append((value, False, value + step, True))
        for lo, lo_open, hi, hi_open in spans:
            if negative:  # mirrored
                yield (
                    None if hi is None else -hi,
                    hi_open,
                    None if lo is None else -lo,
                    lo_open,
                )
            else:
                yield (lo, lo_open, hi, hi_open)


_Span = tuple[Fraction | None, bool, Fraction | None, bool]


def _tighter_low(
    lo: Fraction | None, lo_open: bool, bound: Fraction, bound_open: bool
) -> tuple[Fraction, bool]:
    if lo is None or bound > lo:
        return bound, bound_open
    if bound == lo:
        return lo, lo_open or bound_open
    return lo, lo_open


def _tighter_high(
    hi: Fraction | None, hi_open: bool, bound: Fraction, bound_open: bool
) -> tuple[Fraction, bool]:
    if hi is None or bound < hi:
        return bound, bound_open
    if bound == hi:
        return hi, hi_open or bound_open
    return hi, hi_open


@dataclass(frozen=True, slots=True)
class WsF(Frame):
    count: int = 0

    def first(self) -> frozenset[str]:
        return _WS if self.count < MAX_WHITESPACE else frozenset()

    def step(self, c: str) -> Frame | _Finished | None:
        if c in _WS and self.count < MAX_WHITESPACE:
            return WsF(self.count + 1)
        return None

    @property
    def can_end(self) -> bool:
        return True

    @property
    def alive(self) -> bool:
        return self.count < MAX_WHITESPACE

    def min_left(self, memo: dict[int, int]) -> int:
        return 0


# --- composite frames ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeK(Frame):
    node: Node
    composite = True

    def expand(self, rest: Stack, text: str) -> list[Stack]:
        return start(self.node, rest)

    def min_left(self, memo: dict[int, int]) -> int:
        return min_len(self.node, memo)


@dataclass(frozen=True, slots=True)
class SeqK(Frame):
    node: Seq
    i: int
    composite = True

    def expand(self, rest: Stack, text: str) -> list[Stack]:
        items = self.node.items
        after = rest if self.i + 1 >= len(items) else (SeqK(self.node, self.i + 1), rest)
        return start(items[self.i], after)

    def min_left(self, memo: dict[int, int]) -> int:
        return sum(min_len(n, memo) for n in self.node.items[self.i :])


def _choice(options: list[Stack]) -> list[Stack]:
    """Where the model chooses between several continuations, whitespace may come first."""
    if len(options) < 2:
        return options
    return [(WsF(), s) for s in options]


#: Identical string, object or array items in a row after which an array is closed (a
#: small model repeating itself would otherwise fill the array up to its limit).
LOOP_ITEMS = 3


@dataclass(frozen=True, slots=True)
class ArrK(Frame):
    """After ``[`` (``count`` 0) or after item ``count``, which began at ``start`` in the
    reply; ``recent``: the texts of the items before it."""

    node: Arr
    count: int
    start: int = 0
    recent: tuple[str, ...] = ()
    composite = True

    def expand(self, rest: Stack, text: str) -> list[Stack]:
        node = self.node
        limit = node.max_items if node.max_items is not None else node.cap
        recent = self.recent
        if self.count:
            item = text[self.start :].lstrip(" \t\n\r,")[:_ITEM_KEEP]
            recent = (*recent[-(LOOP_ITEMS - 1) :], item)
        looping = (
            len(recent) == LOOP_ITEMS
            and len(set(recent)) == 1
            and recent[0][:1] in ('"', "{", "[")
            and self.count >= node.min_items
        )
        options: list[Stack] = []
        if (limit is None or self.count < limit) and not looping:
            after: Stack = (ArrK(node, self.count + 1, len(text), recent), rest)
            item_start: Stack = (NodeK(node.item), after)
            options.append(item_start if self.count == 0 else (LitF(", "), item_start))
        if self.count >= node.min_items:
            capped = node.max_items is None and limit is not None and self.count >= limit
            options.append((LitF("]", cap=capped or looping), rest))
        return _choice(options)

    def min_left(self, memo: dict[int, int]) -> int:
        missing = max(0, self.node.min_items - self.count)
        return 1 + missing * (min_len(self.node.item, memo) + 2)


@dataclass(frozen=True, slots=True)
class ObjK(Frame):
    """After ``{`` (nothing ``written``) or after a property; ``idx``: the next property
    that may be written (properties come in schema order)."""

    node: Obj
    idx: int
    written: bool
    composite = True

    def expand(self, rest: Stack, text: str) -> list[Stack]:
        options: list[Stack] = []
        props = self.node.props
        for j in range(self.idx, len(props)):
            p = props[j]
            after: Stack = (ObjK(self.node, j + 1, True), rest)
            options.append((LitF(key_text(p.name, self.written)), (NodeK(p.value), after)))
            if p.required:
                break
        else:
            options.append((LitF("}"), rest))
        return _choice(options)

    def min_left(self, memo: dict[int, int]) -> int:
        return 1 + sum(
            len(key_text(p.name, True)) + min_len(p.value, memo)
            for p in self.node.props[self.idx :]
            if p.required
        )


@dataclass(frozen=True, slots=True)
class MapK(Frame):
    """Inside a free-form object, after ``{`` (``count`` 0) or after member ``count``."""

    node: MapObj
    count: int
    composite = True

    def expand(self, rest: Stack, text: str) -> list[Stack]:
        options: list[Stack] = []
        if self.count < self.node.cap:
            after: Stack = (MapK(self.node, self.count + 1), rest)
            member: Stack = (
                LitF('"'),
                (StrF(_KEY), (LitF(": "), (NodeK(self.node.value), after))),
            )
            options.append(member if self.count == 0 else (LitF(", "), member))
        options.append((LitF("}", cap=self.count >= self.node.cap), rest))
        return _choice(options)

    def min_left(self, memo: dict[int, int]) -> int:
        return 1


_KEY = Str()
_ITEM_KEEP = 256


def start(node: Node, rest: Stack) -> list[Stack]:
    """The stacks that begin ``node`` and continue with ``rest`` (before closure)."""
    if isinstance(node, Lit):
        return [(LitF(node.text, 0, node.special, node.cap), rest)] if node.text else [rest]
    if isinstance(node, Seq):
        return [(SeqK(node, 0), rest)] if node.items else [rest]
    if isinstance(node, Alt):
        return [s for option in node.options for s in start(option, rest)]
    if isinstance(node, Str):
        return [(LitF('"'), (StrF(node), rest))]
    if isinstance(node, Num):
        return [(NumF(node), rest)]
    if isinstance(node, Arr):
        return [(LitF("["), (ArrK(node, 0), rest))]
    if isinstance(node, Obj):
        return [(LitF("{"), (ObjK(node, 0, False), rest))]
    if isinstance(node, MapObj):
        return [(LitF("{"), (MapK(node, 0), rest))]
    if isinstance(node, AnyValue):
        return [s for option in node.options() for s in start(option, rest)]
    if isinstance(node, Ref):
        if node.target is None:
            raise ValueError(f"unresolved reference {node.name}")
        return start(node.target, rest)
    raise TypeError(f"not a grammar node: {node!r}")


def _closure(stack: Stack, out: dict[Stack, None], text: str, depth: int = 0) -> None:
    """Add the configurations ``stack`` stands for after ``text``: composites expanded,
    frames that may end also popped."""
    if depth > _MAX_EXPANSION:
        return
    if stack is None:
        out[None] = None
        return
    frame, rest = stack
    if frame.composite:
        for s in frame.expand(rest, text):
            _closure(s, out, text, depth + 1)
        return
    if frame.alive:
        out[stack] = None
    if frame.can_end:
        _closure(rest, out, text, depth + 1)


def _closed(stacks: Iterable[Stack], text: str) -> Configs:
    out: dict[Stack, None] = {}
    for s in stacks:
        _closure(s, out, text)
    return tuple(out)


def _advance(configs: Configs, text: str) -> Configs:
    """The configurations after the last character of ``text`` (the reply so far)."""
    c = text[-1]
    out: dict[Stack, None] = {}
    for stack in configs:
        if stack is None:
            continue
        frame, rest = stack
        r = frame.step(c)
        if r is None:
            continue
        _closure(rest if r is FINISHED else (r, rest), out, text)  # type: ignore[arg-type]
    return tuple(out)


def _follow(configs: Configs, text: str, more: str) -> tuple[int, Configs]:
    """How many characters of ``more`` the grammar takes after ``text``, and where to."""
    for i in range(len(more)):
        nxt = _advance(configs, text + more[: i + 1])
        if not nxt:
            return i, configs
        configs = nxt
    return len(more), configs


def _stack_min(stack: Stack, memo: dict[int, int]) -> int:
    total = 0
    while stack is not None:
        frame, stack = stack
        total += frame.min_left(memo)
    return total


@dataclass(frozen=True, slots=True)
class Forced:
    """Text the grammar fixes next: ``runs`` of (text, special), and how many closes the
    decoder's own limits forced (``caps``)."""

    runs: tuple[tuple[str, bool], ...] = ()
    caps: int = 0

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.runs)


class Matcher:
    """The configurations of one reply; ``advance`` is its only way forward."""

    def __init__(self, root: Node) -> None:
        self.text = ""  # the reply so far
        self.configs: Configs = _closed(start(root, None), "")
        self._memo: dict[int, int] = {}
        if not self.configs:
            raise ValueError("the grammar accepts nothing")

    @property
    def may_end(self) -> bool:
        """The text so far is a complete reply (the model may stop here)."""
        return None in self.configs

    @property
    def done(self) -> bool:
        """Complete, and nothing could follow."""
        return self.configs == (None,)

    def accepts(self, c: str) -> bool:
        return bool(_advance(self.configs, self.text + c))

    def advance(self, c: str) -> bool:
        """Consume ``c`` if the grammar allows it here (else nothing changes)."""
        nxt = _advance(self.configs, self.text + c)
        if not nxt:
            return False
        self.configs = nxt
        self.text += c
        return True

    def _single_next(self) -> tuple[str, bool, bool] | None:
        """The one character that must come next (with its special and cap flags), or
        None where the model has a choice (or the reply may end)."""
        if None in self.configs:
            return None
        chars: set[str] = set()
        special = cap = False
        for stack in self.configs:
            assert stack is not None
            frame = stack[0]
            first = frame.first()
            if first is None:
                return None
            chars |= first
            if len(chars) > 1:
                return None
            if isinstance(frame, LitF):
                special = special or frame.special
                cap = cap or (frame.cap and frame.i == 0)
            elif isinstance(frame, StrF) and frame.looping:
                cap = True
        if len(chars) != 1:
            return None
        return next(iter(chars)), special, cap

    def take_forced(self) -> Forced:
        """Consume and return the text fixed from here (empty at a choice)."""
        runs: list[list[Any]] = []
        caps = 0
        while (nxt := self._single_next()) is not None:
            c, special, cap = nxt
            self.text += c
            self.configs = _advance(self.configs, self.text)
            caps += cap
            if runs and runs[-1][1] == special:
                runs[-1][0] += c
            else:
                runs.append([c, special])
        return Forced(tuple((t, s) for t, s in runs), caps)

    def has_forced(self) -> bool:
        return self._single_next() is not None

    def repair(self, intent: str = "") -> str:
        """Write towards a complete reply where the model's own choice was not allowed;
        returns the text written. ``intent``: the model's refused text from the refused
        character on. A repair that lets the model's text go on wins (``Alice`` after
        ``[`` of a string array: write ``"``; ``"30"`` for an integer: drop the quote);
        otherwise one character towards the nearest complete reply (close a string, an
        array; the shortest enum member). Raises ValueError when nothing can be written.
        """
        best: tuple[int, int, int, str, Configs] | None = None
        options: list[tuple[str, Configs, str]] = []
        for c in self._repair_candidates():
            nxt = _advance(self.configs, self.text + c)
            if nxt:
                options.append((c, nxt, intent))
        if len(intent) > 1:
            options.append(("", self.configs, intent[1:]))  # drop the refused character
        for order, (written, configs, follow) in enumerate(options):
            taken, after = _follow(configs, self.text + written, follow)
            if not written and not taken:
                continue
            cost = min(_stack_min(st, self._memo) for st in configs)
            key = (-taken, cost, order)
            if best is None or key < best[:3]:
                best = (*key, written + follow[:taken], after)
        if best is None:
            raise ValueError("nothing can be written here")
        self.configs = best[4]
        self.text += best[3]
        return best[3]

    def _repair_candidates(self) -> Iterator[str]:
        seen: set[str] = set()
        # configurations closest to completion first: their preferred characters win ties
        stacks = sorted(
            (s for s in self.configs if s is not None), key=lambda s: _stack_min(s, self._memo)
        )
        for stack in stacks:
            assert stack is not None
            for c in stack[0].repair_chars():
                if c not in seen:
                    seen.add(c)
                    yield c
        for stack in stacks:
            assert stack is not None
            for c in sorted(stack[0].first() or '"]}0'):
                if c not in seen:
                    seen.add(c)
                    yield c

    def min_left(self) -> int:
        """Characters of the shortest way to a complete reply from here."""
        return min((_stack_min(s, self._memo) for s in self.configs), default=0)
