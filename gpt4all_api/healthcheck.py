"""``python -m gpt4all_api.healthcheck``: exit 0 when the local server's ``/health`` is 200.

The Docker image's HEALTHCHECK runs this (the slim image has no curl). It only imports the
standard library, so a probe costs a few milliseconds of CPU. The port comes from ``PORT``
(as the server reads it), the host is the loopback interface.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """GET ``url``: (True, detail) on HTTP 200, else (False, why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, f"{resp.status}"
    except urllib.error.HTTPError as exc:  # 503 while the model is loading
        return False, f"{exc.code} {exc.read(200).decode(errors='replace')}"
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return False, str(exc)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = os.environ.get("PORT", "4891")
    url = args[0] if args else f"http://127.0.0.1:{port}/health"
    ok, detail = probe(url)
    print(f"{url}: {detail}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
