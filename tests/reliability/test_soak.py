"""#10.9 (fast subset) -- a steady load: consumer lag and every service's memory stay flat.

The full measurement is ``bench/soak.py`` (30 minutes at 80 % of the central
learner's maximum sustained at the head, found in the same run; figures in
docs/performance.md). Here the same
code runs the central worker, the merge job and an edge agent for 45 s at a
fixed rate well inside the worker's capacity on a 2-core CI machine, and
checks the verdicts the bench prints: the fitted lag trend over the steady
part grows by less than half a second of input, each RSS trend by less than
5 % of its mean, and no service exits under load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.settings import Settings

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import soak  # noqa: E402

pytestmark = pytest.mark.integration


def test_steady_load_keeps_lag_and_memory_flat(test_settings: Settings, tmp_path: Path) -> None:
    result = soak.soak(test_settings, rate=800, seconds=45, edges=1, edge_rate=100,
                       workdir=tmp_path)  # fmt: skip
    assert result["seconds"] >= 40, result  # the replay ran the whole time
    assert len(result["lag_series"]) >= 35
    assert result["lag_flat"], result
    assert set(result["rss"]) == {"central", "merger", "edge-0"}
    assert result["rss_flat"], result["rss"]
