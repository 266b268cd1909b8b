"""Composition root of ``prism merger run``: real Kafka and Redis in, a running loop out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

from models.canary import CanaryPolicy
from runtime.errors import StackError, UsageError
from runtime.identity import global_verifier, node_signer, step_verifiers, summary_verifier
from runtime.kafka_config import consumer_config, producer_config
from runtime.kafka_security import KafkaAuth, check_login
from runtime.model_registry import RegistryKeys, RegistryWriter
from runtime.redis_outage import service_client
from runtime.secagg import ROUNDS_TOPIC, ROUTED_TOPIC, STEP_TOPICS, STEPS
from runtime.settings import Settings
from schemas import Codec
from schemas.identity import KeySigner
from streams.dead_letters import DeadLetters
from streams.merger.canary import CanaryTracker
from streams.merger.gate import Judge, QualityGate
from streams.merger.holdout import HoldoutFeed
from streams.merger.loop import MergerLoop
from streams.merger.rounds import Merger, MergerConfig
from streams.merger.secure import SecureConfig, SecureRounds
from streams.merger.secure_loop import SecureFeed
from streams.merger.store import MergerStore
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)

TOPICS = ("model-updates", "global-model", "dead-letter", "lifecycle")


def build_loop(
    settings: Settings,
    config: MergerConfig,
    *,
    group: str,
    idle_exit_s: float | None = None,
    metrics_port: int | None = None,
    redis_wait_s: float = 120.0,
    event_time: bool = False,
    speedup: float = 1.0,
    holdout: HoldoutOptions | None = None,
    canary: CanaryPolicy | None = None,
    secure: SecureConfig | None = None,
) -> MergerLoop:
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise StackError("no Kafka/Redis configured: run `prism stack up` or set PRISM_* vars")
    auth = KafkaAuth.from_settings(settings)
    check_login(settings.kafka_bootstrap, auth)
    codec = Codec(settings.encoding, settings.max_message_bytes)
    url = settings.redis_url.get_secret_value()
    client = service_client(url)
    keys = RegistryKeys(settings.redis_prefix)
    writer = RegistryWriter(url, codec=codec, keys=keys, client=client).setup()
    telemetry = Telemetry("merger")
    if metrics_port is not None:
        log.info(
            "metrics endpoint http://127.0.0.1:%s/metrics",
            telemetry.serve(metrics_port, settings.metrics_addr),
        )
    # the central learner's settings: manual commits, earliest, fast group heartbeats
    security = auth.librdkafka()
    consumer = Consumer(consumer_config(settings.kafka_bootstrap, group, group, security=security))
    feed, judge = None, None
    if holdout is not None:
        # assigned, never subscribed or committed: the group id only satisfies librdkafka
        conf = consumer_config(
            settings.kafka_bootstrap, f"{group}.holdout", group, security=security
        )
        feed = HoldoutFeed(
            Consumer(conf), settings.topic(holdout.topic), codec=codec, capacity=holdout.size
        )
        judge = Judge(feed.reservoirs, holdout.gate)
    producer = Producer(producer_config(settings.kafka_bootstrap, security))
    topics = {t: settings.topic(t) for t in TOPICS}
    merger = Merger(config, judge=judge, canary=None if canary is None else canary.share)
    signer = global_signer(settings)  # globals and secure rounds' phase records alike
    secure_feed = None
    if secure is not None:
        secure_topics = (ROUNDS_TOPIC, ROUTED_TOPIC, *STEP_TOPICS.values())
        topics |= {t: settings.topic(t) for t in secure_topics}
        conf = consumer_config(
            settings.kafka_bootstrap, f"{group}.secagg", group, security=security
        )
        secure_feed = SecureFeed(
            SecureRounds(
                secure,
                current=lambda name: merger.tiers[name].current if name in merger.tiers else None,
                merged_before=merger.merged_before,
            ),
            consumer=Consumer(conf),
            producer=producer,
            codec=codec,
            topics=topics,
            verifiers=step_verifiers(settings, STEPS),
            dead=DeadLetters(
                producer, topics["dead-letter"], service="merger", codec=codec, telemetry=telemetry
            ),
            signer=signer,
            telemetry=telemetry,
        )
    return MergerLoop(
        merger,
        MergerStore(client, writer, group=group, codec=codec, keys=keys),
        consumer=consumer,
        producer=producer,
        codec=codec,
        topics=topics,
        secure=secure_feed,
        telemetry=telemetry,
        idle_exit_s=idle_exit_s,
        redis_wait_s=redis_wait_s,
        verifier=summary_verifier(settings),
        signer=signer,
        event_time=event_time,
        speedup=speedup,
        holdout=feed,
        source_verifier=global_verifier(settings),
        canary=None if canary is None else CanaryTracker(canary),
    )


@dataclass(frozen=True)
class HoldoutOptions:
    """``--holdout-topic`` (a logical name: the topic prefix is added), its sample size, and
    the quality gate (None: every version is scored and published)."""

    topic: str
    size: int = 2000
    gate: QualityGate | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"the holdout size must be >= 1, got {self.size}")


def global_signer(settings: Settings) -> KeySigner | None:
    """The merger's own key: every GlobalModel it publishes is signed with it."""
    signer = node_signer(settings)
    if signer is not None and not isinstance(signer, KeySigner):
        raise UsageError(
            "the merger signs globals with a public key only (PRISM_SIGNING_KEY_FILE): with an "
            "HMAC secret every edge would hold what forges a global for all the others"
        )
    if signer is None and global_verifier(settings) is not None:
        log.warning("globals are published UNSIGNED: edges that trust keys will not adopt them")
    return signer


def run(settings: Settings, config: MergerConfig, *, group: str, **kwargs: object) -> int:
    loop = build_loop(settings, config, group=group, **kwargs)  # type: ignore[arg-type]
    loop.install_signal_handlers()
    if loop.secure is not None:
        c = loop.secure.rounds.config
        log.info(
            "secure aggregation on: model=%s round_size=%s min=%s keys_timeout=%ss "
            "step_timeout=%ss max_dropout=%s",
            c.model_name, c.round_size, c.min_participants, c.keys_timeout_s,
            c.step_timeout_s, c.max_dropout,
        )  # fmt: skip
    log.info(
        "merger starting group=%s strategy=%s round_size=%s round_timeout=%ss tiers=%s topic=%s "
        "clock=%s",
        group,
        config.strategy,
        config.round_size,
        config.round_timeout_s,
        ",".join(config.tiers),
        loop.topics["model-updates"],
        f"event-time x{loop.speedup:g}" if loop.event_time else "wall",
    )
    return loop.run()
