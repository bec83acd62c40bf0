"""``llmpulse demo``: post realistic generated traffic to a running server.

Traffic comes from `llmpulse.testing.traffic`: request/response pairs over several tenants, routes
and models with Zipf-like popularity, a log-normal latency distribution and an error rate. Without
``--rate`` every call is generated at once, with timestamps spread over the last ``--spread`` seconds,
and posted as fast as the server accepts; with ``--rate`` calls are generated and posted in real time
(timestamps now) at that many pairs per second.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from llmpulse.cli._common import (
    Subcommands,
    add_url,
    auth_headers,
    err_console,
    fraction,
    non_negative_float,
    positive_int,
    progress,
)
from llmpulse.cli._send import JSON, BatchSender, report
from llmpulse.events import Event
from llmpulse.testing import DEFAULT_MODELS, encode_batch_json, generate_events, iter_batches

#: Seconds between two generations in ``--rate`` mode.
PACE_TICK_S: Final = 0.5


def add_parser(sub: Subcommands) -> None:
    """Register ``demo``."""
    parser = sub.add_parser(
        "demo",
        help="post realistic generated traffic to a running server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(parser)
    parser.add_argument(
        "--requests", type=positive_int, default=1000, help="model calls to send (default 1000)"
    )
    parser.add_argument(
        "--tenants", type=positive_int, default=3, help="tenants tenant-1 … tenant-K (default 3)"
    )
    parser.add_argument("--routes", type=positive_int, default=4, help="routes per tenant (default 4)")
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL", help="model names to use"
    )
    parser.add_argument(
        "--error-rate", type=fraction, default=0.03, help="fraction of failed calls (default 0.03)"
    )
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=0.0,
        metavar="PAIRS_PER_S",
        help="pace the calls in real time at this many per second (default: all at once)",
    )
    parser.add_argument(
        "--spread",
        type=non_negative_float,
        default=300.0,
        metavar="SECONDS",
        help="without --rate, spread timestamps over the last SECONDS (default 300)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed; the same seed posts the same request ids again"
    )
    parser.add_argument("--batch-size", type=positive_int, default=500, help="events per post (default 500)")
    parser.set_defaults(func=run)


def _send_events(sender: BatchSender, events: list[Event], first: int, batch_size: int) -> int:
    number = first
    for batch in iter_batches(events, batch_size):
        labels = [f"event {n}" for n in range(number, number + len(batch))]
        sender.send(encode_batch_json(batch), labels, JSON)
        number += len(batch)
    return number


def run(args: argparse.Namespace) -> int:
    """Generate and post the traffic with a progress bar, then print the tally. Blocks."""
    console = err_console()
    seed = args.seed if args.seed is not None else random.getrandbits(32)
    spread = max(args.spread, 1.0)
    with httpx.Client(timeout=30.0, headers=auth_headers(args)) as client, progress(console) as bar:
        sender = BatchSender(client, args.url)
        task = bar.add_task("calls", total=args.requests)
        if args.rate <= 0:
            now = datetime.now(UTC)
            events = generate_events(
                args.requests,
                tenants=args.tenants,
                routes=args.routes,
                models=args.models,
                start=now - timedelta(seconds=spread),
                duration_s=spread,
                error_rate=args.error_rate,
                seed=seed,
            )
            bar.update(task, total=len(events), description="events")
            number = 0
            for batch in iter_batches(events, args.batch_size):
                number = _send_events(sender, batch, number, args.batch_size)
                bar.update(task, completed=number)
        else:
            started = time.monotonic()
            sent_calls = number = tick = 0
            while sent_calls < args.requests:
                time.sleep(PACE_TICK_S)
                tick += 1
                due = min(args.requests, int(args.rate * (time.monotonic() - started)))
                if due <= sent_calls:
                    continue
                events = generate_events(
                    due - sent_calls,
                    tenants=args.tenants,
                    routes=args.routes,
                    models=args.models,
                    start=datetime.now(UTC) - timedelta(seconds=PACE_TICK_S),
                    duration_s=PACE_TICK_S,
                    error_rate=args.error_rate,
                    seed=(seed << 20) + tick,
                )
                number = _send_events(sender, events, number, args.batch_size)
                sent_calls = due
                bar.update(task, completed=sent_calls)
    console.print(f"seed {seed}; query with: llmpulse query --url {args.url} --tenant tenant-1")
    return report(console, sender.tally, what="demo", max_listed=20)
