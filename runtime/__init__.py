"""Shared runtime plumbing: what every service stands on, below the services.

Settings, errors, outage handling for Redis, Kafka security options, GC
tuning and the model registry's reader and writer. The floors, top-down:
``prism`` (CLI, commands, tools) -> ``streams``, ``edge_agents`` (services)
-> ``runtime`` -> ``models`` -> ``schemas``; nothing imports upward
(tests/unit/test_floors.py).
"""
