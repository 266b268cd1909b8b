"""Operator controls as an edge sees them: its pin and the model's quarantined versions.

``prism models pin NODE VERSION`` keeps one node on a version (an incident on
some sites, a canary kept back); ``prism models quarantine`` names versions
never to be served again. Both live in the registry (read-only here), read
every ``every_s`` seconds, so they hold across restarts of the edge and of the
merger. A global the controls refuse is not adopted: a quarantined one is a
local dead letter, one skipped for a pin is kept aside and adopted when the
pin goes. Without Redis configured the node has no controls (it logs so).

The decision is :func:`refusal`, pure; :class:`FleetControls` only reads.
"""

from __future__ import annotations

import logging
import time

from models.canary import in_canary
from models.serialization import GlobalModelInfo
from runtime.model_registry.client import RegistryClient, RegistryUnavailableError

log = logging.getLogger(__name__)

__all__ = ["Admission", "FleetControls", "refusal"]


def refusal(info: GlobalModelInfo, pin: int | None, quarantined: set[int]) -> str | None:
    """Why the node must not adopt ``info`` (``quarantined: ...`` / ``pinned ...``), or None.

    >>> from types import SimpleNamespace as NS
    >>> refusal(NS(version=7, restored_from=None), 5, set())
    'pinned to version 5'
    >>> refusal(NS(version=8, restored_from=3), None, {3})
    'quarantined: version 8 serves version 3, quarantined'
    """
    if info.version in quarantined:
        return f"quarantined: version {info.version}"
    if info.restored_from is not None and info.restored_from in quarantined:
        return (
            f"quarantined: version {info.version} serves version {info.restored_from}, quarantined"
        )
    if pin is not None and info.version != pin:
        return f"pinned to version {pin}"
    return None


class Admission:
    """Which global the node may adopt now (pure): a global skipped for a pin, or for a
    staged rollout this node is not a canary of, waits aside and comes back when the pin
    goes (a promotion comes as a new record); a quarantined one is dropped."""

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id
        self.aside: GlobalModelInfo | None = None

    def admit(
        self, info: GlobalModelInfo | None, held: int, pin: int | None, quarantined: set[int]
    ) -> tuple[GlobalModelInfo | None, str | None]:
        """(the global to adopt or None, why ``info`` was refused or None); ``held``: the
        version the node holds."""
        if info is None or (self.aside is not None and self.aside.version > info.version):
            info, self.aside = self.aside, None
        if info is None or info.version <= held:
            return None, None
        why = refusal(info, pin, quarantined)
        canary = getattr(info, "canary", None)
        if why is None and canary is not None and not in_canary(self.node_id, canary):
            why = f"canary-only: version {info.version} goes to a {canary:g} share first"
        if why is None:
            return info, None
        if not why.startswith("quarantined"):
            self.aside = info
        return None, why


class FleetControls:
    """The node's pin and its model's quarantine, refreshed from the registry."""

    def __init__(
        self, client: RegistryClient, *, node_id: str, model_name: str, every_s: float = 1.0
    ) -> None:
        self.client, self.node_id, self.model_name = client, node_id, model_name
        self.every_s = every_s
        self.pin: int | None = None
        self.quarantined: set[int] = set()
        self._due = 0.0
        self._away = False

    def refresh(self) -> None:
        """Read again when due; while Redis is away the last known controls hold."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.every_s
        try:
            pin = self.client.pin_of(self.node_id)
            quarantined = self.client.quarantined(self.model_name)
        except RegistryUnavailableError as e:
            if not self._away:
                log.warning("operator controls not read, the last known hold: %s", e)
            self._away = True
            return
        self._away = False
        if pin != self.pin:
            log.info("node=%s pin=%s", self.node_id, pin)
        self.pin, self.quarantined = pin, quarantined

    def close(self) -> None:
        self.client.close()
