"""Synthetic industrial sensor readings with failures, wear, drift and link gaps.

Every device reads once per ``period_ms``; readings of all devices are merged
in time order. Ground truth ``label`` is True for readings inside a failure's
precursor window and at the failure itself. After a failure the machine is
down (no readings) for a while and its wear resets; link outages drop a
machine's readings too — the gaps scenario B of the mission is about. Concept
drift at ``drift_at``: sensors are recalibrated (temperature +4 °C, vibration
+15 %) and failures announce themselves in heat and current instead of
vibration. Deterministic for a seed; vectorised per chunk of time steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from prism.data.fraud import DEFAULT_START_MS
from prism.data.iot_world import FEATURES, Plant
from prism.data.labels import LabelPolicy, LateLabels, Record, attach, seeded

__all__ = ["FEATURES", "IotConfig", "generate_iot"]


@dataclass(frozen=True, kw_only=True)
class IotConfig:
    """Hyper-parameters of a synthetic sensor stream (``prism datagen iot``)."""

    events: int
    sites: int = 20
    regions: int = 4
    skew: float = 0.5
    seed: int = 0
    devices_per_site: int = 2
    period_ms: int = 10_000
    drift_at: float = 0.5
    failures_per_machine: float = 2.0
    anomaly_steps: int = 30
    downtime_steps: int = 20
    outages_per_machine: float = 1.5
    outage_steps: int = 60
    start_ms: int = DEFAULT_START_MS
    chunk_size: int = 50_000
    labels: LabelPolicy = field(default_factory=LabelPolicy)

    def __post_init__(self) -> None:
        if min(self.events, self.sites, self.devices_per_site, self.period_ms) < 1:
            raise ValueError("events, sites, devices per site and period must be >= 1")
        if self.regions < 1 or self.regions > self.sites:
            raise ValueError("need 1 <= regions <= sites")
        if not 0.0 <= self.drift_at <= 1.0:
            raise ValueError(f"drift point must be a fraction in [0, 1], got {self.drift_at}")


def generate_iot(config: IotConfig) -> Iterator[list[Record]]:
    """Yield chunks of ``(record_type, record)`` in time order, exactly ``events`` readings."""
    rng, label_rng = seeded(config.seed)
    n_devices = config.sites * config.devices_per_site
    expected_steps = max(4, math.ceil(config.events / n_devices))
    plant = Plant(config, rng, steps=int(expected_steps * 1.6) + 10)
    late = LateLabels(config.labels, label_rng)
    drift_step = int(round(config.drift_at * expected_steps))
    order = np.argsort(plant.phase, kind="stable")
    chunk_steps = max(1, config.chunk_size // n_devices)
    emitted = 0
    for s0 in range(0, plant.steps, chunk_steps):
        s1 = min(s0 + chunk_steps, plant.steps)
        state = plant.machine_state(s0, s1)
        values = plant.readings(state, np.arange(s0, s1) >= drift_step, rng)
        present = ~state["missing"][:, plant.device_machine][:, order]
        rows = _flatten(plant, config, s0, s1, order, present, values[:, order], state)
        take = min(len(rows["ts"]), config.events - emitted)
        events = _records(plant, config, emitted, rows, take)
        ts = rows["ts"][:take]
        emitted += take
        yield attach(config.labels, late, events, ts, rows["label"][:take])
        if emitted >= config.events:
            break
    if config.labels.mode == "late":
        yield late.drain()


def _flatten(
    plant: Plant,
    config: IotConfig,
    s0: int,
    s1: int,
    order: np.ndarray,
    present: np.ndarray,
    values: np.ndarray,
    state: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The present readings of steps ``[s0, s1)`` as flat, time-ordered columns."""
    steps = np.arange(s0, s1)[:, None]
    ts = config.start_ms + steps * config.period_ms + plant.phase[order][None, :]
    device = np.broadcast_to(order[None, :], present.shape)
    label = (state["severity"][:, plant.device_machine][:, order]) > 0
    return {
        "ts": ts[present].astype(np.int64),
        "device": device[present],
        "values": values[present],
        "label": label[present],
        "step": np.broadcast_to(steps, present.shape)[present],
    }


def _records(
    plant: Plant, config: IotConfig, start: int, rows: dict[str, np.ndarray], take: int
) -> list[Record]:
    device = rows["device"][:take]
    machine = plant.device_machine[device]
    sites = plant.site_ids[machine].tolist()
    regions = plant.region_ids[machine].tolist()
    devices = plant.device_ids[device].tolist()
    prefix = f"rd-{config.seed}-"
    return [
        (
            "SensorReading",
            {
                "event_id": f"{prefix}{i:09d}",
                "ts": t,
                "site_id": s,
                "region": r,
                "device_id": d,
                "features": dict(zip(FEATURES, row, strict=True)),
                "label": None,
            },
        )
        for i, t, s, r, d, row in zip(
            range(start, start + take),
            rows["ts"][:take].tolist(),
            sites,
            regions,
            devices,
            rows["values"][:take].round(4).tolist(),
            strict=True,
        )
    ]
