"""The static plant behind the IoT generator: machines, their habits and their fates.

Each machine (site, an edge node) carries one or more sensors (devices). What
scenario B of the mission needs is here: machines with their own baselines
(so a global model fits none of them well), slow wear, failures announced by a
growing anomaly, link outages that leave gaps, and operating-mode mixes that
differ per machine by ``Dirichlet(skew)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prism.data.splitting import assign_regions, dirichlet_mix, region_names, site_names

if TYPE_CHECKING:
    from prism.data.iot import IotConfig

FEATURES = ("vibration_rms", "kurtosis", "crest_factor", "temperature", "current", "rpm")
# Machine types: pump, fan, compressor, conveyor.
_TYPE_RMS = np.array([2.0, 1.2, 3.5, 0.8])
_TYPE_TEMP = np.array([45.0, 35.0, 60.0, 30.0])
_TYPE_CURRENT = np.array([12.0, 6.0, 25.0, 8.0])
_TYPE_RPM = np.array([2900.0, 1450.0, 3600.0, 960.0])
_MODE_LOAD = np.array([0.2, 0.6, 1.0, 1.3])  # idle, light, nominal, peak
MODE_BLOCK = 30  # readings between operating-mode changes


class Plant:
    """Machines with baselines, wear rates, failure and outage plans over ``steps``."""

    def __init__(self, config: IotConfig, rng: np.random.Generator, steps: int) -> None:
        k, per = config.sites, config.devices_per_site
        self.config, self.steps = config, steps
        self.n_machines, self.n_devices = k, k * per
        self.site_ids = np.array(site_names(k, "machine"), dtype=object)
        region = assign_regions(k, config.regions)
        self.region_ids = np.array(region_names(config.regions), dtype=object)[region]
        self.device_machine = np.repeat(np.arange(k), per)
        self.device_ids = np.array(
            [f"{self.site_ids[m]}-s{j}" for m in range(k) for j in range(per)], dtype=object
        )
        kind = rng.integers(0, len(_TYPE_RMS), k)
        ambient = rng.normal(0.0, 4.0, config.regions)[region]
        self.rms0 = _TYPE_RMS[kind] * rng.lognormal(0.0, 0.25, k)
        self.kurt0 = 3.0 + rng.uniform(0.0, 0.6, k)
        self.temp0 = _TYPE_TEMP[kind] + ambient + rng.normal(0.0, 3.0, k)
        self.current0 = _TYPE_CURRENT[kind] * rng.lognormal(0.0, 0.15, k)
        self.rpm0 = _TYPE_RPM[kind]
        self.wear_rate = rng.uniform(0.2, 0.8, k)
        self.device_gain = rng.normal(1.0, 0.1, self.n_devices)
        self.phase = rng.integers(0, config.period_ms, self.n_devices)
        mix = dirichlet_mix(k, len(_MODE_LOAD), alpha=config.skew, rng=rng)
        blocks = steps // MODE_BLOCK + 1
        cdf = np.cumsum(mix, axis=1)
        u = rng.random((k, blocks, 1))
        self.mode = np.minimum((u > cdf[:, None, :]).sum(axis=2), len(_MODE_LOAD) - 1)
        self._plan(rng)

    def _plan(self, rng: np.random.Generator) -> None:
        """Failures (with a precursor window and downtime) and link outages per machine."""
        c, t = self.config, self.steps
        self.window = max(3, min(c.anomaly_steps, t // 8))
        self.downtime = max(1, min(c.downtime_steps, t // 20))
        outage_len = max(1, min(c.outage_steps, t // 10))
        self.failures: list[np.ndarray] = []
        self.outages: list[list[tuple[int, int]]] = []
        for _ in range(self.n_machines):
            n_fail = rng.poisson(c.failures_per_machine)
            lo = min(self.window + 1, t - 1)
            self.failures.append(np.sort(rng.integers(lo, t, n_fail)))
            n_out = rng.poisson(c.outages_per_machine)
            starts = rng.integers(0, t, n_out)
            lengths = rng.geometric(1.0 / outage_len, n_out)
            self.outages.append(
                [(int(s), int(s + n)) for s, n in zip(starts, lengths, strict=True)]
            )

    def machine_state(self, s0: int, s1: int) -> dict[str, np.ndarray]:
        """Per (step, machine): wear age, precursor severity (0..1) and missing readings."""
        b, k = s1 - s0, self.n_machines
        steps = np.arange(s0, s1)
        age = np.empty((b, k))
        severity = np.zeros((b, k))
        missing = np.zeros((b, k), dtype=bool)
        for m in range(k):
            fails = self.failures[m]
            repairs = np.concatenate([[0], fails + self.downtime])
            age[:, m] = steps - repairs[np.searchsorted(repairs, steps, "right") - 1]
            if len(fails):
                nxt = np.minimum(np.searchsorted(fails, steps, "left"), len(fails) - 1)
                until = fails[nxt] - steps
                severity[:, m] = np.where(until >= 0, np.clip(1.0 - until / self.window, 0, 1), 0)
            for f in fails.tolist():
                missing[max(f + 1, s0) - s0 : max(min(f + 1 + self.downtime, s1) - s0, 0), m] = True
            for a, z in self.outages[m]:
                if a < s1 and z > s0:
                    missing[max(a, s0) - s0 : min(z, s1) - s0, m] = True
        age = np.maximum(age, 0.0)
        load = _MODE_LOAD[self.mode[:, steps // MODE_BLOCK].T]
        return {"age": age, "severity": severity, "missing": missing, "load": load}

    def readings(
        self, state: dict[str, np.ndarray], after: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Sensor values ``(steps, devices, FEATURES)``; ``after`` marks post-drift steps."""
        dm = self.device_machine
        age, sev, load = (state[key][:, dm] for key in ("age", "severity", "load"))
        shape = age.shape
        wear = 1.0 + self.wear_rate[dm] * age / self.steps
        post = after[:, None]
        # Before the drift failures announce themselves in vibration; after it, in heat.
        rms_fault = np.where(post, 1.0 + 0.6 * sev, 1.0 + 2.5 * sev**2)
        calib = np.where(post, 1.15, 1.0)
        rms = self.rms0[dm] * self.device_gain * (0.5 + 0.5 * load) * wear * rms_fault * calib
        rms *= rng.lognormal(0.0, 0.05, shape)
        kurt = self.kurt0[dm] + np.where(post, 1.0, 6.0) * sev + np.abs(rng.normal(0, 0.3, shape))
        temp = self.temp0[dm] + 8.0 * load + 2.0 * age / self.steps
        temp = temp + np.where(post, 4.0 + 15.0 * sev, 5.0 * sev) + rng.normal(0.0, 0.5, shape)
        current = self.current0[dm] * (0.1 + load) * np.where(post, 1.0 + 0.4 * sev, 1.0)
        current = current * rng.lognormal(0.0, 0.02, shape)
        crest = np.sqrt(kurt) * 1.7 * rng.lognormal(0.0, 0.03, shape)
        rpm = self.rpm0[dm] * (0.6 + 0.4 * np.minimum(load, 1.0)) + rng.normal(0.0, 5.0, shape)
        return np.stack([rms, kurt, crest, temp, current, rpm], axis=-1)
