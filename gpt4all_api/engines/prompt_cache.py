"""What a model context holds, as text, so that a new prompt can continue from it.

There is no tokenize call in the gpt4all C API, so the cache cannot compare token ids as
llama.cpp's server does. It records instead where, in the prompt's text, the context's
token count is known: at the end of each evaluated prompt segment and after each
generated token. A new prompt whose text starts with the text up to such a boundary can
set ``n_past`` back to it and evaluate only the rest.

A prompt is a list of ``Segment``s, each tokenized and evaluated on its own (markup with
special tokens parsed, message contents as plain text). Its cache key is its bytes with a
marker byte before each segment (0xFE text, 0xFF markup: bytes UTF-8 never holds), so
equal keys mean equal segmentation, not only equal text.

*Exact* boundaries are segment ends reused at the start of a segment of the new prompt:
the rest is then evaluated by the same calls as in a fresh evaluation, so the context
ends up with the same token ids and bit-identical values. Other boundaries (inside a
segment, or after generated tokens, whose tokenization a client's resent text need not
have) are only used when exactness is not required.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

TEXT_MARK = 0xFE
MARKUP_MARK = 0xFF


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes evaluated in one call; ``special``: special tokens are parsed in them."""

    data: bytes
    special: bool

    @property
    def key(self) -> bytes:
        return bytes((MARKUP_MARK if self.special else TEXT_MARK,)) + self.data


def prompt_key(segments: list[Segment]) -> bytes:
    return b"".join(s.key for s in segments)


def segment_starts(segments: list[Segment]) -> set[int]:
    """Key offsets where a segment starts (its marker byte), and the key's end."""
    starts: set[int] = set()
    pos = 0
    for s in segments:
        starts.add(pos)
        pos += 1 + len(s.data)
    starts.add(pos)
    return starts


def common_prefix(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """Length of the longest common prefix (binary search over C-level slice compares)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True, slots=True)
class Boundary:
    offset: int  # in the cache key
    n_past: int  # tokens in the context up to there
    exact: bool  # end of an evaluated segment (not a generated token)


@dataclass(slots=True)
class ContextCache:
    """The text-to-token map of one model context (lives with the context, on its slot)."""

    key: bytearray = field(default_factory=bytearray)
    offsets: list[int] = field(default_factory=list)
    n_pasts: list[int] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)

    @property
    def n_past(self) -> int:
        """Tokens up to the last boundary (the context may hold more, past it)."""
        return self.n_pasts[-1] if self.n_pasts else 0

    def clear(self) -> None:
        self.key.clear()
        self.offsets.clear()
        self.n_pasts.clear()
        self.exact.clear()

    def match(
        self, key: bytes, starts: set[int], exact_only: bool, max_n_past: int | None = None
    ) -> Boundary:
        """The longest boundary the new prompt ``key`` can continue from, leaving at least
        one byte to evaluate (sampling needs fresh logits), and holding at most
        ``max_n_past`` tokens. Boundary 0 when none."""
        limit = min(common_prefix(self.key, key), len(key) - 1)
        i = bisect.bisect_right(self.offsets, limit) - 1
        while i >= 0:
            if max_n_past is not None and self.n_pasts[i] > max_n_past:
                pass
            elif not exact_only or (self.exact[i] and self.offsets[i] in starts):
                return Boundary(self.offsets[i], self.n_pasts[i], self.exact[i])
            i -= 1
        return Boundary(0, 0, True)

    def cut(self, boundary: Boundary) -> None:
        """Forget everything after ``boundary`` (the next evaluation overwrites it)."""
        i = bisect.bisect_right(self.offsets, boundary.offset)
        del self.offsets[i:], self.n_pasts[i:], self.exact[i:]
        del self.key[boundary.offset :]

    def add(self, data: bytes, n_past: int, exact: bool) -> None:
        """Record that the context holds ``n_past`` tokens once ``data`` (key bytes) is in."""
        self.key += data
        self.offsets.append(len(self.key))
        self.n_pasts.append(n_past)
        self.exact.append(exact)

    def copy(self) -> ContextCache:
        return ContextCache(
            bytearray(self.key), list(self.offsets), list(self.n_pasts), list(self.exact)
        )

    def extend(self, data: bytes) -> None:
        """Key bytes without a boundary after them (a generated token with no known end)."""
        self.key += data
