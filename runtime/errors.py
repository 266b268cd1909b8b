"""Errors the command line reports as a message and an exit code, not a traceback."""

from __future__ import annotations


class PrismError(Exception):
    """Base of every error a user should see as one clear message."""

    exit_code = 1


class StackError(PrismError):
    """The local Kafka/Redis stack could not be set up, started or stopped."""

    exit_code = 2


class NotFoundError(PrismError):
    """Something the user asked for (a model, a node, a file) does not exist."""

    exit_code = 3


class UsageError(PrismError):
    """A flag value that cannot work (the message says which and why)."""

    exit_code = 2


class PermissionRefusedError(PrismError):
    """The Redis (or Kafka) user may not do this, e.g. a registry write as the read-only user.

    Exit code 77 is ``EX_NOPERM`` in sysexits.h.
    """

    exit_code = 77


class BugStreakError(PrismError):
    """A service stopped itself after a run of internal errors (bugs, not bad input).

    Its exit code (70, ``EX_SOFTWARE`` in sysexits.h) tells the supervisor that
    a restart would hit the same bug: it is not restarted.
    """

    exit_code = 70
