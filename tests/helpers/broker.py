"""A test's own local broker: its controller port (to restart it on its ports) and a kill -9."""

from __future__ import annotations

import os
import signal

from prism.stack import kafka as local_kafka
from prism.stack import process
from runtime.settings import Settings


def controller_port(broker: Settings) -> int:
    """The KRaft controller port of the broker under ``broker.state_dir``."""
    text = local_kafka.KafkaPaths.of(broker).config.read_text()
    line = next(x for x in text.splitlines() if x.startswith("controller.quorum.voters="))
    return int(line.rsplit(":", 1)[1])


def kill_broker(broker: Settings) -> None:
    """SIGKILL the broker and wait until its process is gone."""
    pid = local_kafka.running_pid(broker)
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    assert process.wait_gone(pid, local_kafka.MARKER, 20.0)
