"""The README's main job, end to end, on a stack of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_STATE_DIR"] = str(tmp_path / "state")
    result = subprocess.run(
        [sys.executable, "-m", "prism.cli", "demo", "--events", "3000", "--sites", "4",
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "read back 3000 transactions" in out
    assert "merged with all 4 edges; central model published" in out
    # the central learner's shards, as the merger recorded them (`prism models nodes` rows)
    assert "prism-central-fraud/p" in out
    assert out.count("edge-") >= 4  # `prism models nodes` rows
    for architecture in ("centralized", "federated", "hybrid", "local"):
        assert f"\n{architecture} " in out  # the `prism compare` table
    png = tmp_path / "out" / "compare.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "stopping kafka, redis" in out
    assert not (tmp_path / "state" / "stack.env").exists()
    assert not (tmp_path / "state" / "up" / "supervisor.pid").exists()
