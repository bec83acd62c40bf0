"""``llmpulse process``: a processor worker in a Kafka consumer group (scale-out mode).

Each worker joins the group, takes some partition numbers of the event topics, and commits their
windows and offsets to the shared store (docs/scale-out.md). Start as many as there are partitions.

Flags override environment variables: ``KAFKA_BROKERS`` (``--broker``), ``LLMPULSE_DB`` then
``POSTGRES_DSN`` (``--db``), ``CONSUMER_GROUP`` (``--group``, default ``llmpulse-processor``),
``LLMPULSE_ORPHAN_TIMEOUT_S`` (``--orphan-timeout``), ``LLMPULSE_KAFKA_SESSION_TIMEOUT_S``
(``--session-timeout``). SIGTERM or SIGINT: commit every partition, leave the group, exit 0. SIGUSR1:
print every thread's stack on stderr (a worker that seems stuck).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Final

from llmpulse.cli._common import Subcommands, non_negative_float

if TYPE_CHECKING:
    from llmpulse.pipeline._workers import GroupWorker

ENV_BROKERS: Final = "KAFKA_BROKERS"
ENV_DB: Final = "LLMPULSE_DB"
ENV_POSTGRES_DSN: Final = "POSTGRES_DSN"
ENV_GROUP: Final = "CONSUMER_GROUP"
ENV_ORPHAN_TIMEOUT_S: Final = "LLMPULSE_ORPHAN_TIMEOUT_S"
ENV_SESSION_TIMEOUT_S: Final = "LLMPULSE_KAFKA_SESSION_TIMEOUT_S"


def add_parser(sub: Subcommands) -> None:
    """Register ``process``."""
    parser = sub.add_parser(
        "process",
        help="run a processor worker in a Kafka consumer group (scale-out mode)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker", metavar="URL", help="kafka://host:port[,host:port...] (env KAFKA_BROKERS)"
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="store URL, postgresql://... or sqlite:///PATH (env LLMPULSE_DB, POSTGRES_DSN)",
    )
    parser.add_argument("--group", help="consumer group (default llmpulse-processor; env CONSUMER_GROUP)")
    parser.add_argument(
        "--orphan-timeout",
        type=non_negative_float,
        metavar="SECONDS",
        help="how long a request waits for its response (default 300; env LLMPULSE_ORPHAN_TIMEOUT_S)",
    )
    parser.add_argument(
        "--session-timeout",
        type=non_negative_float,
        metavar="SECONDS",
        help="consumer group session timeout (default 10; env LLMPULSE_KAFKA_SESSION_TIMEOUT_S)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.set_defaults(func=run)


def _float(env: Mapping[str, str], name: str) -> float:
    try:
        value = float(env[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {env[name]!r}")
    return value


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; the exit status. Blocks."""
    stopping = threading.Event()
    workers: list[GroupWorker] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for w in workers:
            w.stop()

    # installed first: a signal while the worker starts (migrations, joining) still ends it cleanly
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: stacks on stderr
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, os.environ if env is None else env, stopping, workers)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(
    args: argparse.Namespace, env: Mapping[str, str], stopping: threading.Event, workers: list[GroupWorker]
) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        from llmpulse.pipeline._kafka_log import DEFAULT_SESSION_TIMEOUT_S, KafkaLogConfig
        from llmpulse.pipeline._processor import ProcessorConfig
        from llmpulse.pipeline._workers import DEFAULT_GROUP, GroupWorker

        broker = args.broker or env.get(ENV_BROKERS)
        db = args.db or env.get(ENV_DB) or env.get(ENV_POSTGRES_DSN)
        if not broker:
            raise ValueError(f"--broker (or {ENV_BROKERS}) is required")
        if not db:
            raise ValueError(f"--db (or {ENV_DB} / {ENV_POSTGRES_DSN}) is required")
        group = args.group or env.get(ENV_GROUP) or DEFAULT_GROUP
        orphan = args.orphan_timeout
        if orphan is None and ENV_ORPHAN_TIMEOUT_S in env:
            orphan = _float(env, ENV_ORPHAN_TIMEOUT_S)
        session = args.session_timeout
        if session is None and ENV_SESSION_TIMEOUT_S in env:
            session = _float(env, ENV_SESSION_TIMEOUT_S)
        from llmpulse.server import estimate_cost_from_env
        from llmpulse.store import RetentionPolicy

        kept_s = RetentionPolicy.from_env(env).retention_s("calls")  # LLMPULSE_RETENTION_CALLS_DAYS
        estimate_cost = estimate_cost_from_env(env) or "genai-prices"  # LLMPULSE_ESTIMATE_COST
        processor = (
            ProcessorConfig(calls_retention_s=kept_s, estimate_cost=estimate_cost)
            if orphan is None
            else ProcessorConfig(
                orphan_timeout_s=orphan, calls_retention_s=kept_s, estimate_cost=estimate_cost
            )
        )
        config = KafkaLogConfig(
            broker, session_timeout_s=DEFAULT_SESSION_TIMEOUT_S if session is None else session
        )
    except ImportError as exc:
        print(f"llmpulse process: error: needs confluent-kafka (llmpulse[kafka]): {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"llmpulse process: error: {exc}", file=sys.stderr)
        return 2

    from llmpulse.pipeline import PipelineError
    from llmpulse.store import Store, StoreError

    try:
        store = Store.open(db)
    except (StoreError, ValueError) as exc:
        print(f"llmpulse process: error: cannot open the store: {exc}", file=sys.stderr)
        return 1
    worker = GroupWorker(config, store, group=group, processor=processor)
    workers.append(worker)
    if stopping.is_set():  # a signal came while starting: join nothing, exit cleanly
        store.close()
        return 0
    try:
        worker.run()
    except PipelineError as exc:
        print(f"llmpulse process: error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    processed = worker.stats()["processed_events"]
    print(f"llmpulse process: stopped ({processed} events processed)", file=sys.stderr)
    return 0
