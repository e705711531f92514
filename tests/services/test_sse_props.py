"""Property tests of SSE framing: any payload, with any unicode, comes back intact through
a spec-conforming SSE parser, through openai's own decoder and through naive line
splitting (``str.splitlines``, as httpx's ``iter_lines`` does), whatever the chunking."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from gpt4all_api.services.sse import DONE, sse_event

# Every code point but surrogates (they cannot be UTF-8), with the troublemakers weighted in.
TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from('\n\r\x00\x1b\x85\u2028\u2029\ufeff:"\\ data'),
    ),
    max_size=60,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
PAYLOAD = st.dictionaries(TEXT, JSON, max_size=5)


def parse_sse(stream: bytes) -> list[str]:
    """The WHATWG event-stream parser (data fields only): returns each event's data."""
    text = stream.decode("utf-8")
    text = text.removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events: list[str] = []
    data: list[str] = []
    for line in lines[:-1]:  # the part after the last line break is incomplete
        if line == "":
            if data:
                events.append("\n".join(data))
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
    return events


def parse_naive(stream: bytes) -> list[str]:
    """What a client splitting decoded text with ``str.splitlines`` would see."""
    return [
        line.removeprefix("data: ")
        for line in stream.decode("utf-8").splitlines()
        if line.startswith("data: ")
    ]


def rechunk(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(PAYLOAD, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 10**6)))
def test_events_round_trip(payloads: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(sse_event(p) for p in payloads) + DONE
    expected = [*payloads, "[DONE]"]

    def decode(data: list[str]) -> list[Any]:
        return [d if d == "[DONE]" else json.loads(d) for d in data]

    assert decode(parse_sse(stream)) == expected
    assert decode(parse_naive(stream)) == expected
    events = list(SSEDecoder().iter_bytes(iter(rechunk(stream, cuts))))
    assert decode([e.data for e in events]) == expected


@settings(max_examples=300, deadline=None)
@given(payload=PAYLOAD)
def test_one_event_is_one_line_of_utf8(payload: dict[str, Any]) -> None:
    event = sse_event(payload)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = event[len(b"data: ") : -2].decode("utf-8")
    assert len(body.splitlines()) == 1 and "\r" not in body and "\n" not in body
    assert json.loads(body) == payload


def test_lone_surrogates_do_not_break_the_stream() -> None:
    event = sse_event({"text": "a\ud800b"})
    assert json.loads(event[len(b"data: ") : -2]) == {"text": "a?b"}
