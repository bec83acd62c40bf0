"""The store's tables (SQLAlchemy Core, portable types) and the codecs between rows and model objects.

Times are stored as epoch seconds in UTC: ``windows.window_start`` as an integer (the window's first
second, aligned to the minute, as in `WindowKey`), other instants (``updated_at``, ``seen_at``,
``expires_at``, ``watermark``) as double precision. Integer epochs compare, index and sort the same on
SQLite and Postgres, need no timezone handling, and match what the processor computes with.

The migrations in ``migrations/versions`` create exactly these tables; a test checks they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import sqlalchemy as sa

from llmpulse.store._histogram import Histogram
from llmpulse.store._model import WindowDelta

#: Longest name column (tenant, route, model, consumer, counter), as `llmpulse.events` limits names.
MAX_NAME_LEN: Final = 256
#: Longest identifier column (``request_id``), as `llmpulse.events` limits identifiers.
MAX_ID_LEN: Final = 128

#: Integer counters of a window (BigInteger columns named as the `WindowDelta` fields).
COUNT_FIELDS: Final = (
    "requests",
    "errors",
    "timeouts",
    "late",
    "prompt_tokens",
    "completion_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "latency_count",
    "ttft_count",
    "cost_unknown",
)
#: Floating-point sums of a window (double precision columns).
SUM_FIELDS: Final = ("latency_sum_ms", "ttft_sum_ms", "cost_usd")
#: Histograms of a window (compact JSON text ``{"bucket": count}``).
HIST_FIELDS: Final = ("latency_hist", "ttft_hist")
#: The window's key columns, in primary-key order.
KEY_FIELDS: Final = ("tenant_id", "route", "model", "window_start")

metadata = sa.MetaData()

#: Primary key (tenant_id, window_start, route, model): it is the only index, and it serves both the
#: checkpoint's reads (a tenant's windows at one start) and `query_windows` (a tenant's windows by
#: start). On SQLite the table is WITHOUT ROWID, so each window is one B-tree entry: `make bench`
#: showed the window upsert was the processor's largest cost with a rowid table plus a second index.
#: ``version`` counts the commits that changed the window (1 after the first): published window rows
#: carry it, so a reader of ``llm.metrics`` can tell a stale or repeated row from a newer one.


def _aggregate_table(name: str) -> sa.Table:
    """A table of window-shaped aggregates: the minute windows, or an hourly or daily rollup."""
    return sa.Table(
        name,
        metadata,
        sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
        sa.Column("route", sa.String(MAX_NAME_LEN), nullable=False),
        sa.Column("model", sa.String(MAX_NAME_LEN), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False, autoincrement=False),
        *(sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in COUNT_FIELDS),
        *(sa.Column(n, sa.Double, nullable=False, server_default="0") for n in SUM_FIELDS),
        *(sa.Column(n, sa.Text, nullable=False, server_default="{}") for n in HIST_FIELDS),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", "window_start", "route", "model", name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


windows = _aggregate_table("windows")
#: Hourly and daily rollups: the same columns as `windows`, ``window_start`` aligned to the hour or
#: the (UTC) day. An hour of a tenant is rolled up from its minute windows once it is over (see
#: `rollup_progress`); later deltas for it are added to both in the commit that writes them. A range
#: of whole rolled hours or days reads a few rows and gets exactly the minute-level answer.
rollups_hour = _aggregate_table("rollups_hour")
rollups_day = _aggregate_table("rollups_day")
#: The route and model of a rollup row that holds a tenant's every series together (its *total* for
#: the hour or day): written beside the series' rows whenever they are (the roller, late deltas), so
#: a tenant-wide summary of a month reads one row a day instead of one a series. No real route or
#: model is empty (names are 1 to 256 characters), and every reader of series excludes these rows
#: (`llmpulse.store._ranges.piece_select`). Migration 0012 adds them to rollups made before it.
ALL_SERIES: Final = ""
#: How far each tenant's rollups go (`llmpulse.store._roller`): every hour before ``rolled_through``
#: (epoch seconds, a whole hour; 0: none) is in ``rollups_hour`` and ``rollups_day``, and a commit
#: adds the deltas of such an hour to them as well as to the minute windows; an hour from
#: ``rolled_through`` on is in the minute windows only, until the roller sums it into the rollups and
#: moves ``rolled_through`` past it. A commit creates its tenants' rows (at 0) and holds them (a
#: share lock on Postgres) while it writes, so the roller, which takes a row exclusively, sees every
#: minute delta of the hour it rolls. Migration 0007 creates it.
rollup_progress = sa.Table(
    "rollup_progress",
    metadata,
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("rolled_through", sa.BigInteger, nullable=False, autoincrement=False),
    sa.PrimaryKeyConstraint("tenant_id", name="pk_rollup_progress"),
)
#: Seconds per bucket of each aggregate table, finest first.
AGGREGATE_TABLES: Final[tuple[tuple[sa.Table, int], ...]] = (
    (windows, 60),
    (rollups_hour, 3600),
    (rollups_day, 86400),
)

#: Longest ``error_type`` of a call record (longer ones are cut).
MAX_ERROR_TYPE_LEN: Final = 128
#: Longest ``error_message`` of a call record (longer ones are cut, ending in ``…``).
MAX_ERROR_MESSAGE_LEN: Final = 1024
#: Largest ``metadata`` of a call record as compact JSON; larger metadata keeps its first keys that
#: fit and gains ``"_truncated": true``.
MAX_RECORD_METADATA_BYTES: Final = 4096

#: One row per counted call (`CallRecord`), keyed and clustered by (tenant_id, started_at,
#: request_id): a tenant's records lie in time order, so every range read (`/v1/calls`, `/v1/costs`,
#: export, retention) is one contiguous run of rows, and new records are appended where their tenant's
#: newest are. On SQLite the table is WITHOUT ROWID (the key is the table). A key led by the random
#: request id put each new record on its own index page: a record's insert cost 2.3× what it costs
#: now (migration 0008 moved to this key). The index on (second of ``started_at``, request_id) finds
#: a request id near a time whatever its tenant: the processor's lookups of request ids it let go of
#: (`Store.lookup_cold`) come with the time their record starts.
calls = sa.Table(
    "calls",
    metadata,
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("request_id", sa.String(MAX_ID_LEN), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("route", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("model", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("provider", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(MAX_ERROR_TYPE_LEN), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=True),
    sa.Column("ttft_ms", sa.Double, nullable=True),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Double, nullable=True),
    sa.Column("cost_source", sa.String(16), nullable=True),
    sa.Column("user_id", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("user_id_hash", sa.String(MAX_ID_LEN), nullable=True),
    sa.Column("org_id", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("session_id", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("feature", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("endpoint", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("environment", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("trace_id", sa.String(MAX_ID_LEN), nullable=True),
    sa.Column("span_id", sa.String(MAX_ID_LEN), nullable=True),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("sender_cost_usd", sa.Double, nullable=True),  # migration 0009
    sa.PrimaryKeyConstraint("tenant_id", "started_at", "request_id", name="pk_calls"),
    sqlite_with_rowid=False,
)
#: The second a record starts in (an integer: SQLite truncates, Postgres rounds; lookups allow for
#: both) and its request id: finds a request id near a time whatever the tenant, one index seek per
#: second. Led by the second, new entries land among the last seconds' few pages.
CALL_SECOND: Final = sa.cast(calls.c.started_at, sa.BigInteger)
sa.Index("ix_calls_second_request", CALL_SECOND, calls.c.request_id)

processor_offsets = sa.Table(
    "processor_offsets",
    metadata,
    sa.Column("consumer", sa.String(MAX_NAME_LEN), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

#: Halves of pairs waiting for their other half; ``tenant_id`` is "" for a response naming none.
processor_pending = sa.Table(
    "processor_pending",
    metadata,
    sa.Column("consumer", sa.String(MAX_NAME_LEN), primary_key=True),
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), primary_key=True),
    sa.Column("request_id", sa.String(MAX_ID_LEN), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("seen_at", sa.Double, nullable=False),
    sa.Column("expired", sa.Boolean, nullable=False),
)
#: `Store.lookup_cold` reads a consumer's pending entries by request id, whatever their tenant.
sa.Index(
    "ix_processor_pending_consumer_request", processor_pending.c.consumer, processor_pending.c.request_id
)

processor_dedup = sa.Table(
    "processor_dedup",
    metadata,
    sa.Column(
        "chunk_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("consumer", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("keys", sa.LargeBinary, nullable=False),
)
sa.Index("ix_processor_dedup_consumer_expires", processor_dedup.c.consumer, processor_dedup.c.expires_at)

processor_meta = sa.Table(
    "processor_meta",
    metadata,
    sa.Column("consumer", sa.String(MAX_NAME_LEN), primary_key=True),
    sa.Column("watermark", sa.Double, nullable=False),
)

server_counters = sa.Table(
    "server_counters",
    metadata,
    sa.Column("name", sa.String(MAX_NAME_LEN), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

#: API keys (`llmpulse.store._keys`): only the SHA-256 of each key is stored, looked up by its unique
#: index; ``key_id`` is the public id the CLI lists and revokes by.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("last_used_at", sa.Double, nullable=True),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
)
sa.Index("ux_api_keys_key_hash", api_keys.c.key_hash, unique=True)

_hist_decoder: Final = msgspec.json.Decoder(dict[int, int])
_keys_decoder: Final = msgspec.msgpack.Decoder(list[str])


_hist_encoder: Final = msgspec.json.Encoder()


def encode_hist(hist: Mapping[int, int]) -> str:
    """Compact JSON text of a histogram (``{"12":4,"-3":1}``), buckets in no particular order.

    Not sorted: sorting cost four times the encoding itself on the processor's commit path.
    """
    if not hist:
        return "{}"
    return _hist_encoder.encode(hist).decode()


def decode_hist(text: str | bytes) -> Histogram:
    """The histogram a stored JSON text holds."""
    return _hist_decoder.decode(text)


def encode_keys(keys: list[str]) -> bytes:
    """A dedup chunk's blob: the msgpack array of its keys."""
    return msgspec.msgpack.encode(keys)


