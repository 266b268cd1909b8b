"""Prism: centralized and federated online learning over Kafka.

The top-level package holds only the composition root: settings, the ``prism``
command line and the local stack. The domain lives in ``schemas``, ``models``,
``streams`` and ``edge_agents``.
"""

__version__ = "0.1.0"
