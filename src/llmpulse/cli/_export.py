"""``llmpulse export``: a tenant's call records as CSV, JSON lines or Parquet, streamed from the store.

Records are written oldest first (by start time, then request id), read a page at a time with
keyset pagination (`llmpulse.store.iter_calls`) and each page written before the next is read, so
memory holds one page (``--page-size``) whatever the range. The filters are those of ``/v1/calls``
(a `CallFilter`); the range is ``--from`` (inclusive) to ``--to`` (exclusive), RFC 3339 with an
offset, and by default the 30 days before ``--to`` (else now). As ``/v1/calls`` does, both are
rounded up to the minute, so an export holds exactly the calls that ``/v1/metrics/summary`` counts
for the same ``--from`` and ``--to``.

Formats, columns in the order of the ``calls`` table:

* ``jsonl`` (default): one record a line, as ``/v1/calls`` shapes it (times RFC 3339 UTC, metadata
  a JSON object or null).
* ``csv``: a header of the field names, then one row a record: times RFC 3339 UTC, metadata its
  JSON text, an empty cell for null.
* ``parquet`` (needs ``pip install 'llmpulse[export]'``, i.e. pyarrow): one row group a page; times
  ``timestamp[us, tz=UTC]``, token counts int64, latencies and cost float64, the rest strings.

Without ``--out`` (or with ``--out -``) the export goes to stdout (not parquet); a file is written
beside itself and renamed into place when complete, so an interrupted export leaves no partial file.
The command reads the store directly (``--db URL``, else ``LLMPULSE_DB`` / ``POSTGRES_DSN``, else
``sqlite:///llmpulse.db``), like ``llmpulse keys``: run it where the server's database is reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any, Final, Protocol

import msgspec

from llmpulse.cli._common import Subcommands, err_console, non_negative_float, positive_int, progress
from llmpulse.cli._http import CliError
from llmpulse.cli._store import open_store, usage
from llmpulse.store import (
    CALL_FIELDS,
    CALL_STATUSES,
    CallFilter,
    Store,
    StoreError,
    call_row,
    iter_calls,
    minute_bounds,
    rfc3339,
)

#: The formats ``--format`` takes.
FORMATS: Final = ("csv", "jsonl", "parquet")
#: The earliest year ``--from`` and ``--to`` may name (as the query API's).
EARLIEST_YEAR: Final = 1970
#: The range exported when neither ``--from`` nor ``--to`` is given, ending now.
DEFAULT_RANGE: Final = timedelta(days=30)
#: Records read and written at a time (``--page-size``).
DEFAULT_PAGE_SIZE: Final = 1000
#: The store when neither ``--db`` nor an environment variable names one (as ``llmpulse serve``).
#: The exact-match filters: (flag, `CallFilter` field).
FILTER_FLAGS: Final = (
    ("--route", "route"),
    ("--model", "model"),
    ("--provider", "provider"),
    ("--user-id", "user_id"),
    ("--org-id", "org_id"),
    ("--session-id", "session_id"),
    ("--feature", "feature"),
    ("--endpoint", "endpoint"),
    ("--environment", "environment"),
    ("--request-id", "request_id"),
)

_TIMES: Final = ("started_at", "updated_at")
_INTS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_FLOATS: Final = ("latency_ms", "ttft_ms", "cost_usd", "sender_cost_usd")
_Aware = Annotated[datetime, msgspec.Meta(tz=True)]
_json_encode: Final = msgspec.json.Encoder().encode


def add_parser(sub: Subcommands) -> None:
    """Register ``export``."""
    parser = sub.add_parser(
        "export",
        help="export a tenant's call records (CSV, JSON lines, Parquet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenant", required=True, help="the tenant whose records to export")
    parser.add_argument(
        "--from", dest="start", type=rfc3339_arg, metavar="RFC3339", help="first time (inclusive)"
    )
    parser.add_argument("--to", dest="end", type=rfc3339_arg, metavar="RFC3339", help="end (exclusive)")
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="output format (default: jsonl)")
    parser.add_argument("--out", metavar="FILE", help="write to FILE (default, or '-': stdout)")
    for flag, field in FILTER_FLAGS:
        what = "user id (else user id hash)" if field == "user_id" else field.replace("_", " ")
        parser.add_argument(flag, dest=field, metavar="VALUE", help=f"only records with this {what}")
    parser.add_argument("--status", choices=CALL_STATUSES, help="only records of this status")
    parser.add_argument(
        "--min-cost-usd", type=non_negative_float, metavar="USD", help="only records costing at least this"
    )
    parser.add_argument(
        "--page-size",
        type=positive_int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"records read and written at a time (default {DEFAULT_PAGE_SIZE})",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="store URL (default: $LLMPULSE_DB, $POSTGRES_DSN or sqlite:///llmpulse.db)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stderr")
    parser.set_defaults(func=run, parser=parser)


def rfc3339_arg(text: str) -> datetime:
    """An argparse type: an RFC 3339 timestamp with an offset, from 1970 on, in UTC."""
    try:
        value = msgspec.convert(text, _Aware).astimezone(UTC)
    except (msgspec.ValidationError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 timestamp with an offset, e.g. 2025-11-19T10:00:00Z ({exc}), got {text!r}"
        ) from None
    if value.year < EARLIEST_YEAR:
        raise argparse.ArgumentTypeError(f"expected a time from {EARLIEST_YEAR} on, got {text!r}")
    return value


def call_filter(args: argparse.Namespace, now: datetime) -> CallFilter:
    """The `CallFilter` of the flags: ``--to`` defaults to `now`, ``--from`` to 30 days before ``--to``;
    both rounded up to the minute as ``/v1/calls`` rounds them (`minute_bounds`).

    Raises:
        ValueError: ``--from`` is not before ``--to`` (naming both flags), or a bound beyond 9999.
    """
    end = args.end or now
    start = args.start or end - DEFAULT_RANGE
    if start >= end:
        to = "" if args.end else " (default: now)"
        raise ValueError(f"--from must be before --to{to}, got {rfc3339(start)} and {rfc3339(end)}")
    try:
        start, end = minute_bounds(start, end)
    except (ValueError, OverflowError):  # rounded up past the year 9999
        raise ValueError(f"--to is out of range (up to 9999), got {rfc3339(end)}") from None
    matches = {field: getattr(args, field) for _, field in FILTER_FLAGS}
    return CallFilter(args.tenant, start, end, status=args.status, min_cost_usd=args.min_cost_usd, **matches)


# -- writers -----------------------------------------------------------------------------------------


class Sink(Protocol):
    """Writes pages of records (as `iter_calls` yields them) in one format."""

    def write(self, page: list[dict[str, Any]]) -> None:
        """Write one page. Blocks (I/O)."""

    def close(self) -> None:
        """Finish the output (a footer, a flush); the stream itself stays open. Blocks."""


class JsonlSink:
    """One `call_row` as JSON per line."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, page: list[dict[str, Any]]) -> None:
        """Write the page's lines. Blocks."""
        self._out.write(b"".join(_json_encode(call_row(r)) + b"\n" for r in page))
        self._out.flush()

    def close(self) -> None:
        """Flush. Blocks."""
        self._out.flush()


