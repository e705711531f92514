"""Operator commands for the models directory: ``list``, ``pull`` and ``rm``.

Registered on ``python -m gpt4all_api.model_store`` (and ``python -m gpt4all_api models``)
next to ``fetch-default``. They read MODELS_DIR and CATALOG_URL like the server does
(environment, then ``.env``); ``--models-dir`` / ``--catalog-url`` override. Tables and
paths go to stdout, progress bars and errors to stderr; exit status 1 on failure.

A running server notices the changes by itself: it lists the directory on every lookup,
so a pulled model is served at once and a removed one is no longer offered (an engine
already loaded from a removed file is unloaded once idle, with the LRU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt4all_api.model_store import DEFAULT_MODELS_DIR
from gpt4all_api.model_store.directory import (
    InvalidModelId,
    LocalModel,
    ModelDirectory,
    legacy_models_hint,
    validate_model_id,
)


@dataclass(frozen=True)
class _Where:
    models_dir: Path
    builtin_dir: Path | None  # BUILTIN_MODELS_DIR: read-only, listed after models_dir
    catalog_url: str
    timeout: float

    def directory(self, with_builtin: bool = True) -> ModelDirectory:
        extra = [self.builtin_dir] if with_builtin and self.builtin_dir else []
        return ModelDirectory(self.models_dir, extra)


def _settings_values() -> _Where:
    """MODELS_DIR, BUILTIN_MODELS_DIR, CATALOG_URL, CATALOG_TIMEOUT as the server reads them."""
    from pydantic import ValidationError

    from gpt4all_api.settings import Settings

    try:
        s = Settings()
        return _Where(s.models_dir, s.builtin_models_dir, s.catalog_url, s.catalog_timeout)
    except ValidationError:  # unrelated settings may be invalid; use the raw values
        from gpt4all_api.model_store.catalog import DEFAULT_CATALOG_URL

        env = os.environ
        builtin = env.get("BUILTIN_MODELS_DIR")
        return _Where(
            Path(env.get("MODELS_DIR") or DEFAULT_MODELS_DIR),
            Path(builtin) if builtin else None,
            env.get("CATALOG_URL") or DEFAULT_CATALOG_URL,
            float(env.get("CATALOG_TIMEOUT") or 10.0),
        )


def _resolve(args: argparse.Namespace) -> _Where:
    where = _settings_values()
    return _Where(
        args.dir or where.models_dir,
        None if args.dir else where.builtin_dir,  # --models-dir means that directory only
        getattr(args, "catalog_url", None) or where.catalog_url,
        where.timeout,
    )


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _local_row(m: LocalModel) -> dict[str, Any]:
    s = m.summary
    return {
        "id": m.id,
        "capabilities": m.capabilities.names() if m.usable else [],
        "architecture": s.architecture if s else None,
        "context_length": s.context_length if s else None,
        "size_bytes": m.size,
        "file": m.path.name,
        "error": m.error,
    }


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cmd_list(args: argparse.Namespace) -> int:
    # The table says why a file is unusable; the scan's log warnings would repeat it.
    logging.getLogger("gpt4all_api.model_store.directory").setLevel(logging.ERROR)
    where = _resolve(args)
    models_dir, catalog_url, timeout = where.models_dir, where.catalog_url, where.timeout
    local = where.directory().scan()
    hint = legacy_models_hint(models_dir)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    catalog: list[Any] = []
    if args.catalog:
        from gpt4all_api.model_store.catalog import CatalogError, fetch_catalog

        try:
            catalog = fetch_catalog(catalog_url, timeout)
        except CatalogError as exc:
            return _fail(f"{exc}. Local models: {', '.join(local) or 'none'}.")
    if args.json:
        out: dict[str, Any] = {
            "models_dir": str(models_dir),
            "local": [_local_row(m) for m in local.values()],
        }
        if args.catalog:
            out["catalog"] = [
                {
                    "id": e.id,
                    "name": e.name,
                    "embedding": e.embedding,
                    "size_bytes": e.filesize,
                    "ram_required_gb": e.ram_required_gb,
                    "downloaded": e.id in local,
                }
                for e in catalog
            ]
        print(json.dumps(out, indent=2))
        return 0
    print(f"# {models_dir}" + (f" (then {where.builtin_dir})" if where.builtin_dir else ""))
    if local:
        rows = [["ID", "KIND", "ARCH", "CTX", "SIZE", "STATUS"]]
        for m in local.values():
            s = m.summary
            kind = "embedding" if m.usable and m.capabilities.embeddings else "chat"
            rows.append(
                [
                    m.id,
                    kind if m.usable else "-",
                    s.architecture if s else "-",
                    str(s.context_length or "-") if s else "-",
                    _size(m.size),
                    "ok" if m.usable else f"unusable: {m.error}",
                ]
            )
        _print_table(rows)
    else:
        print("(no models)")
    if args.catalog:
        print(f"\n# catalog {catalog_url}")
        rows = [["ID", "KIND", "SIZE", "RAM", "LOCAL"]]
        for e in catalog:
            rows.append(
                [
                    e.id,
                    "embedding" if e.embedding else "chat",
                    _size(e.filesize),
                    f"{e.ram_required_gb:g} GB" if e.ram_required_gb else "-",
                    "yes" if e.id in local else "",
                ]
            )
        _print_table(rows)
    return 0


class _Bar:
    """A tqdm progress bar fed by ``download_entry``'s progress callback."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled, self.bar = name, enabled, None
        self.done = 0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=self.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
            )
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_pull(args: argparse.Namespace) -> int:
    from gpt4all_api.model_store.catalog import (
        CatalogError,
        DownloadError,
        download_entry,
        fetch_catalog,
        find_entry,
    )

    where = _resolve(args)
    models_dir, catalog_url, timeout = where.models_dir, where.catalog_url, where.timeout
    try:
        model_id = validate_model_id(args.name)
    except InvalidModelId as exc:
        return _fail(str(exc))
    local = where.directory().scan()
    present = local.get(model_id)
    if present is not None and present.usable and not args.force:
        print(f"{model_id} is already in {present.path.parent} (use --force to download again)",
              file=sys.stderr)  # fmt: skip
        print(present.path)
        return 0
    try:
        entry = find_entry(fetch_catalog(catalog_url, timeout), model_id)
    except CatalogError as exc:
        usable = [i for i, m in local.items() if m.usable]
        return _fail(f"{exc}. Local models: {', '.join(usable) or 'none'}.")
    if entry is None:
        return _fail(f"'{model_id}' is not in the catalog at {catalog_url}.")
    bar = _Bar(entry.filename, enabled=not args.quiet)
    try:
        path = download_entry(entry, models_dir, progress=bar, timeout=timeout)
    except DownloadError as exc:
        return _fail(str(exc))
    finally:
        bar.close()
    print(path)
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    where = _resolve(args)
    models_dir = where.models_dir
    local = where.directory(with_builtin=False).scan()  # baked-in models are read-only
    status = 0
    for name in args.names:
        try:
            model_id = validate_model_id(name)
        except InvalidModelId as exc:
            status = _fail(str(exc))
            continue
        entry = local.get(model_id)
        if entry is None:
            have = ", ".join(local) or "none"
            status = _fail(f"'{model_id}' is not in {models_dir} (have: {have})")
            continue
        try:
            entry.path.unlink()  # a symlink: only the link goes
        except OSError as exc:
            status = _fail(f"cannot remove {entry.path}: {exc}")
            continue
        print(entry.path)
    return status


