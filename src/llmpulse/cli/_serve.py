"""``llmpulse serve``: run the server (ingest, processor, store and query API in one process).

Flags override environment variables (``HTTP_PORT``, ``LLMPULSE_HOST``, ``LLMPULSE_DB``,
``POSTGRES_DSN``, ``LLMPULSE_LOG``, ``LLMPULSE_ORPHAN_TIMEOUT_S``, ``LLMPULSE_MAX_EVENT_AGE_S``,
``LLMPULSE_LOG_SYNC``, ...), which override the defaults. SIGTERM or Ctrl+C shuts down gracefully:
in-flight requests finish, the processor commits, and everything acknowledged stays in the log.

Retention (docs/embedded.md#retention): call records are kept 30 days, minute windows 14, hourly
rollups 396, daily rollups forever and consumed log records an hour; the ``--retention-*`` and
``--prune-*`` flags (or ``LLMPULSE_RETENTION_*``, ``LLMPULSE_PRUNE_*``) change that.

Without an API key in the store (``llmpulse keys create``), the server listens only on loopback: any
other ``--host`` is refused with exit status 2 unless ``--insecure`` (or ``LLMPULSE_INSECURE=1``) is
given. See docs/security.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from typing import Any, Final

from llmpulse.alerts import load_rules
from llmpulse.cli._common import Subcommands, non_negative_float, positive_int
from llmpulse.server import ServerSettings
from llmpulse.server import run as run_server
from llmpulse.server._auth import exposure_problem, is_loopback
from llmpulse.server._budgets_file import load_budgets
from llmpulse.store import RetentionSettingError, StoreError


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def _sync(text: str) -> str:
    value = text.upper()
    if value not in ("FULL", "NORMAL"):
        raise argparse.ArgumentTypeError(f"expected FULL or NORMAL, got {text!r}")
    return value


def add_parser(sub: Subcommands) -> None:
    """Register ``serve``."""
    parser = sub.add_parser(
        "serve",
        help="run the server (ingest, processor, store, query API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1; env LLMPULSE_HOST)")
    parser.add_argument("--port", type=_port, help="port to listen on (default 8080; env HTTP_PORT)")
    parser.add_argument(
        "--otlp-grpc-port",
        type=_port,
        metavar="PORT",
        help="also receive OTLP traces over gRPC on this port (off unless set; 4317 is the convention; "
        "env LLMPULSE_OTLP_GRPC_PORT; docs/otlp-receiver.md)",
    )
    parser.add_argument(
        "--db", metavar="URL", help="store URL (default sqlite:///llmpulse.db; env LLMPULSE_DB, POSTGRES_DSN)"
    )
    parser.add_argument(
        "--log",
        metavar="URL",
        help="event log URL (default: beside the store, x.db → x.log.db; env LLMPULSE_LOG)",
    )
    parser.add_argument(
        "--demo", action="store_true", default=None, help="post live generated traffic to the server itself"
    )
    parser.add_argument(
        "--max-event-age",
        type=non_negative_float,
        metavar="SECONDS",
        help="oldest event timestamp accepted (default 30 days; env LLMPULSE_MAX_EVENT_AGE_S)",
    )
    parser.add_argument(
        "--orphan-timeout",
        type=non_negative_float,
        metavar="SECONDS",
        help="how long a request waits for its response (default 300; env LLMPULSE_ORPHAN_TIMEOUT_S)",
    )
    parser.add_argument(
        "--log-sync",
        type=_sync,
        metavar="FULL|NORMAL",
        help="event log durability: FULL survives power loss, NORMAL a crash (default FULL)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="listen beyond loopback even though no API key is configured (env LLMPULSE_INSECURE=1)",
    )
    parser.add_argument(
        "--broker",
        metavar="kafka://HOST:PORT[,HOST:PORT...]",
        help="use Kafka topics as the event log instead of SQLite (env KAFKA_BROKERS; docs/scale-out.md)",
    )
    parser.add_argument(
        "--kafka-partitions",
        type=positive_int,
        metavar="N",
        help="partitions of each event topic created when missing (default 6; env LLMPULSE_KAFKA_PARTITIONS)",
    )
    parser.add_argument(
        "--no-processor",
        action="store_true",
        help="ingest and query only: another node aggregates the log (with --broker)",
    )
    parser.add_argument(
        "--group",
        help="with --broker --no-processor: the consumer group of the 'llmpulse process' workers whose "
        "lag holds ingest back (default llmpulse-processor; env CONSUMER_GROUP)",
    )
    parser.add_argument(
        "--budgets",
        metavar="FILE",
        help="shared budgets to create or replace at start: a YAML file (env LLMPULSE_BUDGETS_FILE)",
    )
    parser.add_argument(
        "--alerts",
        metavar="FILE",
        help="alert rules and notifiers, a YAML file read again on SIGHUP (env LLMPULSE_ALERTS_FILE)",
    )
    _add_retention_flags(parser)
    parser.set_defaults(func=run, parser=parser)


#: Retention flags: (flag, `RetentionPolicy` field, argparse type, metavar, help).
_RETENTION_FLAGS: Final = (
    ("--retention-calls", "calls_days", non_negative_float, "DAYS",
     "days call records are kept; 0 forever (default 30; env LLMPULSE_RETENTION_CALLS_DAYS)"),
    ("--retention-minutes", "minutes_days", non_negative_float, "DAYS",
     "days minute windows are kept (default 14; env LLMPULSE_RETENTION_MINUTES_DAYS)"),
    ("--retention-hours", "hours_days", non_negative_float, "DAYS",
     "days hourly rollups are kept (default 396; env LLMPULSE_RETENTION_HOURS_DAYS)"),
    ("--retention-days", "days_days", non_negative_float, "DAYS",
     "days daily rollups are kept; 0 forever (default 0; env LLMPULSE_RETENTION_DAYS_DAYS)"),
    ("--retention-log", "log_s", non_negative_float, "SECONDS",
     "seconds consumed event log records are kept (default 3600; env LLMPULSE_RETENTION_LOG_S)"),
    ("--prune-interval", "interval_s", non_negative_float, "SECONDS",
     "seconds between prunes; 0: this server prunes nothing (default 60; env LLMPULSE_PRUNE_INTERVAL_S)"),
    ("--prune-batch", "batch_rows", positive_int, "ROWS",
     "most rows one prune transaction deletes (default 1000; env LLMPULSE_PRUNE_BATCH_ROWS)"),
)  # fmt: skip


def _add_retention_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("retention")
    for flag, field, kind, metavar, text in _RETENTION_FLAGS:
        group.add_argument(flag, dest=f"retention_{field}", type=kind, metavar=metavar, help=text)


def _with_retention_flags(settings: ServerSettings, args: argparse.Namespace) -> ServerSettings:
    """`settings` with the retention flags given; a bad combination raises `ValueError` naming the flag."""
    given: dict[str, Any] = {}
    for _, field, *_ in _RETENTION_FLAGS:
        value = getattr(args, f"retention_{field}", None)
        if value is not None:
            given[field] = value
    if not given:
        return settings
    try:
        retention = dataclasses.replace(settings.retention, **given)
    except RetentionSettingError as exc:
        flags = [flag for flag, field, *_ in _RETENTION_FLAGS if field in exc.fields and field in given]
        raise ValueError(f"{', '.join(flags)}: {exc}" if flags else str(exc)) from exc
    return dataclasses.replace(settings, retention=retention)


#: URL schemes the store accepts.
STORE_SCHEMES: Final = ("sqlite", "postgresql", "postgres")


def check_urls(settings: ServerSettings) -> None:
    """Refuse store and log URLs the server cannot open, before it starts. Raises `ValueError`."""
    scheme = settings.db_url.split("://", 1)[0] if "://" in settings.db_url else ""
    if scheme.split("+", 1)[0] not in STORE_SCHEMES:
        raise ValueError(f"the store URL must be sqlite:///PATH or postgresql://..., got {settings.db_url!r}")
    if settings.broker_url:
        try:
            from llmpulse.pipeline._kafka_log import parse_brokers
        except ImportError as exc:
            raise ValueError(f"--broker needs confluent-kafka (the llmpulse[kafka] extra): {exc}") from None
        parse_brokers(settings.broker_url)
        return
    log_url = settings.resolved_log_url
    if not log_url.startswith("sqlite:///") or log_url == "sqlite:///":
        raise ValueError(f"the event log URL must be sqlite:///PATH, got {log_url!r}")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Settings from the environment and the flags. Raises `ValueError` naming a bad value."""
    settings = ServerSettings.from_env(
        host=args.host,
        port=args.port,
        otlp_grpc_port=args.otlp_grpc_port,
        db_url=args.db,
        log_url=args.log,
        broker_url=args.broker,
        kafka_partitions=args.kafka_partitions,
        run_processor=False if args.no_processor else None,
        consumer_group=args.group,
        demo=args.demo,
        orphan_timeout_s=args.orphan_timeout,
        log_sync=args.log_sync,
        insecure=args.insecure,
        budgets=None if args.budgets is None else load_budgets(args.budgets),
        alerts=None if args.alerts is None else load_rules(args.alerts),
        alerts_file=args.alerts,
    )
    if args.max_event_age is not None:
        limits = dataclasses.replace(settings.limits, max_past_s=args.max_event_age)
        settings = dataclasses.replace(settings, limits=limits)
    settings = _with_retention_flags(settings, args)
    check_urls(settings)
    return settings


def run(args: argparse.Namespace) -> int:
    """Build the settings and serve until a signal. Blocks. Bad settings exit with status 2."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    if not settings.insecure:
        try:
            problem = exposure_problem(settings.host, settings.db_url)
        except (StoreError, ValueError) as exc:
            problem = f"cannot check the store for API keys before listening on {settings.host}: {exc}"
        if problem is not None:
            print(f"llmpulse serve: error: {problem}", file=sys.stderr)
            return 2
    elif not is_loopback(settings.host):
        print(
            f"llmpulse serve: warning: --insecure: listening on {settings.host or 'every interface'}; "
            "without API keys anyone who reaches it can read and write every tenant's data",
            file=sys.stderr,
        )
    # uvicorn re-raises Ctrl+C once its graceful shutdown is complete, though not always as an
    # exception that reaches this frame: "stopped" is said either way
    with contextlib.suppress(KeyboardInterrupt):
        run_server(settings)
    print("llmpulse serve: stopped", file=sys.stderr)
    return 0
