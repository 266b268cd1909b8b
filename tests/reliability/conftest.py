"""Every test under tests/reliability/ belongs to the fault-and-abuse suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.runs import kill_leftovers
from helpers.services import spawn  # noqa: F401  (a fixture)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """Services a test started with ``helpers.runs.start_cli`` end with the test."""
    yield
    kill_leftovers()
