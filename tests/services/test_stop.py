"""StopMatcher: stop strings never leak, however the text is split into tokens."""

from __future__ import annotations

import pytest

from gpt4all_api.services.stop import StopMatcher


def run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = "".join(m.feed(p) for p in pieces)
    return out + m.flush(), m.stopped


@pytest.mark.parametrize(
    ("pieces", "stops", "expected", "stopped"),
    [
        (["Hello", " world"], [], "Hello world", False),
        (["Hello", " wor", "ld", "!"], ["world"], "Hello ", True),
        (["a", "b", "c"], ["bc"], "a", True),
        (["ab", "c"], ["abc", "b"], "a", True),  # earliest occurrence wins
        (["x\n", "\nUser:"], ["\n\n"], "x", True),
        (["tin", "y"], ["tiny test"], "tiny", False),  # partial prefix released at the end
        (["<|im", "_end|>more"], ["<|im_end|>"], "", True),
        (["aaa"], ["aab"], "aaa", False),
    ],
)
def test_stop_matching(pieces: list[str], stops: list[str], expected: str, stopped: bool) -> None:
    assert run(pieces, stops) == (expected, stopped)


def test_held_text_is_released_as_soon_as_it_cannot_match() -> None:
    m = StopMatcher(["END"])
    assert m.feed("The E") == "The "
    assert m.feed("ND") == ""
    assert m.stopped
    m2 = StopMatcher(["END"])
    assert m2.feed("The E") == "The "
    assert m2.feed("xit") == "Exit"


def test_nothing_after_stop() -> None:
    m = StopMatcher(["."])
    assert m.feed("One. Two.") == "One"
    assert m.feed("Three") == ""
    assert m.flush() == ""
