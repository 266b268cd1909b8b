"""The two workloads and what each one means on the wire and in the models.

One table for every service (central learner, edge agents, ``prism compare``):
task -> (events topic, record schema, default model spec).

>>> TASKS["fraud"]
('transactions', 'Transaction', 'fraud-linear')
>>> default_spec_for_record("SensorReading")
'iot-hst'
"""

from __future__ import annotations

__all__ = ["TASKS", "default_spec_for_record"]

TASKS: dict[str, tuple[str, str, str]] = {
    "fraud": ("transactions", "Transaction", "fraud-linear"),
    "iot": ("sensor-readings", "SensorReading", "iot-hst"),
}


def default_spec_for_record(record_type: str) -> str:
    """The default model of the task whose events are ``record_type`` records."""
    for _topic, schema, spec in TASKS.values():
        if schema == record_type:
            return spec
    raise ValueError(f"no task has {record_type!r} events")
