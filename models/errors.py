"""The one family of errors that models/ raises on bad input.

Every public function validates its inputs and raises a subclass of
:class:`ModelError` with a message that says what was wrong; no
ZeroDivisionError or numpy warning escapes.
"""

from __future__ import annotations


class ModelError(ValueError):
    """Base of every models/ error."""


class InvalidSummaryError(ModelError):
    """A summary is malformed: NaN/inf, negative or zero counts, wrong shapes."""


class UnknownLayoutError(InvalidSummaryError):
    """A packed summary names its layout by id only, and this receiver does not hold it."""


class DeltaBaseError(InvalidSummaryError):
    """A global model sent as a delta from a version this node does not hold."""


class IncompatibleSummariesError(ModelError):
    """Summaries cannot be merged: different model kinds, specs or hyper-parameters."""


class UnknownSpecError(ModelError):
    """No model spec or strategy is registered under that name."""


class StaleUpdateError(ModelError):
    """An asynchronous update is older than the staleness bound allows."""
