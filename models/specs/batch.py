"""One shape for a mini-batch of events, whatever shape the caller holds it in.

``ModelSpec.learn_many`` takes feature dicts (maybe sparse), a matrix whose
columns ``features`` names, or value rows with one key tuple each -- the
central learner already holds its events that way, since it scores from
them. :meth:`Batch.of` turns all three into key tuples and value rows, so a
spec has one batch path to write and keep equal to its ``learn_one`` loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from models.errors import ModelError

__all__ = ["Batch", "Features"]

Features = Sequence[str] | Sequence[tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Batch:
    """Events in learn order: a key tuple and a value row each, and their labels.

    Examples
    --------
    >>> b = Batch.of([{"a": 1.0}, {"b": 2.0, "a": 3.0}], [True, False])
    >>> len(b), sorted(b.in_batch()), b.dense(("a", "b")).tolist()
    (2, ['a', 'b'], [[1.0, nan], [3.0, 2.0]])
    >>> Batch.of(np.eye(2), features=("a", "b")).columns
    ('a', 'b')
    """

    keys: Sequence[tuple[str, ...]]
    values: Sequence[Sequence[float]] | np.ndarray
    labels: Sequence[bool | None]
    #: the key tuple of every row when the caller gave a matrix (``values`` is then 2-D).
    columns: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        X: Sequence[Mapping[str, float]] | Sequence[Sequence[float]] | np.ndarray,
        y: Sequence[bool | None] | np.ndarray | None = None,
        features: Features | None = None,
    ) -> Batch:
        """The batch of ``X`` with labels ``y`` (all None when not given).

        ``features`` says what ``X`` is: None, feature dicts; a sequence of
        names, a matrix with one column per name; one key tuple per row,
        value rows (the central learner's shape).
        """
        columns: tuple[str, ...] | None = None
        if features is None:
            dicts = cast(Sequence[Mapping[str, float]], X)
            keys: Sequence[tuple[str, ...]] = [tuple(x) for x in dicts]
            values: Sequence[Sequence[float]] | np.ndarray = [list(x.values()) for x in dicts]
        elif len(features) and not isinstance(features[0], str):
            keys = cast(Sequence[tuple[str, ...]], features)
            values = cast(Sequence[Sequence[float]], X)
        else:
            columns = tuple(cast(Sequence[str], features))
            values = np.asarray(X, dtype=np.float64)
            if values.ndim == 1 and values.size == 0:  # no rows at all
                values = values.reshape(0, len(columns))
            if values.ndim != 2 or values.shape[1] != len(columns):
                raise ModelError(f"X must have one column per feature ({len(columns)})")
            keys = [columns] * len(values)
        labels = [None] * len(values) if y is None else y
        if not len(keys) == len(values) == len(labels):
            raise ModelError(
                f"a batch of {len(values)} rows has {len(keys)} key tuples and {len(labels)} labels"
            )
        return cls(keys, values, labels, columns)

    def __len__(self) -> int:
        return len(self.keys)

    def events(self) -> Iterator[tuple[dict[str, float], bool | None]]:
        """``(x, y)`` per event, as ``learn_one`` takes them."""
        rows = self.values.tolist() if isinstance(self.values, np.ndarray) else self.values
        for k, v, label in zip(self.keys, rows, self.labels, strict=True):
            yield dict(zip(k, v, strict=True)), label

    def in_batch(self) -> set[str]:
        """Every feature some event carries."""
        distinct = {id(k): k for k in self.keys}.values()  # one tuple per feature set, mostly
        return set().union(*distinct)

    def dense(self, features: Sequence[str]) -> np.ndarray:
        """Rows over ``features`` (a superset of :meth:`in_batch`); NaN where an event lacks one."""
        keys, values = self.keys, self.values
        X = np.full((len(keys), len(features)), np.nan)
        first = keys[0]
        if all(k is first or k == first for k in keys):  # the common case: one key order for all
            rows = np.array(values, dtype=np.float64).reshape(len(keys), len(first))
            X[:, [features.index(f) for f in first]] = rows
            return X
        index = {f: i for i, f in enumerate(features)}
        for row, k, v in zip(X, keys, values, strict=True):
            row[[index[f] for f in k]] = v
        return X
