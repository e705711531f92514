"""Stop sequences applied to streamed text, so a stop string never leaks even when the
model produces it split across several tokens."""

from __future__ import annotations


class StopMatcher:
    """Feeds text pieces and releases only text that cannot be the start of a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Return the text that is safe to emit now; sets ``stopped`` when a stop is hit."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        buf = self._held + piece
        # The stop completed first (smallest end; the longest if several end together) is
        # where a character-by-character stream would have stopped: cutting there makes
        # the output independent of how the text was split into pieces.
        found = [(i + len(s), -len(s)) for s in self._stops if (i := buf.find(s)) != -1]
        if found:
            end, neg_len = min(found)
            self.stopped = True
            self._held = ""
            return buf[: end + neg_len]
        keep = self._partial_suffix_len(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """At the end of generation, held text that never became a stop string is emitted."""
        out, self._held = self._held, ""
        return "" if self.stopped else out

    def _partial_suffix_len(self, buf: str) -> int:
        best = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:k]):
                    best = k
                    break
        return best
