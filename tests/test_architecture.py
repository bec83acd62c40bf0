"""The package layout's import directions (docs/architecture.md) and the light core import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "llmpulse"

#: package → the llmpulse packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "events": set(),
    "pricing": {"events"},
    "store": {"events"},
    "pipeline": {"events", "pricing", "store"},
    "sdk": {"events", "pricing"},
    "exporters": {"events", "sdk"},
    "testing": {"events", "pricing", "sdk", "exporters"},
    "alerts": {"events", "store", "sdk", "exporters"},
    "server": {"events", "pipeline", "store", "pricing", "testing", "alerts"},
    "cli": {"events", "pricing", "sdk", "exporters", "server", "pipeline", "store", "testing", "alerts"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "llmpulse" and len(parts) > 1 and not parts[1].startswith("_"):
                found.add(parts[1])
    return found


def _packages() -> list[Path]:
    return sorted(p for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_every_package_has_a_rule() -> None:
    assert {p.name for p in _packages()} <= set(ALLOWED)


@pytest.mark.parametrize("package", [p.name for p in _packages()])
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    bad = []
    for module in sorted((SRC / package).rglob("*.py")):
        for target in _imports(module) - ALLOWED[package] - {package}:
            bad.append(f"{module.relative_to(SRC)} imports llmpulse.{target}")
    assert not bad, "\n".join(bad)


def test_core_import_stays_light() -> None:
    code = (
        "import sys, llmpulse, llmpulse.events, llmpulse.pricing; "
        "heavy = {'sqlalchemy', 'fastapi', 'starlette', 'uvicorn', 'alembic', 'httpx', 'rich'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
