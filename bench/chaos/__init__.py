"""Randomized fault checker (#25 item 2): a seeded fault schedule, a runner, a checker.

``schedule`` is pure (no I/O) so a seed alone replays a run's faults;
``faults`` applies them to real processes; ``check`` proves the invariants
from what is in Kafka and Redis afterwards; ``run`` ties them together
(``make chaos``).
"""
