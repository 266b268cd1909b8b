"""Session fixtures: one REAL local Kafka broker and Redis for the whole run.

The stack starts lazily, only when an integration test asks for it, in a
temporary state dir so it never touches a developer's own `prism stack`. When
PRISM_KAFKA_BOOTSTRAP / PRISM_REDIS_URL are set, those services are used and
nothing is started. Whatever the session started, it always stops.

Fixtures: ``stack`` (a :class:`prism.stack.StackInfo`: ``.kafka_bootstrap``,
``.redis_url``, ``.redis_query_url``), ``kafka_bootstrap``, ``redis_url``,
``redis_query_url``, ``redis_client``, ``unique_topic(partitions=3, config=None)``,
``test_settings`` and ``prism_topics``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import hypothesis
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck

from prism import stack as local_stack
from prism.stack import StackInfo
from prism.stack.topics import TOPICS, create_topics
from runtime.settings import Settings

# Bounded property tests: CI runs on 2 shared cores. HYPOTHESIS_PROFILE=thorough for more.
hypothesis.settings.register_profile(
    "prism", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis.settings.register_profile("thorough", max_examples=2000, deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "prism"))


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the test stack: a private state dir, the shared jar cache."""
    state_dir: Path = tmp_path_factory.mktemp("prism-state")
    return Settings(state_dir=state_dir)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[StackInfo]:
    """The real stack, started on first use; PRISM_KAFKA_BOOTSTRAP / PRISM_REDIS_URL win."""
    info = local_stack.up(stack_settings)
    try:
        yield info
    finally:
        local_stack.down(stack_settings)  # stops only what this session's state dir runs


@pytest.fixture(scope="session")
def stack_info(stack: StackInfo) -> StackInfo:
    """Older name of :func:`stack`."""
    return stack


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: StackInfo) -> str:
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: StackInfo) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def redis_query_url(stack: StackInfo) -> str:
    return stack.redis_query_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client authenticated with the stack's password."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def unique_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: a fresh topic on the real broker, unique per call."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def make(partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = f"test.{uuid.uuid4().hex[:12]}"
        future = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name]
        future.result(timeout=30)
        return name

    return make


@pytest.fixture
def test_settings(stack: StackInfo, tmp_path: Path) -> Settings:
    """Settings pointing at the session stack with a unique topic prefix per test."""
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        redis_query_url=stack.redis_query_url,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        state_dir=tmp_path / "state",
    )


@pytest.fixture
def prism_topics(test_settings: Settings) -> dict[str, str]:
    """Every DESIGN.md topic created under the test's own prefix: logical -> full name."""
    create_topics(test_settings, bootstrap=test_settings.kafka_bootstrap or "", partitions=3)
    return {name: test_settings.topic(name) for name in TOPICS}
