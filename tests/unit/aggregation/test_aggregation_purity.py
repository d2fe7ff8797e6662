"""The aggregation engine imports nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import worker.aggregation

FORBIDDEN = (
    "convex",
    "httpx",
    "structlog",
    "tenacity",
    "redis",
    "worker.gateway",
    "requests",
    "socket",
    "logging",
)
PACKAGE = Path(worker.aggregation.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


class TestPurity:
    """Every module of worker/aggregation avoids network, logging and retry libraries."""

    @pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
    def test_no_forbidden_imports(self, path: Path) -> None:
        """No import of a forbidden module or one of its submodules."""
        bad = {n for n in _imports(path) for f in FORBIDDEN if n == f or n.startswith(f + ".")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
