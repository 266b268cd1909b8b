"""Errors of the data commands: a message and an exit code, never a traceback."""

from __future__ import annotations

from runtime.errors import PrismError


class DataError(PrismError):
    """Input data (an event log, a dataset, a CSV) stop the command; the message says where."""

    exit_code = 4
