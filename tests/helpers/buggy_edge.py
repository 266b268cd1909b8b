"""``prism`` with a bug planted in the edge learner: the integration tests' fault hook.

Usage: ``python buggy_edge.py IDS_FILE prism-args...``. Scoring an event whose id
is a line of IDS_FILE raises ``ZeroDivisionError`` -- an internal error, not a bad
record -- so a test can drive the agent's bug boundary against the real broker.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agents.learner import EdgeLearner
from prism.cli import main


def plant(ids: set[str]) -> None:
    score = EdgeLearner.score

    def buggy(self, x, now_ms, linked, event_id=None, *args, **kwargs):
        if event_id in ids:
            raise ZeroDivisionError(f"planted bug on {event_id}")
        return score(self, x, now_ms, linked, event_id, *args, **kwargs)

    EdgeLearner.score = buggy  # type: ignore[method-assign]


if __name__ == "__main__":
    plant(set(Path(sys.argv[1]).read_text().split()))
    sys.exit(main(sys.argv[2:]))
