"""``prism replay``'s bounded wait for Kafka, on a port where no broker listens.

The broker is *absent* here (nothing listens on the port), not faked: the
reliability test (tests/reliability/test_replay_broker_kills.py) covers a real
broker that is down at the start, killed -9 and restarted.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from prism.data.replay import GaveUp, ReplayOptions, ReplaySummary, Sender
from runtime.errors import StackError
from runtime.kafka_config import replay_producer_config


@pytest.fixture
def nobody() -> str:
    """A 127.0.0.1 address with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_the_producer_never_expires_a_record_by_itself() -> None:
    assert replay_producer_config("x:1")["message.timeout.ms"] == 0
    assert replay_producer_config("x:1")["enable.idempotence"] is True
    assert replay_producer_config("x:1")["acks"] == "all"


def test_an_absent_broker_is_waited_for_then_named(nobody: str, capsys) -> None:
    sender = Sender(replay_producer_config(nobody), wait_s=2.0)
    start = time.monotonic()
    try:
        with pytest.raises(
            StackError, match=r"cannot reach Kafka: after waiting 2 s \(--wait-broker\)"
        ):
            sender.check({"t"})
    finally:
        sender.close()
    assert 2.0 <= time.monotonic() - start < 12.0
    assert f"waiting up to 2 s for Kafka at {nobody} (--wait-broker)" in capsys.readouterr().err


def test_records_nobody_acknowledges_are_given_up_and_counted(nobody: str) -> None:
    sender = Sender(replay_producer_config(nobody), wait_s=1.5)
    try:
        sender.send([("t", b"k", b"v%d" % i, 0) for i in range(40)], None, 0)
        assert sender.outstanding == 40
        start = time.monotonic()
        with pytest.raises(GaveUp) as e:
            sender.flush()
        assert e.value.outstanding == 40
        assert 1.5 <= time.monotonic() - start < 8.0
        sender.abandon()
        assert (sender.failed, sender.outstanding, sender.gave_up) == (40, 0, True)
    finally:
        sender.close()


def test_the_failure_line_names_how_many_and_why() -> None:
    assert ReplaySummary(events=10).failure() is None
    failed = ReplaySummary(events=10, failed=3).failure()
    assert failed == "replay: 3 of 10 records not delivered (see the delivery errors above)"
    given_up = ReplaySummary(events=10, failed=4, gave_up_after=8.0).failure() or ""
    assert given_up.startswith("replay: 4 of 10 records sent not delivered: Kafka acknowledged")
    assert "8 s (--wait-broker)" in given_up


def test_wait_broker_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--wait-broker"):
        ReplayOptions(path=tmp_path / "x.avro", wait_broker=0)


def test_a_listener_that_closes_the_connection_is_named_without_the_long_wait(capsys) -> None:
    """Plain text spoken to a SASL / TLS listener: the broker is there, waiting cannot help."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    done = threading.Event()

    def close_each() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    sender = Sender(replay_producer_config(address), wait_s=120.0)
    start = time.monotonic()
    try:
        with pytest.raises(StackError, match="it closes the connection") as e:
            sender.check({"t"})
    finally:
        sender.close()
        done.set()
        thread.join(2)
        server.close()
    assert 15.0 <= time.monotonic() - start < 40.0
    assert "set PRISM_KAFKA_SECURITY_PROTOCOL" in str(e.value)
