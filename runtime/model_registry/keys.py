"""Registry key names in one place (documented in :mod:`runtime.model_registry`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryKeys:
    prefix: str = "prism"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    def current(self, name: str) -> str:
        return f"{self.prefix}:model:{name}:current"

    def history(self, name: str) -> str:
        return f"{self.prefix}:model:{name}:history"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def checkpoint(self, worker: str) -> str:
        return f"{self.prefix}:checkpoint:{worker}"

    def merger(self, group: str, part: str) -> str:
        """A merge job's own state, e.g. ``merger("prism-merger", "snapshots")``."""
        return f"{self.prefix}:merger:{group}:{part}"
