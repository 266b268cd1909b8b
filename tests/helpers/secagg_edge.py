"""``prism`` with an edge that stalls before its masked input: the secure rounds' kill hook.

Usage: ``python secagg_edge.py prism-args...``. The agent joins secure rounds
as usual; when a round asks for its masked input it logs ``stalled before
masked input`` and stops answering (its keys and shares are out), so a test
can SIGKILL it mid-round, at the step where a dropout costs the most: the
merger must rebuild its mask key from its neighbours' shares.
"""

from __future__ import annotations

import sys
import time

from edge_agents.secagg import SecureSender
from prism.cli import main


def plant() -> None:
    def stall(self, mine, record):  # noqa: ANN001, ANN202 - SecureSender._masked's shape
        print(f"stalled before masked input round={mine.round_id}", flush=True)
        while True:
            time.sleep(3600)

    SecureSender._masked = stall  # type: ignore[method-assign]


if __name__ == "__main__":
    plant()
    sys.exit(main(sys.argv[1:]))