def decode_keys(blob: bytes) -> list[str]:
    """The keys a dedup chunk's blob holds."""
    return _keys_decoder.decode(blob)


def delta_from_row(row: Mapping[Any, Any]) -> WindowDelta:
    """A `WindowDelta` holding a stored window row's figures."""
    d = WindowDelta()
    for name in COUNT_FIELDS:
        setattr(d, name, int(row[name]))
    for name in SUM_FIELDS:
        setattr(d, name, float(row[name]))
    d.latency_hist = decode_hist(row["latency_hist"])
    d.ttft_hist = decode_hist(row["ttft_hist"])
    return d


def row_values(delta: WindowDelta) -> dict[str, Any]:
    """The non-key column values of a window row holding `delta`'s figures."""
    values: dict[str, Any] = {name: getattr(delta, name) for name in COUNT_FIELDS}
    values.update({name: getattr(delta, name) for name in SUM_FIELDS})
    values["latency_hist"] = encode_hist(delta.latency_hist)
    values["ttft_hist"] = encode_hist(delta.ttft_hist)
    return values


#: Retention (`llmpulse.store._retention`) deletes the aggregates' oldest rows in batches in this
#: index's order (their primary key starts with ``tenant_id``); migration 0005 creates them.
sa.Index("ix_windows_window_start", windows.c.window_start)
sa.Index("ix_rollups_hour_window_start", rollups_hour.c.window_start)
sa.Index("ix_rollups_day_window_start", rollups_day.c.window_start)
