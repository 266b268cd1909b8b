"""One frozen settings object, read from ``PRISM_*`` environment variables once.

The CLI builds it and passes it down; no other module reads ``os.environ`` (the
XDG base directories are read here too, as the defaults of two settings).
Every field here is listed by ``prism --help`` (see :func:`describe_settings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def xdg_dir(variable: str, fallback: str, env: Mapping[str, str] | None = None) -> Path:
    """``$variable/prism``, or ``~/fallback/prism`` when it is unset, empty or relative.

    The XDG Base Directory spec: a relative path in these variables is invalid
    and must be ignored, so a stray ``XDG_STATE_HOME=state`` cannot scatter
    stack data into whatever directory a command happens to run in.
    """
    value = (os.environ if env is None else env).get(variable, "")
    base = Path(value) if value and Path(value).is_absolute() else Path.home() / fallback
    return base / "prism"


def _default_state_dir() -> Path:
    return xdg_dir("XDG_STATE_HOME", ".local/state")


def _default_cache_dir() -> Path:
    return xdg_dir("XDG_CACHE_HOME", ".cache")


class Settings(BaseSettings):
    """Everything a Prism process needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="PRISM_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; when set, `prism stack up` starts no broker."
    )
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="Kafka client protocol: PLAINTEXT, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = Field(
        "SCRAM-SHA-512", description="SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN."
    )
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user (SASL_* only).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="Kafka SASL password (SASL_* only; never logged)."
    )
    redis_url: SecretStr | None = Field(
        None, description="Redis URL with password; when set, `prism stack up` starts no Redis."
    )
    redis_query_url: SecretStr | None = Field(
        None, description="Redis URL of the read-only query user (registry reads)."
    )
    topic_prefix: str = Field("prism.", description="Prefix of every Kafka topic.")
    redis_prefix: str = Field(
        "prism", description="Prefix of every Redis key (registry, checkpoints, merger state)."
    )
    partitions: int = Field(3, ge=1, description="Partitions per topic for `prism topics create`.")
    secagg_routed_partitions: int = Field(
        32,
        ge=1,
        description="Partitions of secagg-routed (a node reads only its own; at least the "
        "secure round size keeps a node's download to its own records).",
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    encoding: str = Field(
        "avro", pattern="^(avro|json)$", description="Wire encoding: avro (single-object) or json."
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Largest payload a decoder accepts, in bytes."
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Where the local stack keeps its data, logs and env file "
        "($XDG_STATE_HOME/prism when that is set).",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where downloaded Kafka jars are cached, outside the repo "
        "($XDG_CACHE_HOME/prism when that is set).",
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version of the local broker.")
    kafka_heap: str = Field("512m", description="Max heap of the local Kafka broker (-Xmx).")
    kafka_jvm: Literal["test", "bench"] = Field(
        "test",
        description="JVM flags of the local broker: test (serial GC, C1 only: quick to start, "
        "frugal beside the tests) or bench (the JVM's own GC and both JIT tiers, as a "
        "production broker runs).",
    )
    log_level: str = Field("INFO", description="Log level of every Prism process.")
    log_format: Literal["logfmt", "json"] = Field(
        "logfmt", description="Log lines on stderr: logfmt, or json (one object per line)."
    )
    metrics_addr: str = Field(
        "127.0.0.1",
        description="Address the services' Prometheus endpoints bind to (0.0.0.0 in containers).",
    )
    signing_key_id: str | None = Field(
        None, description="Key id this node, shard or merger signs its records with."
    )
    signing_key_file: Path | None = Field(
        None,
        description="Ed25519 private key file (`prism keys generate`): public-key signing.",
    )
    signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 secret (>= 16 bytes) instead of a key file; small setups."
    )
    trust_file: Path | None = Field(
        None,
        description="Public keys (JSON) the merger checks summaries and edges/readers globals by.",
    )
    trusted_keys: SecretStr | None = Field(
        None,
        description='Merger: JSON {"key-id": {"secret": "...", "nodes": ["node-id or glob"]}}.',
    )
    require_signed: bool | None = Field(
        None,
        description="Refuse unsigned summaries (merger) and globals (edges, readers); "
        "default: when keys are trusted.",
    )

    @property
    def env_file(self) -> Path:
        """The file `prism stack up` writes addresses to, for later commands and tests."""
        return self.state_dir / "stack.env"

    def topic(self, name: str) -> str:
        """The full topic name for a DESIGN.md topic, e.g. ``transactions``."""
        return f"{self.topic_prefix}{name}"


def describe_settings() -> str:
    """One line per setting: env var, default and description, for ``--help``."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()
        lines.append(f"  PRISM_{name.upper():<22} {field.description} [default: {default}]")
    return "\n".join(lines)


def load_settings(*, use_stack_file: bool = True) -> Settings:
    """Read the environment; fall back to the addresses `prism stack up` wrote.

    Environment variables always win over the stack file, so a user's own
    cluster (or docker-compose) is never overridden by a stale local stack.
    """
    settings = Settings()
    if use_stack_file and settings.env_file.is_file():
        return Settings(_env_file=settings.env_file)  # type: ignore[call-arg]
    return settings
