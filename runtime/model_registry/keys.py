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

    def quarantine(self, name: str) -> str:
        """Set of ``name``'s versions never to be served again (``prism models quarantine``)."""
        return f"{self.prefix}:model:{name}:quarantine"

    def rollback(self, name: str) -> str:
        """Hash: an operator's pending rollback of ``name`` (to, reason, at); the merger
        deletes it when it has published or refused it."""
        return f"{self.prefix}:model:{name}:rollback"

    @property
    def pins(self) -> str:
        """Hash: node id -> the global version it stays on (``prism models pin``)."""
        return f"{self.prefix}:pins"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def checkpoint(self, worker: str) -> str:
        return f"{self.prefix}:checkpoint:{worker}"

    def shadow(self, group: str) -> str:
        """A shadow job's totals and offsets, one hash field per scores partition."""
        return f"{self.prefix}:shadow:{group}"

    def shadows(self) -> str:
        """The pattern every shadow job's key matches (`prism status` reads them all)."""
        return f"{self.prefix}:shadow:*"

    def merger(self, group: str, part: str) -> str:
        """A merge job's own state, e.g. ``merger("prism-merger", "snapshots")``."""
        return f"{self.prefix}:merger:{group}:{part}"
