"""Composition root of ``prism shadow run``: real Kafka and Redis in, a running loop out."""

from __future__ import annotations

import logging
from functools import partial

from confluent_kafka import Consumer, Producer

from runtime.errors import StackError
from runtime.kafka_config import consumer_config, producer_config
from runtime.kafka_security import KafkaAuth, check_login
from runtime.model_registry import RegistryKeys
from runtime.redis_outage import service_client, wait_for
from runtime.settings import Settings
from schemas import Codec
from streams.shadow.join import ShadowJoin
from streams.shadow.loop import ShadowLoop
from streams.shadow.telemetry import ShadowTelemetry

log = logging.getLogger(__name__)

TOPICS = ("scores", "dead-letter")


def build_loop(  # noqa: PLR0913 - the command's flags
    settings: Settings,
    *,
    group: str,
    threshold: float,
    max_pending: int,
    ttl_s: float,
    idle_exit_s: float | None = None,
    metrics_port: int | None = None,
    redis_wait_s: float = 120.0,
) -> ShadowLoop:
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise StackError("no Kafka/Redis configured: run `prism stack up` or set PRISM_* vars")
    auth = KafkaAuth.from_settings(settings)
    check_login(settings.kafka_bootstrap, auth)
    security = auth.librdkafka()
    client = service_client(settings.redis_url.get_secret_value())
    wait_for(client.ping, what="connecting to Redis", limit_s=redis_wait_s)
    telemetry = ShadowTelemetry()
    if metrics_port is not None:
        port = telemetry.serve(metrics_port, settings.metrics_addr)
        log.info("metrics endpoint http://127.0.0.1:%s/metrics", port)
    new_join = partial(
        ShadowJoin, threshold=threshold, max_pending=max_pending, ttl_ms=int(ttl_s * 1000)
    )
    new_join()  # bad bounds fail here, before any record
    return ShadowLoop(
        consumer=Consumer(
            consumer_config(settings.kafka_bootstrap, group, group, security=security)
        ),
        producer=Producer(producer_config(settings.kafka_bootstrap, security)),
        redis=client,
        key=RegistryKeys(settings.redis_prefix).shadow(group),
        codec=Codec(settings.encoding, settings.max_message_bytes),
        topics={t: settings.topic(t) for t in TOPICS},
        telemetry=telemetry,
        new_join=new_join,
        idle_exit_s=idle_exit_s,
    )


def run(settings: Settings, *, group: str, **kwargs: object) -> int:
    loop = build_loop(settings, group=group, **kwargs)  # type: ignore[arg-type]
    loop.install_signal_handlers()
    log.info("shadow starting group=%s topic=%s", group, loop.topics["scores"])
    return loop.run()
