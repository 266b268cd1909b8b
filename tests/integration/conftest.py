"""Fixtures of the integration tests (helpers live in ``tests/helpers``)."""

from helpers.services import spawn  # noqa: F401  (a fixture)
