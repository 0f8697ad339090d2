"""The settings object: the only place that reads the environment.

Every process builds one `Settings` at start-up (`Settings.from_env()`) and passes it down;
nothing else in the code base looks at `os.environ`. `.env.example` lists every variable
with its default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from mq.errors import ConfigurationError
from mq.urls import is_postgresql

MIB = 1024 * 1024


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _json_object(raw: str) -> dict[str, str]:
    value = json.loads(raw) if raw.strip() else {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("expected a JSON object of name -> URL")
    return value


def _postgresql_url(raw: str) -> str:
    """The metadata store is PostgreSQL only (`postgres://` as Heroku spells it included)."""
    value = raw.strip()
    if not is_postgresql(value):
        raise ValueError("must be a PostgreSQL URL, "
                         "e.g. postgresql://user:password@host:5432/database")
    return value


@dataclass(frozen=True)
class Quotas:
    """Per-tenant limits; 0 means unlimited."""

    topics: int = 0
    subscriptions: int = 0
    publish_rate: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every process. Field name = lower-cased variable name."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster_nodes: tuple[str, ...] = ()
    redis_password: str | None = None
    redis_namespace: str = "mq"
    #: On a Redis Cluster, topic partitions are spread over this many hash slots, evenly
    #: spaced across the slot range (`broker.keys`). Fixed for the life of the data: the
    #: stream key names depend on it.
    redis_cluster_shards: int = 16
    #: Replicas that must acknowledge a publish's append (Redis `WAIT`) before its 2xx; 0:
    #: answer once the primary has it.
    redis_wait_replicas: int = 0
    #: How long a publish waits for those replicas before it fails (503).
    redis_wait_timeout_ms: int = 1000
    stream_max_len: int = 10_000_000

    mq_operator_token: str | None = None
    mq_master_key: str | None = None
    mq_old_master_keys: tuple[str, ...] = ()
    mq_function_modules: tuple[str, ...] = ()
    mq_db_targets: dict[str, str] = field(default_factory=dict)
    mq_webhook_allow_private: bool = False
    #: After a webhook secret changes, deliveries are signed with the old one too for this
    #: long (Standard Webhooks `webhook-signature` carries both), so receivers can rotate.
    mq_webhook_secret_overlap_s: int = 86_400
    #: Signs the dashboard's session cookie; the dashboard is off while it is unset.
    mq_secret_key: str | None = None
    #: Send the dashboard's session cookie over HTTPS only (set it behind TLS).
    mq_cookie_secure: bool = False

    metrics_enabled: bool = True
    prometheus_port: int = 9465
    prometheus_multiproc_dir: str | None = None
    max_concurrent_consumers: int = 10
    message_batch_size: int = 100
    processing_timeout_ms: int = 30_000
    #: A worker whose heartbeat (every second) stops for this long is taken for dead, and
    #: its pending entries go to the surviving workers (`broker.takeover`).
    worker_dead_after_ms: int = 3000
    #: Entries a worker process holds per pool without having acknowledged them (read,
    #: queued, running): what a SIGKILL can deliver twice. 0: 8 per delivery thread.
    worker_prefetch: int = 0

    #: Message records are kept as long as the longest `retention_ms` of the topics, at
    #: least a day (the idempotency window), at most this (`scheduler.storage`).
    mq_record_retention_days: int = 30
    #: Delivery records (consumption records) are kept this long.
    mq_delivery_record_retention_days: int = 7

    #: OpenTelemetry's standard variables: traces are exported when an exporter or an OTLP
    #: endpoint is set (and the `otel` extra is installed); see `mq.tracing`.
    otel_traces_exporter: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str | None = None
    otel_sdk_disabled: bool = False

    port: int = 3010
    max_request_bytes: int = 6 * MIB
    web_concurrency: int = 2
    log_level: str = "INFO"
    log_format: str = "json"

    quota_topics: int = 0
    quota_subscriptions: int = 0
    quota_publish_rate: int = 0
    quota_stored_bytes: int = 0

    @property
    def default_quotas(self) -> Quotas:
        return Quotas(
            topics=self.quota_topics,
            subscriptions=self.quota_subscriptions,
            publish_rate=self.quota_publish_rate,
            stored_bytes=self.quota_stored_bytes,
        )

    @property
    def tracing_enabled(self) -> bool:
        if self.otel_sdk_disabled or self.otel_traces_exporter == "none":
            return False
        return bool(self.otel_traces_exporter or self.otel_exporter_otlp_endpoint
                    or self.otel_exporter_otlp_traces_endpoint)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = env.get(spec.name.upper())
            if raw is None:
                continue
            try:
                values[spec.name] = _PARSERS.get(spec.name, _parser_for(spec.type))(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{spec.name.upper()}: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]

    def as_environ(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, dict):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[spec.name.upper()] = str(value)
        return out


def _parser_for(type_name: object) -> Callable[[str], object]:
    text = str(type_name)
    if text.startswith("int"):
        return int
    if text.startswith("bool"):
        return _bool
    if text.startswith("tuple"):
        return _csv
    return str


def _at_least(minimum: int, unit: str = "") -> Callable[[str], int]:
    """A parser of integers not below `minimum` (`unit` names it in the error)."""
    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}{unit}")
        return value
    return parse


_days = _at_least(1, " (day)")


_PARSERS: dict[str, Callable[[str], object]] = {"mq_db_targets": _json_object,
                                                "database_url": _postgresql_url,
                                                "mq_record_retention_days": _days,
                                                "mq_delivery_record_retention_days": _days,
                                                "redis_cluster_shards": _at_least(1),
                                                "redis_wait_replicas": _at_least(0),
                                                "redis_wait_timeout_ms": _at_least(1),
                                                "mq_webhook_secret_overlap_s": _at_least(0)}