class CsvSink:
    """A header of the field names, then one row a record: times RFC 3339, metadata its JSON text."""

    def __init__(self, out: IO[bytes]) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text)
        self._csv.writerow(CALL_FIELDS)

    def write(self, page: list[dict[str, Any]]) -> None:
        """Write the page's rows. Blocks."""
        for record in page:
            row = call_row(record)
            row["metadata"] = record["metadata"]  # the stored JSON text, not the decoded object
            self._csv.writerow(row.values())
        self._text.flush()

    def close(self) -> None:
        """Flush and let go of the stream (left open). Blocks."""
        try:
            self._text.flush()
        finally:
            self._text.detach()


def parquet_schema() -> Any:
    """The Parquet (Arrow) schema of an export: times ``timestamp[us, tz=UTC]``, token counts int64,
    latencies and cost float64, every other field a string (metadata its JSON text); only the key
    and the counts are non-null. Needs pyarrow (`ImportError` without it)."""
    import pyarrow as pa

    types: dict[str, Any] = {name: pa.timestamp("us", tz="UTC") for name in _TIMES}
    types |= {name: pa.int64() for name in _INTS}
    types |= {name: pa.float64() for name in _FLOATS}
    required = {"tenant_id", "request_id", *_TIMES, *_INTS}
    return pa.schema(
        [pa.field(name, types.get(name, pa.string()), nullable=name not in required) for name in CALL_FIELDS]
    )


