"""``llmpulse replay FILE.jsonl``: backfill a file of events (one JSON event a line, any kind).

Lines are posted as NDJSON batches of at most ``--batch-size`` lines and ``--max-batch-bytes`` bytes,
unchanged, so the server validates exactly what the file holds. Blank lines are skipped. Rejected
lines are reported with their line numbers (1-based). Events older than the server's max event age
(``--max-event-age`` of ``llmpulse serve``, 30 days by default) are rejected, so raise it to backfill
older data.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import httpx

from llmpulse.cli._common import Subcommands, add_url, auth_headers, err_console, positive_int, progress
from llmpulse.cli._http import CliError
from llmpulse.cli._send import NDJSON, BatchSender, report

#: Default upper bound of one posted body; below the server's default 10 MiB body limit.
DEFAULT_MAX_BATCH_BYTES: Final = 4 * 1024 * 1024


def add_parser(sub: Subcommands) -> None:
    """Register ``replay``."""
    parser = sub.add_parser(
        "replay",
        help="backfill a JSONL file of events into a running server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, metavar="FILE.jsonl", help="one JSON event a line")
    add_url(parser)
    parser.add_argument("--batch-size", type=positive_int, default=500, help="lines per post (default 500)")
    parser.add_argument(
        "--max-batch-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_BYTES,
        help=f"largest body posted (default {DEFAULT_MAX_BATCH_BYTES})",
    )
    parser.add_argument(
        "--max-listed", type=positive_int, default=50, help="rejected lines listed at the end (default 50)"
    )
    parser.set_defaults(func=run)


def batches(stream: BinaryIO, batch_size: int, max_bytes: int) -> Iterator[tuple[bytes, list[int], int]]:
    """Yield (NDJSON body, line numbers of its items, bytes of the file consumed) from `stream`.

    Blank lines are skipped but counted; a line longer than `max_bytes` travels alone (the server
    then refuses it with 413, and it is reported).
    """
    lines: list[bytes] = []
    numbers: list[int] = []
    size = consumed = 0
    for number, line in enumerate(stream, start=1):
        consumed += len(line)
        item = line.strip()
        if not item:
            continue
        if lines and (len(lines) >= batch_size or size + len(item) + 1 > max_bytes):
            yield b"\n".join(lines) + b"\n", numbers, consumed - len(line)
            lines, numbers, size = [], [], 0
            consumed = len(line)
        lines.append(item)
        numbers.append(number)
        size += len(item) + 1
    if lines or consumed:
        yield (b"\n".join(lines) + b"\n") if lines else b"", numbers, consumed


def run(args: argparse.Namespace) -> int:
    """Post the file's lines with a progress bar (by bytes), then report. Blocks."""
    path: Path = args.file
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    console = err_console()
    with (
        stream,
        httpx.Client(timeout=60.0, headers=auth_headers(args)) as client,
        progress(console, unit="bytes") as bar,
    ):
        total = os.fstat(stream.fileno()).st_size
        task = bar.add_task(path.name, total=total or None)
        sender = BatchSender(client, args.url)
        for body, numbers, consumed in batches(stream, args.batch_size, args.max_batch_bytes):
            if numbers:
                sender.send(body, [f"line {n}" for n in numbers], NDJSON)
            bar.advance(task, consumed)
    return report(console, sender.tally, what=f"replay {path}", max_listed=args.max_listed)
