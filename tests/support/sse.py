"""A strict SSE reader for tests: checks framing, returns the JSON payloads and [DONE]."""

from __future__ import annotations

import json
from typing import Any

import httpx


def read_sse(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """All ``data:`` payloads of a stream; asserts [DONE] is last and nothing follows it."""
    events: list[dict[str, Any]] = []
    done = False
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            assert not done, f"data after [DONE]: {frame!r}"
            assert frame.startswith("data: "), frame
            data = frame[len("data: ") :]
            if data == "[DONE]":
                done = True
            else:
                events.append(json.loads(data))
    assert buffer == "", f"unterminated frame {buffer!r}"
    return events, done


def post_stream(base_url: str, path: str, body: dict[str, Any]) -> tuple[list[dict], bool]:
    with httpx.stream("POST", base_url + path, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return read_sse(r)


def read_response_events(response: httpx.Response) -> list[dict[str, Any]]:
    """A Responses API stream: every frame exactly ``event: <type>`` then ``data: <json>``
    with the same type, no ``[DONE]``; returns the payloads."""
    events: list[dict[str, Any]] = []
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            lines = frame.split("\n")
            assert len(lines) == 2, frame
            assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
            payload = json.loads(lines[1][len("data: ") :])
            assert payload["type"] == lines[0][len("event: ") :], frame
            events.append(payload)
    assert buffer == "", f"unterminated frame {buffer!r}"
    return events