class ParquetSink:
    """One Parquet row group per page, with `parquet_schema`."""

    def __init__(self, out: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = parquet_schema()
        self._writer = pq.ParquetWriter(out, self._schema)

    def write(self, page: list[dict[str, Any]]) -> None:
        """Write the page as one row group. Blocks."""
        columns = {name: [r[name] for r in page] for name in CALL_FIELDS}
        for name in _TIMES:
            columns[name] = [datetime.fromtimestamp(t, UTC) for t in columns[name]]
        table = self._pa.Table.from_pydict(columns, schema=self._schema)
        self._writer.write_table(table, row_group_size=len(page))

    def close(self) -> None:
        """Write the footer. Blocks."""
        self._writer.close()


SINKS: Final[dict[str, Callable[[IO[bytes]], Sink]]] = {
    "csv": CsvSink,
    "jsonl": JsonlSink,
    "parquet": ParquetSink,
}


def export(
    store: Store,
    flt: CallFilter,
    out: IO[bytes],
    fmt: str,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Write the filter's records to `out` in `fmt`, a page at a time; returns how many. `on_page`
    is called with each page's size once it is written. Blocks (the store and `out`).

    Raises:
        StoreError: the store could not be read.
        OSError: `out` could not be written.
        ImportError: ``parquet`` without pyarrow.
    """
    sink = SINKS[fmt](out)
    written = 0
    try:
        for page in iter_calls(store, flt, page_size):
            sink.write(page)
            written += len(page)
            if on_page is not None:
                on_page(len(page))
    finally:
        sink.close()
    return written


# -- the command ------------------------------------------------------------------------------------


def _one_line(exc: Exception) -> str:
    """The error's message on one line (a driver's message may span several)."""
    return " ".join(str(exc).split())


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file beside `path` renamed onto it once the export is complete (a
    special file such as a pipe is written in place)."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    target = Path(path)
    if target.exists() and not target.is_file():
        with target.open("wb") as f:
            yield f
        return
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with temp.open("xb") as f:
            yield f
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _pyarrow_missing() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return True
    return False


def run(args: argparse.Namespace) -> int:
    """Export the records with a progress bar on stderr (when it is a terminal), then one summary
    line. Blocks."""
    try:
        now = datetime.now(UTC)
        flt = call_filter(args, now)
    except ValueError as exc:
        usage(args, str(exc))
    to_stdout = args.out is None or args.out == "-"
    if args.format == "parquet":
        if to_stdout:
            usage(args, "--format parquet needs a file: pass --out FILE")
        if _pyarrow_missing():
            usage(args, "--format parquet needs pyarrow: pip install 'llmpulse[export]'")
    console = err_console()
    show = not args.quiet and console.is_terminal
    destination = "stdout" if to_stdout else args.out
    with open_store(args) as store, contextlib.ExitStack() as stack:
        on_page: Callable[[int], None] | None = None
        if show:
            bar = stack.enter_context(progress(console))
            on_page = functools.partial(bar.advance, bar.add_task("call records", total=None))
        try:
            with _output(args.out) as out:
                written = export(store, flt, out, args.format, page_size=args.page_size, on_page=on_page)
        except StoreError as exc:
            raise CliError(f"cannot read the call records: {_one_line(exc)}") from None
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, and keep Python's exit flush from failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except OSError as exc:
            raise CliError(f"cannot write {destination}: {exc.strerror or exc}") from None
    if not args.quiet:
        start, end = flt.start or now, flt.end or now  # always set by call_filter
        console.print(
            f"exported {written:,} call records of tenant {args.tenant!r} "
            f"from {rfc3339(start)} to {rfc3339(end)} to {destination} as {args.format}",
            highlight=False,
            soft_wrap=True,
        )
    return 0
