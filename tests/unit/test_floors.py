"""The floors, top-down: prism (roof) -> streams, edge_agents -> runtime -> models -> schemas.

Every import in a package (module level or inside a function) may point down only;
the two services do not import each other. A package that reaches up makes the
lower floor drag the upper one along (an edge device would need the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("prism", "streams", "edge_agents", "runtime", "models", "schemas")
#: package -> the packages of this project it must not import
FORBIDDEN = {
    "schemas": {"models", "runtime", "streams", "edge_agents", "prism"},
    "models": {"runtime", "streams", "edge_agents", "prism"},
    "runtime": {"streams", "edge_agents", "prism"},
    "streams": {"edge_agents", "prism"},
    "edge_agents": {"streams", "prism"},
    "prism": set(),
}


def imports_of(path: Path) -> set[str]:
    """The top-level package of every module ``path`` imports (absolute imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_a_floor_imports_nothing_above_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under {package}/"
    wrong = {
        str(f.relative_to(ROOT)): sorted(imports_of(f) & FORBIDDEN[package])
        for f in files
        if imports_of(f) & FORBIDDEN[package]
    }
    assert wrong == {}, f"{package}/ imports from a floor above it or a sibling: {wrong}"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prism.cli import main\n    import streams.merger\n")
    assert imports_of(module) == {"prism", "streams"}
