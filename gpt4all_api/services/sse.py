"""Server-Sent Events framing, as OpenAI streams: ``data: {json}\\n\\n`` and a final [DONE]."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"

#: Characters that ``str.splitlines`` treats as line breaks but JSON leaves raw: clients that
#: split decoded text into lines (httpx's ``iter_lines`` does) would cut an event in two.
#: Inside JSON strings (the only place they can be) the ``\\uXXXX`` escape is equivalent.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse_event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event: compact JSON on a single line (no raw CR, LF or line separator)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS)
    # A lone surrogate cannot be UTF-8: replace it rather than fail mid-stream.
    return b"data: " + text.encode("utf-8", "replace") + b"\n\n"
