"""#25.2 (CI subset) -- a seeded chaos run: faults at random points, then every invariant.

``bench/chaos/run.py`` (``make chaos``, N minutes, any seed) on a fixed seed
for 75 s: a broker and a Redis of the run's own, a central worker, the
merger and two edge agents under a steady replay. Seed 2457's eight faults
kill -9 the broker, the central worker, the merger and an edge, SIGTERM
Redis and an edge, pause an edge and cut an edge's link -- every fault kind,
every kind of target. The checker must find no violation (each event scored
once by the centre and once by its edge, a repeat only after a kill -9;
each summary merged at most once and none lost; checkpoints =
uninterrupted replay to 1e-9; registry = the acknowledged summaries' exact
statistics; no dead letter) and every scheduled fault must have been applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from chaos import run as chaos  # noqa: E402
from chaos.schedule import KINDS  # noqa: E402

pytestmark = pytest.mark.integration
SEED = 2457
PARAMS = chaos.Params(seconds=75, centrals=1, edges=2, rate=200, edge_rate=40, mean_gap=5)


def test_seeded_faults_under_load_keep_every_invariant(tmp_path: Path) -> None:
    result = chaos.run(SEED, PARAMS, tmp_path)
    assert result.violations == [], result.replay_text()
    assert all(a["applied"] for a in result.applied), result.applied
    survived = result.survived()
    for kind in KINDS:
        assert survived.get(f"kind:{kind}", 0) > 0, (kind, survived)
    for target in ("central", "merger", "edge", "broker", "redis"):
        assert survived.get(f"target:{target}", 0) > 0, (target, survived)
    assert result.figures["learned"] == result.figures["events"] > 0
    assert result.figures["summaries_merged"] > 0
