"""``llmpulse serve``: run the server (ingest, processor, store and query API in one process).

Flags override environment variables (``HTTP_PORT``, ``LLMPULSE_HOST``, ``LLMPULSE_DB``,
``POSTGRES_DSN``, ``LLMPULSE_LOG``, ``LLMPULSE_ORPHAN_TIMEOUT_S``, ``LLMPULSE_MAX_EVENT_AGE_S``,
``LLMPULSE_LOG_SYNC``, ...), which override the defaults. SIGTERM or Ctrl+C shuts down gracefully:
in-flight requests finish, the processor commits, and everything acknowledged stays in the log.

Without an API key in the store (``llmpulse keys create``), the server listens only on loopback: any
other ``--host`` is refused with exit status 2 unless ``--insecure`` (or ``LLMPULSE_INSECURE=1``) is
given. See docs/security.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from typing import Final

from llmpulse.cli._common import Subcommands, non_negative_float, positive_int
from llmpulse.server import ServerSettings
from llmpulse.server import run as run_server
from llmpulse.server._auth import exposure_problem, is_loopback
from llmpulse.store import StoreError


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
    parser.set_defaults(func=run, parser=parser)


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
    )
    if args.max_event_age is not None:
        limits = dataclasses.replace(settings.limits, max_past_s=args.max_event_age)
        settings = dataclasses.replace(settings, limits=limits)
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
