"""The central worker's GC settings: start-up objects frozen, young collections in larger steps."""

from __future__ import annotations

import gc

import pytest

from runtime.gc_tuning import YOUNG_THRESHOLD, tune_for_streaming


@pytest.fixture
def restored_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tuning_freezes_start_up_and_raises_only_the_young_threshold(restored_gc) -> None:
    _, middle, old = gc.get_threshold()
    gc.unfreeze()
    kept = [[i] for i in range(100)]  # live containers made "at start-up"
    tune_for_streaming()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert gc.isenabled()
