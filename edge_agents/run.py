"""Composition root of ``prism edge run``: real adapters in, a running agent out.

Nothing here imports ``streams/`` or Faust: an edge device needs
confluent-kafka, SQLite (stdlib) and, for ``--globals-from registry``, redis.
"""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka import Consumer

from edge_agents.agent import EdgeAgent, Parts
from edge_agents.config import EdgeConfig
from edge_agents.controls import FleetControls
from edge_agents.globals import RegistryGlobals, TopicGlobals
from edge_agents.learner import EdgeLearner
from edge_agents.link import Link
from edge_agents.metrics import EdgeMetrics
from edge_agents.outbox import Outbox
from edge_agents.secagg import OnBad, SecureSender
from edge_agents.sinks import Forwarder, LocalDeadLetters, ScoreSink, SummarySender
from edge_agents.sources import FileSource, TopicSource
from runtime.errors import StackError, UsageError
from runtime.identity import global_verifier, node_signer, round_verifiers, step_signer
from runtime.kafka_security import KafkaAuth, check_login
from runtime.model_registry import RegistryKeys
from runtime.model_registry.client import RegistryClient
from runtime.secagg import ROUNDS_TOPIC, ROUTED_TOPIC, STEP_TOPICS
from runtime.settings import Settings
from schemas import Codec

log = logging.getLogger(__name__)

__all__ = ["build", "run", "state_dir_of"]


def state_dir_of(settings: Settings, config: EdgeConfig) -> Path:
    return config.state_dir or settings.state_dir / "edge" / config.node_id


def build(settings: Settings, config: EdgeConfig) -> tuple[EdgeAgent, object]:
    """The agent and its event source, resumed from the node's saved state."""
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise StackError(
            "an edge agent needs the broker's address even while it is down: "
            "run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP"
        )
    codec = Codec(settings.encoding, settings.max_message_bytes)
    auth = KafkaAuth.from_settings(settings)
    security = auth.librdkafka()
    log.info("kafka bootstrap=%s auth=%s", bootstrap, auth.describe())
    check_login(bootstrap, auth, timeout=5.0)  # a refused login exits; an outage does not
    signer = node_signer(settings)
    home = state_dir_of(settings, config)
    dead = LocalDeadLetters(home / "dead-letters.jsonl")

    def on_bad(code: str, reason: str, where: object, raw: str | bytes) -> None:
        dead.add(reason_code=code, reason=reason, where=where, raw=raw)

    learner = EdgeLearner(config.spec_name, config.node_id, config.policy)
    globals_ = _globals(settings, config, codec, on_bad)
    outbox = Outbox(
        home / "outbox.sqlite3", node_id=config.node_id, model_name=config.spec_name, codec=codec
    )
    link = Link(bootstrap, security=security, cut_file=home / "link-cut")
    parts = Parts(
        learner=learner,
        outbox=outbox,
        link=link,
        scores=ScoreSink(link, settings.topic("scores"), codec, home / "scores-offline.jsonl"),
        sender=SummarySender(
            link, outbox, settings.topic("model-updates"), config.node_id.encode()
        ),
        globals_=globals_,
        forwarder=(
            Forwarder(
                link,
                outbox,
                settings.topic(config.events_topic),
                config.forward_sample,
                labels_topic=settings.topic("labels"),
            )
            if config.mode == "hybrid"
            else None
        ),
        dead=dead,
        codec=codec,
        signer=signer,
        controls=_controls(settings, config, codec),
    )
    if config.secure_agg:  # no summary in the clear: increments go through secure rounds
        parts.sender = _secure_sender(settings, config, link, outbox, codec, globals_, home, on_bad)
    agent = EdgeAgent(config, parts)
    position = agent.restore()
    topic = config.source_topic
    if topic is not None:
        source: object = TopicSource(
            bootstrap,
            topic,
            node_id=config.node_id,
            codec=codec,
            on_bad=on_bad,
            after=position if isinstance(position, dict) else None,
            idle_exit_s=config.idle_exit_s,
            security=security,
        )
    else:
        path = Path(config.source)
        if not path.is_file():
            raise UsageError(f"--source {config.source!r}: no such file (or use topic:NAME)")
        source = FileSource(
            path,
            on_bad=on_bad,
            sites=config.sites,
            rate=config.rate,
            speedup=config.speedup,
            after=int(position or 0),
            start_at=config.start_at,
            start_at_file=config.start_at_file,
        )
    return agent, source


def _secure_sender(  # noqa: PLR0913 - the adapters it shares with the agent
    settings: Settings,
    config: EdgeConfig,
    link: Link,
    outbox: Outbox,
    codec: Codec,
    globals_: object,
    home: Path,
    on_bad: OnBad,
) -> SecureSender:
    verifier, confirm_verifier = round_verifiers(settings)
    consumer = Consumer(
        {
            **KafkaAuth.from_settings(settings).librdkafka(),
            "bootstrap.servers": settings.kafka_bootstrap or "",
            "group.id": f"prism-edge-secagg-{config.node_id}",  # assigned, never committed
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    return SecureSender(
        link,
        outbox,
        node_id=config.node_id,
        model_name=config.spec_name,
        codec=codec,
        topics={t: settings.topic(t) for t in (ROUNDS_TOPIC, ROUTED_TOPIC, *STEP_TOPICS.values())},
        consumer=consumer,
        state_dir=home,
        signer=step_signer(settings),
        book=lambda: getattr(globals_, "book", None),
        verifier=verifier,
        confirm_verifier=confirm_verifier,
        on_bad=on_bad,
    )


def _controls(settings: Settings, config: EdgeConfig, codec: Codec) -> FleetControls | None:
    """The operators' pin and quarantine, read from the registry (read-only is enough)."""
    secret = settings.redis_query_url or settings.redis_url
    if secret is None:
        log.info("no Redis configured: operator pins and quarantine do not reach this node")
        return None
    client = RegistryClient(
        secret.get_secret_value(), codec=codec, keys=RegistryKeys(settings.redis_prefix)
    )
    return FleetControls(client, node_id=config.node_id, model_name=config.spec_name)


def _globals(settings: Settings, config: EdgeConfig, codec: Codec, on_bad) -> object:
    if config.globals_from == "registry":
        secret = settings.redis_query_url or settings.redis_url
        if secret is None:
            raise StackError("--globals-from registry needs PRISM_REDIS_QUERY_URL or _URL")
        client = RegistryClient(
            secret.get_secret_value(), codec=codec, keys=RegistryKeys(settings.redis_prefix)
        )
        return RegistryGlobals(
            client, model_name=config.spec_name, on_bad=on_bad, verifier=global_verifier(settings)
        )
    return TopicGlobals(
        settings.kafka_bootstrap or "",
        settings.topic("global-model"),
        model_name=config.spec_name,
        node_id=config.node_id,
        codec=codec,
        on_bad=on_bad,
        security=KafkaAuth.from_settings(settings).librdkafka(),
        verifier=global_verifier(settings),
    )


def run(settings: Settings, config: EdgeConfig) -> int:
    agent, source = build(settings, config)
    if config.metrics_port is not None:
        histograms = (agent.score_latency, agent.save_seconds)
        port = EdgeMetrics(config.node_id, agent.snapshot, histograms).serve(
            config.metrics_port, settings.metrics_addr
        )
        log.info("metrics endpoint http://127.0.0.1:%s/metrics", port)
    agent.install_signal_handlers()
    return agent.run(source)  # type: ignore[arg-type]
