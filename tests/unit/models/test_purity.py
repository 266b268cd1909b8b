"""models/ is pure: no Kafka, Faust, Redis or asyncio, directly or transitively."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import models

FORBIDDEN = ("confluent_kafka", "faust", "aiokafka", "redis", "asyncio", "mode")
ROOT = Path(models.__file__).parent


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.update(a.value for a in node.args if isinstance(a, ast.Constant))
    return names


def is_forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN


def test_no_module_in_models_imports_io_frameworks():
    sources = sorted(ROOT.rglob("*.py"))
    assert len(sources) > 5
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in imported_names(p) if is_forbidden(n))
        for p in sources
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_models_module_loads_no_io_framework():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import models\n"
        "for m in pkgutil.walk_packages(models.__path__, 'models.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT.parent,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_module_is_seen_by_the_scan():
    walked = {m.name for m in pkgutil.walk_packages(models.__path__, "models.")}
    assert "models.merge" in walked and "models.specs.fraud_linear" in walked
