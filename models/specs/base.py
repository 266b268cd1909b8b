"""What every model spec provides: a live model and River's learning verbs.

A spec is the contract between a River model and the numbers that travel:
it builds the model with fixed hyper-parameters, learns and scores with
River's vocabulary (``learn_one`` / ``score_one``, ``*_many`` for a
mini-batch), and turns the model into a :class:`~models.summary.Summary`
and back. Everything done to summaries themselves -- checks, merges,
blends -- is its :attr:`ModelSpec.algebra` (:mod:`models.specs.algebra`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from models.specs.algebra import SummaryAlgebra
from models.specs.batch import Batch, Features
from models.summary import Summary

__all__ = ["ModelSpec"]


class ModelSpec(abc.ABC):
    """Base of the named specs; subclasses fill in the model-specific parts."""

    name: ClassVar[str]
    kind: ClassVar[str]
    task: ClassVar[str]
    #: learns only from labelled events (a classifier); anomaly detectors learn from every event.
    supervised: ClassVar[bool] = False
    #: the class of :attr:`algebra`, the operations on this spec's summaries.
    algebra_type: ClassVar[type[SummaryAlgebra]]
    algebra: SummaryAlgebra

    def __init__(self) -> None:
        self.algebra = self.algebra_type(self.name, self.kind, self.params)

    @property
    @abc.abstractmethod
    def params(self) -> dict[str, str]:
        """Hyper-parameters that must agree for two summaries to merge."""

    # -- models ---------------------------------------------------------------
    @abc.abstractmethod
    def new_model(self) -> Any:
        """A fresh model with the spec's fixed hyper-parameters."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook; most specs need nothing
        """Load/compile whatever the batch paths need, before the first event waits on it."""

    # -- learning vocabulary (River's) ----------------------------------------
    @abc.abstractmethod
    def learn_one(self, model: Any, x: Mapping[str, float], y: bool | None = None) -> None:
        """Learn one event (``y`` is ignored by unsupervised specs)."""

    def learn_many(
        self,
        model: Any,
        X: Sequence[Mapping[str, float]] | Sequence[Sequence[float]] | np.ndarray,
        y: Sequence[bool | None] | np.ndarray | None = None,
        *,
        features: Features | None = None,
    ) -> None:
        """Learn a mini-batch in order, as the ``learn_one`` loop would.

        ``X`` is feature dicts, or rows named by ``features`` (one tuple of
        names for a matrix, or one key tuple per row); see
        :class:`~models.specs.batch.Batch`. Specs with a faster path override
        this and must stay equal to the loop, which is this default.
        """
        for x, label in Batch.of(X, y, features).events():
            self.learn_one(model, x, label)

    @abc.abstractmethod
    def score_one(self, model: Any, x: Mapping[str, float]) -> float:
        """Score in [0, 1]; higher = more likely fraud / anomaly."""

    @abc.abstractmethod
    def score_many(self, model: Any, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """Scores of the rows of ``X`` (columns named by ``features``)."""

    # -- state ----------------------------------------------------------------
    @abc.abstractmethod
    def summarize(self, model: Any) -> Summary:
        """The model's learned state as a Summary."""

    @abc.abstractmethod
    def apply(self, summary: Summary, model: Any) -> None:
        """Load ``summary`` into ``model`` in place."""

    def load(self, summary: Summary) -> Any:
        """A fresh model holding ``summary``."""
        model = self.new_model()
        self.apply(summary, model)
        return model
