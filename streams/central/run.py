"""Composition root of ``prism central run``: real adapters in, a running engine out."""

from __future__ import annotations

import logging

import redis
from confluent_kafka import Producer

from runtime.errors import StackError
from runtime.gc_tuning import tune_for_streaming
from runtime.identity import node_signer
from runtime.kafka_config import producer_config
from runtime.kafka_security import KafkaAuth, check_login, kafka_security
from runtime.model_registry import RegistryKeys
from runtime.redis_outage import service_client, wait_for
from runtime.settings import Settings
from schemas import Codec
from streams.central.checkpoint import CheckpointStore
from streams.central.config import CentralConfig
from streams.central.worker import CentralWorker, Topics
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)


def topics_for(settings: Settings, config: CentralConfig) -> Topics:
    return Topics(
        events=settings.topic(config.events_topic),
        labels=settings.topic("labels"),
        scores=settings.topic("scores"),
        model_updates=settings.topic("model-updates"),
        dead_letter=settings.topic("dead-letter"),
    )


def first_ping(client: redis.Redis, limit_s: float) -> None:
    """Redis may be restarting when a worker (re)starts -- a supervisor's restart during an
    outage: wait for it as a restore does (up to ``--redis-wait``), instead of dying at start
    (found by ``make chaos``). A refused login is not an outage: it fails at once."""

    def ping() -> None:
        try:
            client.ping()
        except redis.AuthenticationError as e:
            raise StackError(f"Redis refused the login: {e} (check PRISM_REDIS_URL)") from e

    wait_for(ping, what="starting", limit_s=limit_s)


def build_worker(settings: Settings, config: CentralConfig) -> CentralWorker:
    """A worker wired to the configured Kafka and Redis (connections made here)."""
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise StackError("no Kafka/Redis configured: run `prism stack up` or set PRISM_* vars")
    check_login(settings.kafka_bootstrap, KafkaAuth.from_settings(settings))
    codec = Codec(settings.encoding, settings.max_message_bytes)
    redis_url = settings.redis_url.get_secret_value()
    client = service_client(redis_url)
    first_ping(client, config.redis_wait_s)
    keys = RegistryKeys(settings.redis_prefix)  # the checkpoints' keys (the merger writes models)
    telemetry = Telemetry(f"central-{config.task}")
    store = CheckpointStore(
        client,
        group=config.group_id,
        worker_id=config.worker,
        event_schema=config.event_schema,
        codec=codec,
        keys=keys,
    )
    producer = Producer(
        producer_config(
            settings.kafka_bootstrap,
            kafka_security(settings),
            linger_ms=config.batching.linger_ms,
        )
    )
    signer = node_signer(settings)
    return CentralWorker(
        config,
        topics_for(settings, config),
        producer=producer,
        store=store,
        codec=codec,
        telemetry=telemetry,
        signer=signer,
    )


ENGINES = ("kafka", "faust")


def run(
    settings: Settings,
    config: CentralConfig,
    *,
    idle_exit_s: float | None = None,
    engine: str = "kafka",
) -> int:
    """Run the worker until SIGTERM/SIGINT (or idle with no lag, if asked).

    ``engine``: ``kafka`` (default) consumes mini-batches with confluent-kafka;
    ``faust`` runs the same worker core as a Faust agent (slower; see
    streams/central/kafka_loop.py for the measurement).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    worker = build_worker(settings, config)
    tune_for_streaming()  # after the model's warm-up: see runtime/gc_tuning.py
    if config.metrics_port is not None:
        port = worker.telemetry.serve(config.metrics_port, settings.metrics_addr)
        log.info("metrics endpoint http://127.0.0.1:%s/metrics", port)
    log.info(
        "central worker starting engine=%s worker=%s group=%s model=%s topics=%s,%s kafka_auth=%s",
        engine,
        config.worker,
        config.group_id,
        config.spec_name,
        worker.topics.events,
        worker.topics.labels,
        KafkaAuth.from_settings(settings).describe(),
    )
    if engine == "kafka":
        return _run_kafka(settings, worker, idle_exit_s)
    return _run_faust(settings, worker, idle_exit_s)


def _run_kafka(settings: Settings, worker: CentralWorker, idle_exit_s: float | None) -> int:
    from confluent_kafka import Consumer

    from runtime.kafka_config import consumer_config
    from streams.central.kafka_loop import KafkaLoop

    config = worker.config
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap or "",
            config.group_id,
            config.worker,
            security=kafka_security(settings),
        )
    )
    loop = KafkaLoop(worker, consumer, idle_exit_s=idle_exit_s)
    loop.install_signal_handlers()
    return loop.run()


def _run_faust(settings: Settings, worker: CentralWorker, idle_exit_s: float | None) -> int:
    import faust  # imported here: the rest of the CLI must not pay for Faust

    from streams.central.app import build_app

    config = worker.config
    datadir = settings.state_dir / "faust" / config.worker.replace("/", "_")
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = build_app(
        worker,
        bootstrap=settings.kafka_bootstrap or "",
        credentials=KafkaAuth.from_settings(settings).faust_credentials(),
        datadir=str(datadir),
        idle_exit_s=idle_exit_s,
    )
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    return 0
