"""A model as plain numbers: the unit that travels between nodes and tiers.

A :class:`Summary` holds named numpy arrays indexed by a feature list, the
number of samples behind them, and provenance (node, sequence, base version).
No code travels and no code is loaded, so a summary is safe to receive from an
untrusted node; it is validated on construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from models.errors import InvalidSummaryError


@dataclass(frozen=True)
class Summary:
    """Named arrays + feature index + sample count + provenance.

    Parameters
    ----------
    model_name
        The spec that produced it, e.g. ``"fraud-linear"``.
    kind
        What the tensors mean (``"linear"``, ``"hst"``, ``"gauss"``); only
        summaries of one kind and spec merge.
    features
        Feature index: axis 0 of every per-feature tensor follows this order.
    n_samples
        Events learned since the model was created (>= 0).
    tensors
        Name -> float64/int64 array. Arrays are copied and made read-only.
    params
        Hyper-parameters that must agree for a merge (seed, tree height...).
    node_id, sequence, base_version
        Who sent it, its per-node sequence number, and the global version it
        was trained from (0 = none).

    Examples
    --------
    >>> import numpy as np
    >>> s = Summary("fraud-linear", "linear", ("amount",), 3, {"weights": np.array([0.5])})
    >>> s.tensors["weights"].tolist(), s.n_samples
    ([0.5], 3)
    """

    model_name: str
    kind: str
    features: tuple[str, ...]
    n_samples: int
    tensors: Mapping[str, np.ndarray]
    params: Mapping[str, str] = field(default_factory=dict)
    node_id: str = ""
    sequence: int = 0
    base_version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if len(set(self.features)) != len(self.features):
            raise InvalidSummaryError(f"{self._who()}: duplicate feature names")
        if not isinstance(self.n_samples, int | np.integer) or self.n_samples < 0:
            raise InvalidSummaryError(
                f"{self._who()}: n_samples must be a non-negative integer, got {self.n_samples!r}"
            )
        frozen: dict[str, np.ndarray] = {}
        for name, value in self.tensors.items():
            array = np.array(value, copy=True)
            if array.dtype.kind not in "fiu":
                raise InvalidSummaryError(f"{self._who()}: tensor {name!r} is not numeric")
            if not np.all(np.isfinite(array)):
                raise InvalidSummaryError(f"{self._who()}: tensor {name!r} has NaN or inf values")
            array.setflags(write=False)
            frozen[name] = array
        object.__setattr__(self, "tensors", MappingProxyType(frozen))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def _who(self) -> str:
        return f"summary of {self.model_name!r} from node {self.node_id!r}"

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor, with a clear error when a spec's tensor is missing."""
        try:
            return self.tensors[name]
        except KeyError as e:
            raise InvalidSummaryError(f"{self._who()}: missing tensor {name!r}") from e

    def with_provenance(self, *, node_id: str, sequence: int, base_version: int) -> Summary:
        """The same numbers stamped with who sends them and from which global version."""
        return replace(self, node_id=node_id, sequence=sequence, base_version=base_version)
