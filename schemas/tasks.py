"""The two workloads and what each one means on the wire and in the models.

One table for every service (central learner, edge agents, ``prism compare``):
task -> (events topic, record schema, default model spec).

>>> TASKS["fraud"]
Task(topic='transactions', schema='Transaction', spec='fraud-linear')
>>> default_spec_for_record("SensorReading")
'iot-hst'
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TASKS", "Task", "default_spec_for_record"]


class Task(NamedTuple):
    topic: str  # the events topic (before the prefix)
    schema: str  # the events' record schema
    spec: str  # the default model spec


TASKS: dict[str, Task] = {
    "fraud": Task("transactions", "Transaction", "fraud-linear"),
    "iot": Task("sensor-readings", "SensorReading", "iot-hst"),
}


def default_spec_for_record(record_type: str) -> str:
    """The default model of the task whose events are ``record_type`` records."""
    for _topic, schema, spec in TASKS.values():
        if schema == record_type:
            return spec
    raise ValueError(f"no task has {record_type!r} events")
