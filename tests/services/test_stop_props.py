"""Property tests of StopMatcher: the text streamed out is exactly the text cut at the first
point where a stop sequence is complete, however the text is split into pieces, and no
stop sequence (nor any text after it) ever leaves the matcher."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpt4all_api.services.stop import StopMatcher

# A small alphabet makes stop sequences actually occur (and overlap) in the text.
ALPHABET = st.sampled_from("ab\n<|>é😀")
TEXT = st.text(ALPHABET, max_size=40)
STOPS = st.lists(st.text(ALPHABET, min_size=1, max_size=6), max_size=4)


def reference(text: str, stops: list[str]) -> tuple[str, bool]:
    """Character by character: stop as soon as some stop sequence is complete, and cut at
    its start (the longest one, if several complete at the same character)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - max(map(len, done))], True
    return text, False


@st.composite
def split(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(data=st.data(), text=TEXT, stops=STOPS)
@example(data=None, text="abc", stops=["abc", "b"])
def test_output_is_the_reference_cut_whatever_the_split(
    data: st.DataObject | None, text: str, stops: list[str]
) -> None:
    pieces = data.draw(split(text)) if data is not None else [text]
    expected, expected_stopped = reference(text, stops)
    matcher = StopMatcher(stops)
    emitted = ""
    for piece in pieces:
        emitted += matcher.feed(piece)
        # never emits what it would later have to take back
        assert expected.startswith(emitted)
    emitted += matcher.flush()
    assert emitted == expected
    assert matcher.stopped == expected_stopped
    for s in stops:
        assert s not in emitted


@settings(max_examples=200, deadline=None)
@given(text=TEXT, stops=STOPS, tail=TEXT)
def test_nothing_comes_out_after_a_stop(text: str, stops: list[str], tail: str) -> None:
    matcher = StopMatcher(stops)
    matcher.feed(text)
    if matcher.stopped:
        assert matcher.feed(tail) == ""
        assert matcher.flush() == ""


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(TEXT, max_size=8))
def test_without_stops_text_passes_through_unchanged_and_at_once(pieces: list[str]) -> None:
    matcher = StopMatcher([])
    assert [matcher.feed(p) for p in pieces] == pieces
    assert matcher.flush() == ""
    assert not matcher.stopped
