"""Every third-party module the package imports (at any depth, function-level imports
included) comes from a distribution pinned in requirements.txt: what `make run` and the
Docker image install. (The test suite's own environment has more, so a missing pin would
otherwise only show in production.)"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "gpt4all_api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"gpt4all_api", "__future__"}


def _pinned() -> set[str]:
    pins: set[str] = set()
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[\[=<>~! ]", line, maxsplit=1)[0]
            pins.add(re.sub(r"[-_.]+", "-", name).lower())
    return pins


def test_runtime_imports_are_pinned() -> None:
    dists = packages_distributions()
    pinned = _pinned()
    missing = {}
    for module in sorted(_imported_top_levels()):
        providers = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(module, [])}
        if not providers & pinned:
            missing[module] = sorted(providers) or ["(not installed)"]
    assert not missing, f"imported but not in requirements.txt: {missing}"
