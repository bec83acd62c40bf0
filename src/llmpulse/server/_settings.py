"""Server settings: one frozen, validated object built at the edge (CLI or caller).

Environment variables are fallbacks, read only by `ServerSettings.from_env`; their names are the
constants below and are documented in docs/configuration.md. Retention settings are a
`RetentionPolicy` with its own table of variables (``LLMPULSE_RETENTION_*``, ``LLMPULSE_PRUNE_*``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from llmpulse.alerts import Rules, load_rules
from llmpulse.events import DEFAULT_ROUTE, DEFAULT_TENANT, Limits, parse_naive_timestamp_tz
from llmpulse.events._limits import MAX_NAME_LEN
from llmpulse.pipeline import ESTIMATE_COSTS, EstimateCost
from llmpulse.server._budgets_file import load_budgets
from llmpulse.server._limits import RequestLimits
from llmpulse.store import BudgetSpec, RetentionPolicy

ENV_HTTP_PORT: Final = "HTTP_PORT"
ENV_HOST: Final = "LLMPULSE_HOST"
ENV_DB: Final = "LLMPULSE_DB"
ENV_POSTGRES_DSN: Final = "POSTGRES_DSN"
ENV_LOG: Final = "LLMPULSE_LOG"
ENV_ORPHAN_TIMEOUT_S: Final = "LLMPULSE_ORPHAN_TIMEOUT_S"
ENV_MAX_EVENT_AGE_S: Final = "LLMPULSE_MAX_EVENT_AGE_S"
ENV_MAX_BODY_BYTES: Final = "LLMPULSE_MAX_BODY_BYTES"
ENV_MAX_BATCH_ITEMS: Final = "LLMPULSE_MAX_BATCH_ITEMS"
ENV_SYNC: Final = "LLMPULSE_LOG_SYNC"
ENV_MAX_LAG_EVENTS: Final = "LLMPULSE_MAX_LAG_EVENTS"
ENV_KAFKA_BROKERS: Final = "KAFKA_BROKERS"
ENV_KAFKA_PARTITIONS: Final = "LLMPULSE_KAFKA_PARTITIONS"
ENV_KAFKA_DELIVERY_TIMEOUT_S: Final = "LLMPULSE_KAFKA_DELIVERY_TIMEOUT_S"
ENV_KAFKA_SESSION_TIMEOUT_S: Final = "LLMPULSE_KAFKA_SESSION_TIMEOUT_S"
ENV_CONSUMER_GROUP: Final = "CONSUMER_GROUP"
ENV_OTLP_DEFAULT_TENANT: Final = "LLMPULSE_OTLP_DEFAULT_TENANT"
ENV_OTLP_DEFAULT_ROUTE: Final = "LLMPULSE_OTLP_DEFAULT_ROUTE"
ENV_OTLP_GRPC_PORT: Final = "LLMPULSE_OTLP_GRPC_PORT"
#: The zone a call event's timestamp without a UTC offset is read in (`Limits.naive_timestamp_tz`).
ENV_NAIVE_TIMESTAMP_TZ: Final = "LLMPULSE_NAIVE_TIMESTAMP_TZ"
#: Which figure counts for a call event's estimated cost (`ProcessorConfig.estimate_cost`); read by
#: ``serve`` and ``process`` through `estimate_cost_from_env`.
ENV_ESTIMATE_COST: Final = "LLMPULSE_ESTIMATE_COST"

ENV_KEY_CACHE_S: Final = "LLMPULSE_KEY_CACHE_S"
ENV_METRICS_PUBLIC: Final = "LLMPULSE_METRICS_PUBLIC"
ENV_INSECURE: Final = "LLMPULSE_INSECURE"
ENV_BUDGETS_FILE: Final = "LLMPULSE_BUDGETS_FILE"
ENV_ALERTS_FILE: Final = "LLMPULSE_ALERTS_FILE"
ENV_ALERTS_INTERVAL_S: Final = "LLMPULSE_ALERTS_INTERVAL_S"

DEFAULT_DB_URL: Final = "sqlite:///llmpulse.db"
#: The consumer group of ``llmpulse process`` workers when ``CONSUMER_GROUP`` is unset (the value of
#: `llmpulse.pipeline._workers.DEFAULT_GROUP`, repeated so settings need no Kafka client).
DEFAULT_CONSUMER_GROUP: Final = "llmpulse-processor"


def default_log_url(db_url: str) -> str:
    """The embedded log's URL beside a SQLite store (``x.db`` → ``x.log.db``); in-memory stays in memory."""
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        path = db_url.removeprefix("sqlite:///")
        stem = path[:-3] if path.endswith(".db") else path
        return f"sqlite:///{stem}.log.db"
    return "sqlite:///llmpulse.log.db"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything the server needs, validated in the constructor.

    Attributes:
        host, port: where to listen.
        db_url: the store (``sqlite:///path`` by default; ``postgresql://`` with the scale-out extras).
        log_url: the event log (``sqlite:///path`` embedded); defaults to a file beside the store.
        demo: generate realistic traffic into the server so there is something to see.
        limits: validation limits (body size, batch size, metadata, timestamp range).
        orphan_timeout_s: how long a request waits for its response (on the processor's clock).
        dedup_ttl_s: how long fully counted request ids are remembered to drop duplicates.
        log_sync: SQLite ``synchronous`` mode of the log: ``FULL`` (fsync each group commit) or
            ``NORMAL`` (survives a process crash, not a power loss).
        max_pending_events: events awaiting the log writer before ingest answers 503.
        checkpoint_interval_s: how often the processor commits windows and offsets.
        run_processor: run the processor inside the server (embedded mode).
        broker_url: ``kafka://host:port[,host:port...]``: the event log is Kafka topics instead of
            the SQLite `log_url` (scale-out mode; see docs/scale-out.md).
        kafka_partitions: partitions of each event topic the server creates when missing.
        kafka_delivery_timeout_s: how long ingest waits for the broker's acknowledgement (then 503).
        kafka_session_timeout_s: the processor consumers' group session timeout.
        consumer_group: with ``run_processor`` off in Kafka mode, the consumer group of the
            ``llmpulse process`` workers whose committed offsets (store consumers
            ``group:<group>/<p>``) ingest's admission measures the lag against.
        max_processor_lag_events: ingest holds new batches back while the processor is more than this
            many events behind (0: never), so what is acknowledged becomes queryable within about a
            second even when clients send faster than it can aggregate. In Kafka mode the lag is
            that of the in-process processor or, with ``run_processor`` off, of the
            ``consumer_group`` workers (end offsets minus their committed offsets, refreshed every
            second).
        admission_wait_s: the longest a batch is held back before the answer is 503 + Retry-After.
        otlp_default_tenant, otlp_default_route: the tenant and route of an OTLP span (``POST
            /v1/traces``) whose span and resource attributes name none (``llmpulse.tenant_id``,
            ``llmpulse.route``).
        otlp_grpc_port: the port of the OTLP/gRPC receiver (``TraceService/Export``, on `host`); None
            (the default) serves none, 0 any free port. 4317 is OTLP/gRPC's conventional port.
        request_limits: HTTP limits: body read deadline, JSON depth, rate limit, query range and page
            size (`RequestLimits`).
        key_cache_s: how long an API key lookup (found or not) is cached, and how often the server
            checks whether keys were created while none was configured (docs/security.md).
        metrics_public: serve ``/metrics`` without a key even when keys are configured.
        insecure: let ``llmpulse serve`` listen beyond loopback although no API key is configured.
        alerts, alerts_file: the alert rules in force and the file they come from (``serve --alerts
            FILE``, ``LLMPULSE_ALERTS_FILE``; read again on SIGHUP); given a file alone, the
            rules are loaded from it here. None: no alerting.
        alerts_interval_s: how often every rule is judged besides the processor's commits
            (``LLMPULSE_ALERTS_INTERVAL_S``, default 10).
        budgets: shared budgets created or replaced at start (``serve --budgets FILE``,
            ``LLMPULSE_BUDGETS_FILE``: `llmpulse.server._budgets_file.load_budgets`).
        retention: how long call records, windows, rollups and consumed log records are kept, and
            how often this server prunes (`RetentionPolicy`; docs/embedded.md#retention).
        estimate_cost: which figure counts for a call event's estimated cost: ``genai-prices``
            (genai-prices' figure when it knows the model, else the event's) or ``event``
            (`llmpulse.pipeline.ProcessorConfig.estimate_cost`).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str = DEFAULT_DB_URL
    log_url: str | None = None
    demo: bool = False
    limits: Limits = field(default_factory=Limits)
    orphan_timeout_s: float = 300.0
    dedup_ttl_s: float = 24 * 3600.0
    log_sync: str = "FULL"
    max_pending_events: int = 200_000
    checkpoint_interval_s: float = 0.25
    run_processor: bool = True
    max_processor_lag_events: int = 20_000
    admission_wait_s: float = 2.0
    broker_url: str | None = None
    kafka_partitions: int = 6
    kafka_delivery_timeout_s: float = 10.0
    kafka_session_timeout_s: float = 10.0
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    otlp_default_tenant: str = DEFAULT_TENANT
    otlp_default_route: str = DEFAULT_ROUTE
    otlp_grpc_port: int | None = None
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    key_cache_s: float = 5.0
    metrics_public: bool = False
    insecure: bool = False
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    estimate_cost: EstimateCost = "genai-prices"
    budgets: tuple[BudgetSpec, ...] = ()
    alerts: Rules | None = None
    alerts_file: str | None = None
    alerts_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        grpc_port = self.otlp_grpc_port
        if grpc_port is not None:
            if not isinstance(grpc_port, int) or isinstance(grpc_port, bool) or not 0 <= grpc_port <= 65535:
                raise ValueError(f"otlp_grpc_port must be in 0..65535, got {grpc_port!r}")
            if grpc_port != 0 and grpc_port == self.port:
                raise ValueError(f"otlp_grpc_port must differ from port (HTTP), both are {grpc_port}")
        if not self.db_url:
            raise ValueError("db_url must not be empty")
        if self.orphan_timeout_s <= 0:
            raise ValueError(f"orphan_timeout_s must be positive, got {self.orphan_timeout_s!r}")
        if self.dedup_ttl_s < self.orphan_timeout_s:
            raise ValueError("dedup_ttl_s must be at least orphan_timeout_s")
        if self.log_sync not in ("FULL", "NORMAL"):
            raise ValueError(f"log_sync must be FULL or NORMAL, got {self.log_sync!r}")
        if self.max_pending_events < 1:
            raise ValueError(f"max_pending_events must be positive, got {self.max_pending_events!r}")
        if self.max_processor_lag_events < 0:
            raise ValueError(f"max_processor_lag_events must be >= 0, got {self.max_processor_lag_events!r}")
        if self.admission_wait_s < 0:
            raise ValueError(f"admission_wait_s must be >= 0, got {self.admission_wait_s!r}")
        if self.checkpoint_interval_s <= 0:
            raise ValueError(f"checkpoint_interval_s must be positive, got {self.checkpoint_interval_s!r}")
        if self.broker_url is not None and not self.broker_url.strip():
            raise ValueError("broker_url must not be empty")
        if self.kafka_partitions < 1:
            raise ValueError(f"kafka_partitions must be positive, got {self.kafka_partitions!r}")
        if not 0.1 <= self.kafka_delivery_timeout_s <= 300:
            raise ValueError(
                f"kafka_delivery_timeout_s must be within [0.1, 300], got {self.kafka_delivery_timeout_s!r}"
            )
        if not 1 <= self.kafka_session_timeout_s <= 300:
            raise ValueError(
                f"kafka_session_timeout_s must be within [1, 300], got {self.kafka_session_timeout_s!r}"
            )
        if not self.consumer_group.strip():
            raise ValueError("consumer_group must not be empty")
        if not 0 < self.key_cache_s <= 3600:
            raise ValueError(f"key_cache_s must be in (0, 3600], got {self.key_cache_s!r}")
        if not 0.1 <= self.alerts_interval_s <= 3600:
            raise ValueError(f"alerts_interval_s must be within [0.1, 3600], got {self.alerts_interval_s!r}")
        if self.alerts_file is not None and self.alerts is None:
            object.__setattr__(self, "alerts", load_rules(self.alerts_file))
        if self.estimate_cost not in ESTIMATE_COSTS:
            raise ValueError(f"estimate_cost must be one of {ESTIMATE_COSTS}, got {self.estimate_cost!r}")
        for name in ("otlp_default_tenant", "otlp_default_route"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LEN:
                raise ValueError(f"{name} must be a string of 1 to {MAX_NAME_LEN} characters, got {value!r}")

    @property
    def resolved_log_url(self) -> str:
        """The log URL, defaulting to a file beside a SQLite store."""
        return self.log_url or default_log_url(self.db_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from environment variables, then `overrides` (CLI flags; None values ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if ENV_HTTP_PORT in env:
            values["port"] = _int(env, ENV_HTTP_PORT)
        if ENV_HOST in env:
            values["host"] = env[ENV_HOST]
        if env.get(ENV_DB):
            values["db_url"] = env[ENV_DB]
        elif env.get(ENV_POSTGRES_DSN):
            values["db_url"] = env[ENV_POSTGRES_DSN]
        if env.get(ENV_LOG):
            values["log_url"] = env[ENV_LOG]
        if ENV_ORPHAN_TIMEOUT_S in env:
            values["orphan_timeout_s"] = _float(env, ENV_ORPHAN_TIMEOUT_S)
        if ENV_MAX_LAG_EVENTS in env:
            values["max_processor_lag_events"] = _int(env, ENV_MAX_LAG_EVENTS)
        if env.get(ENV_KAFKA_BROKERS):
            values["broker_url"] = env[ENV_KAFKA_BROKERS]
        if ENV_KAFKA_PARTITIONS in env:
            values["kafka_partitions"] = _int(env, ENV_KAFKA_PARTITIONS)
        if ENV_KAFKA_DELIVERY_TIMEOUT_S in env:
            values["kafka_delivery_timeout_s"] = _float(env, ENV_KAFKA_DELIVERY_TIMEOUT_S)
        if ENV_KAFKA_SESSION_TIMEOUT_S in env:
            values["kafka_session_timeout_s"] = _float(env, ENV_KAFKA_SESSION_TIMEOUT_S)
        if env.get(ENV_CONSUMER_GROUP):
            values["consumer_group"] = env[ENV_CONSUMER_GROUP]
        if ENV_SYNC in env:
            values["log_sync"] = env[ENV_SYNC].upper()
        if env.get(ENV_OTLP_DEFAULT_TENANT):
            values["otlp_default_tenant"] = env[ENV_OTLP_DEFAULT_TENANT]
        if env.get(ENV_OTLP_DEFAULT_ROUTE):
            values["otlp_default_route"] = env[ENV_OTLP_DEFAULT_ROUTE]
        if env.get(ENV_OTLP_GRPC_PORT):
            values["otlp_grpc_port"] = _int(env, ENV_OTLP_GRPC_PORT)
        if ENV_KEY_CACHE_S in env:
            values["key_cache_s"] = _float(env, ENV_KEY_CACHE_S)
        if env.get(ENV_ALERTS_FILE):
            try:
                values["alerts"] = load_rules(env[ENV_ALERTS_FILE])
            except ValueError as exc:
                raise ValueError(f"{ENV_ALERTS_FILE}: {exc}") from None
            values["alerts_file"] = env[ENV_ALERTS_FILE]
        if ENV_ALERTS_INTERVAL_S in env:
            values["alerts_interval_s"] = _float(env, ENV_ALERTS_INTERVAL_S)
        if env.get(ENV_BUDGETS_FILE):
            try:
                values["budgets"] = load_budgets(env[ENV_BUDGETS_FILE])
            except ValueError as exc:
                raise ValueError(f"{ENV_BUDGETS_FILE}: {exc}") from None
        estimate_cost = estimate_cost_from_env(env)
        if estimate_cost is not None:
            values["estimate_cost"] = estimate_cost
        for var, name in ((ENV_METRICS_PUBLIC, "metrics_public"), (ENV_INSECURE, "insecure")):
            if env.get(var):
                values[name] = _flag(env, var)
        if overrides.get("retention") is None:
            values["retention"] = RetentionPolicy.from_env(env)
        request_limits = RequestLimits.env_overrides(env)
        if request_limits:
            values["request_limits"] = RequestLimits(**request_limits)
        limits: dict[str, Any] = {}
        if ENV_MAX_EVENT_AGE_S in env:
            limits["max_past_s"] = _float(env, ENV_MAX_EVENT_AGE_S)
        if ENV_MAX_BODY_BYTES in env:
            limits["max_body_bytes"] = _int(env, ENV_MAX_BODY_BYTES)
        if ENV_MAX_BATCH_ITEMS in env:
            limits["max_batch_items"] = _int(env, ENV_MAX_BATCH_ITEMS)
        if env.get(ENV_NAIVE_TIMESTAMP_TZ):
            try:
                limits["naive_timestamp_tz"] = parse_naive_timestamp_tz(env[ENV_NAIVE_TIMESTAMP_TZ])
            except ValueError as exc:
                raise ValueError(f"{ENV_NAIVE_TIMESTAMP_TZ}: {exc}") from None
        limit_overrides = overrides.pop("limits", None)
        settings = cls(**values)
        if limits:
            settings = replace(settings, limits=replace(settings.limits, **limits))
        if limit_overrides is not None:
            settings = replace(settings, limits=limit_overrides)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def estimate_cost_from_env(env: Mapping[str, str]) -> EstimateCost | None:
    """`ENV_ESTIMATE_COST` (``genai-prices`` or ``event``, any case), None when unset; `ValueError`
    naming the variable otherwise. The one reader of it (``serve`` and ``process``)."""
    text = env.get(ENV_ESTIMATE_COST, "").strip().lower()
    if not text:
        return None
    for value in ESTIMATE_COSTS:
        if text == value:
            return value
    raise ValueError(
        f"{ENV_ESTIMATE_COST} must be one of {', '.join(ESTIMATE_COSTS)}, got {env[ENV_ESTIMATE_COST]!r}"
    )


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {env[name]!r}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env[name].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), got {env[name]!r}")


def _float(env: Mapping[str, str], name: str) -> float:
    try:
        return float(env[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
