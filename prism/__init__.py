"""Prism: centralized and federated online learning over Kafka.

The roof: the ``prism`` command line, its commands, ``prism compare``, the data
tools, the local stack and the supervisor. Below it, top-down: the services
(``streams``, ``edge_agents``), the shared runtime plumbing (``runtime``:
settings, errors, the model registry), ``models`` and ``schemas``; nothing
imports upward (tests/unit/test_floors.py).
"""

__version__ = "0.1.0"
