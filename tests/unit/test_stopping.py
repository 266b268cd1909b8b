"""SIGTERM and SIGINT ask every service loop to stop at its next check, never kill it."""

from __future__ import annotations

import os
import signal

import pytest

from edge_agents.agent import EdgeAgent
from runtime.stopping import GracefulStop
from streams.central.kafka_loop import KafkaLoop
from streams.merger.loop import MergerLoop
from streams.shadow.loop import ShadowLoop


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_flag_and_the_process_lives(signum, restore_handlers, caplog):
    loop = GracefulStop()
    loop.install_signal_handlers()
    caplog.set_level("INFO", logger="runtime.stopping")
    os.kill(os.getpid(), signum)  # delivered before kill returns to Python code
    assert loop.stopping
    assert signal.Signals(signum).name in caplog.text
    assert loop.stop_reason in caplog.text


@pytest.mark.parametrize("cls", [KafkaLoop, MergerLoop, ShadowLoop, EdgeAgent])
def test_every_service_loop_stops_gracefully(cls):
    assert issubclass(cls, GracefulStop)
    assert cls.stop_reason != GracefulStop.stop_reason  # each says what it finishes
    loop = cls.__new__(cls)  # the flag alone: no broker needed to check the contract
    loop._stopping = False
    loop.stop()
    assert loop._stopping
