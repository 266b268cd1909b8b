"""An edge's link can be cut by hand (``STATE/link-cut``), the switch ``make chaos`` uses.

Against the real broker: the link is up, the file appears and within a few
probe periods the link is down (the broker still answering); the file goes
and the link is up again. With the file there at start the link starts down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agents.link import Link

pytestmark = pytest.mark.integration


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the link did not change in time"
        time.sleep(0.05)


def test_a_cut_file_takes_the_link_down_and_its_removal_up_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cut = tmp_path / "link-cut"
    link = Link(kafka_bootstrap, probe_every_s=0.2, cut_file=cut)
    try:
        assert link.up
        cut.touch()
        _wait(lambda: not link.up)
        time.sleep(1.0)
        assert not link.up, "the probe brought a cut link up while the file is there"
        cut.unlink()
        _wait(lambda: link.up)
        assert link.transitions == 2
    finally:
        link.close()


def test_a_cut_file_at_start_starts_the_link_down(kafka_bootstrap: str, tmp_path: Path) -> None:
    cut = tmp_path / "link-cut"
    cut.touch()
    link = Link(kafka_bootstrap, probe_every_s=0.2, cut_file=cut)
    try:
        time.sleep(1.0)
        assert not link.up
    finally:
        link.close()