def add_commands(sub: Any) -> None:
    """Register ``list``, ``pull`` and ``rm`` on an argparse sub-parser group."""

    def common(p: argparse.ArgumentParser, catalog: bool = True) -> None:
        p.add_argument(
            "--models-dir",
            dest="dir",
            type=Path,
            default=None,
            help="models directory (default: MODELS_DIR from the environment or .env)",
        )
        if catalog:
            p.add_argument(
                "--catalog-url",
                default=None,
                help="catalog (models3.json) URL (default: CATALOG_URL, else gpt4all.io)",
            )

    p = sub.add_parser(
        "list",
        help="list the local models (and, with --catalog, the gpt4all catalog)",
        description="List the GGUF files in the models directory with their kind, "
        "architecture, trained context and size; unusable files say why.",
    )
    common(p)
    p.add_argument("--catalog", action="store_true", help="also list the catalog's models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "pull",
        help="download a model from the gpt4all catalog (checksum verified)",
        description="Download a catalog model into the models directory, with a progress "
        "bar; the size and MD5/SHA-256 from the catalog and the GGUF header are verified "
        "before the file appears.",
    )
    common(p)
    p.add_argument("name", help="model id or file name, e.g. Llama-3.2-1B-Instruct-Q4_0")
    p.add_argument("--force", action="store_true", help="download even if already present")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pull)

    p = sub.add_parser(
        "rm",
        help="delete model files from the models directory",
        description="Delete model files (by id) from the models directory; a symlink is "
        "removed, not its target.",
    )
    common(p, catalog=False)
    p.add_argument("names", nargs="+", metavar="name", help="model ids or file names")
    p.set_defaults(func=_cmd_rm)
