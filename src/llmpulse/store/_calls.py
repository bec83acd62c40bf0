"""Reading call records: pages of calls (`calls_page`) and costs grouped by an attribute (`costs`).

Both read the ``calls`` table by its key, led by (tenant_id, started_at), and block on the database.
A `CallFilter` names the tenant (None: every tenant), a range of ``started_at`` and exact values of
the record's attributes; `minute_bounds` turns a query's ``[from, to)`` into the record range that
holds exactly the calls of the minute windows `Store.summary` sums over the same ``[from, to)``.

* `calls_page` answers newest first (``order="time"``, ties by request id, then tenant) or costliest
  first (``order="cost"``, unknown costs last, ties likewise), `limit` records at a time, with an
  opaque keyset cursor (base64 of the last record's sort key and the filter's range). A page reads
  `limit` + 1 rows per tenant from the index, whatever the history before it; a cost-ordered page
  sorts the calls of the range.
* `iter_calls` reads every record of a filter oldest first, a page at a time by keyset (for export).
* `costs` aggregates in SQL (GROUP BY) by one attribute or ``metadata.<key>``: the top `limit`
  groups and everything beyond them summed as ``other``, in one statement (one scan of the range,
  one snapshot); the ``total`` is their sum, so groups + other = total exactly for every count.
  Sorting the range's calls by key is most of its time; on SQLite the sort works in runs of
  `SQLITE_SORT_RUN_KIB` (`sqlite_sort_runs`), which takes about 40 % off it over 1M calls.

Request ids (and group keys) compare by code point on both dialects (``COLLATE "C"`` on Postgres),
so the order, and a cursor, mean the same on SQLite and Postgres.

Errors: `ValueError` naming the argument (``order``, ``limit``, ``cursor``, ``group_by``, a filter
field); `StoreError` subclasses when the database cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from llmpulse.store._engine import sqlite_sort_runs
from llmpulse.store._histogram import add
from llmpulse.store._model import CALL_FIELDS, WINDOW_SECONDS, WindowDelta
from llmpulse.store._query import epoch_bound, rfc3339
from llmpulse.store._store import Store
from llmpulse.store._tables import calls

CallOrder = Literal["time", "cost"]
CostOrder = Literal["cost", "requests", "tokens"]

#: The statuses a call record may have (``error`` and ``timeout`` count as errors in windows).
CALL_STATUSES: Final = ("ok", "error", "timeout", "cancelled")
#: Statuses counted in a window's ``errors``.
ERROR_STATUSES: Final = ("error", "timeout")
#: Attributes `costs` groups by (besides ``metadata.<key>``). ``user_id`` is the call's own user id,
#: else its ``user_id_hash`` (a StreamLens request carries only the hash).
GROUP_BY_ATTRIBUTES: Final = (
    "user_id",
    "org_id",
    "session_id",
    "feature",
    "endpoint",
    "environment",
    "route",
    "model",
    "provider",
    "status",
)
#: Prefix of a ``group_by`` naming a metadata key.
METADATA_PREFIX: Final = "metadata."
#: What a metadata key may be: 1 to 64 of letters, digits, ``_``, ``.`` and ``-``.
METADATA_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: The exact-match filters of `CallFilter` (record columns; ``user_id`` as in `GROUP_BY_ATTRIBUTES`).
MATCH_FIELDS: Final = (
    "route",
    "model",
    "provider",
    "user_id",
    "org_id",
    "session_id",
    "feature",
    "endpoint",
    "environment",
    "status",
    "request_id",
)

_INT_FIELDS: Final = frozenset(
    {"input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"}
)
_FLOAT_FIELDS: Final = frozenset(
    {"started_at", "latency_ms", "ttft_ms", "cost_usd", "updated_at", "sender_cost_usd"}
)
_TOKEN_SUMS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
#: The figures of a `costs` row, in the order `_aggregates` and `_sum_groups` give them.
_FIGURES: Final = (
    "requests",
    "errors",
    *_TOKEN_SUMS,
    "cost_usd",
    "cost_unknown_requests",
    "first_call_at",
    "last_call_at",
)
_json_decode: Final = msgspec.json.decode
_json_encode: Final = msgspec.json.encode


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which call records to read: validated on construction (`ValueError` naming the field).

    Attributes:
        tenant_id: the tenant (None: every tenant).
        start, end: records with ``start <= started_at < end`` (aware datetimes; None: unbounded;
            equal bounds: an empty range).
            Use `minute_bounds` for the range that matches the minute windows of a ``[from, to)``.
        route, model, provider, org_id, session_id, feature, endpoint, environment, request_id:
            only records with exactly this value.
        user_id: only records whose user id, else user id hash, is this value (as `costs` groups).
        status: only records of this status (`CALL_STATUSES`).
        min_cost_usd: only records with a known cost of at least this much.
    """

    tenant_id: str | None
    start: datetime | None = None
    end: datetime | None = None
    route: str | None = None
    model: str | None = None
    provider: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    session_id: str | None = None
    feature: str | None = None
    endpoint: str | None = None
    environment: str | None = None
    status: str | None = None
    request_id: str | None = None
    min_cost_usd: float | None = None

    def __post_init__(self) -> None:
        _aware(self.start, "start")
        _aware(self.end, "end")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start must not be after end, got {self.start} and {self.end}")
        if self.status is not None and self.status not in CALL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(CALL_STATUSES)}, got {self.status!r}")
        cost = self.min_cost_usd
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost < 0
        ):
            raise ValueError(f"min_cost_usd must be a finite number >= 0, got {cost!r}")


def minute_bounds(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The ``started_at`` range of the calls in the minute windows that `Store.summary` sums for
    ``[start, end)``: each bound rounded up to the minute (its window start bound, ``ceil``, as the
    summary bounds window starts). A call belongs to the window of ``floor(started_at / 60) * 60``,
    so ``started_at >= ceil_to_minute(start)`` exactly when its window does. Pure.

    Raises:
        ValueError: a naive bound.
    """
    return _ceil_minute(start, "start"), _ceil_minute(end, "end")


def _ceil_minute(value: datetime | None, name: str) -> datetime | None:
    second = epoch_bound(value, name)
    if second is None:
        return None
    return datetime.fromtimestamp(-(-second // WINDOW_SECONDS) * WINDOW_SECONDS, UTC)


def _by_code_point(expr: Any, dialect: str) -> Any:
    """`expr` compared and sorted by code point (Postgres' database collation may not be)."""
    return sa.collate(expr, "C") if dialect == "postgresql" else expr


def _user_key() -> Any:
    return sa.func.coalesce(calls.c.user_id, calls.c.user_id_hash)


def _conditions(flt: CallFilter, *, tenant: bool = True, end: bool = True) -> list[Any]:
    c = calls.c
    found: list[Any] = []
    if tenant and flt.tenant_id is not None:
        found.append(c.tenant_id == flt.tenant_id)
    if flt.start is not None:
        found.append(c.started_at >= flt.start.timestamp())
    if end and flt.end is not None:
        found.append(c.started_at < flt.end.timestamp())
    for name in MATCH_FIELDS:
        value = getattr(flt, name)
        if value is not None:
            column = _user_key() if name == "user_id" else c[name]
            found.append(column == value)
    if flt.min_cost_usd is not None:
        found.append(c.cost_usd >= flt.min_cost_usd)
    return found


# -- pages of calls --------------------------------------------------------------------------------


def _record(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CALL_FIELDS:
        value = row[name]
        if value is not None:
            if name in _INT_FIELDS:
                value = int(value)
            elif name in _FLOAT_FIELDS:
                value = float(value)
        out[name] = value
    return out


def _sort_key(order: CallOrder, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The record's place in `order` (ascending), as the SQL orders it."""
    if order == "time":
        return (-record["started_at"], record["request_id"], record["tenant_id"])
    cost = record["cost_usd"]
    return (cost is None, -(cost or 0.0), record["request_id"], record["tenant_id"])


def _range_of(flt: CallFilter) -> list[float | None]:
    return [None if t is None else t.timestamp() for t in (flt.start, flt.end)]


def _encode_cursor(order: CallOrder, flt: CallFilter, last: Mapping[str, Any]) -> str:
    position = last["started_at"] if order == "time" else last["cost_usd"]
    body = [order, position, last["request_id"], last["tenant_id"], *_range_of(flt)]
    return base64.urlsafe_b64encode(_json_encode(body)).decode().rstrip("=")


class _Cursor(msgspec.Struct, array_like=True):
    order: str
    position: float | None
    request_id: str
    tenant_id: str
    start: float | None
    end: float | None


def _decode_cursor(cursor: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValueError("cursor is not a cursor this query returned (malformed)") from None
    if found.order == "time" and found.position is None:
        raise ValueError("cursor is not a cursor this query returned (malformed)")
    return found


def cursor_range(cursor: str) -> tuple[datetime | None, datetime | None]:
    """The ``[start, end)`` of the filter a `calls_page` cursor was issued for. Pure.

    Raises:
        ValueError: `cursor` is malformed (the message names ``cursor``).
    """
    found = _decode_cursor(cursor)
    return tuple(  # type: ignore[return-value]
        None if t is None else datetime.fromtimestamp(t, UTC) for t in (found.start, found.end)
    )


def _after(order: CallOrder, cur: _Cursor, tenant: str, dialect: str) -> list[Any]:
    """Conditions keeping a tenant's records after the cursor's in `order`."""
    c = calls.c
    rid = _by_code_point(c.request_id, dialect)
    # the tenant is the last tie-breaker: a later tenant may repeat the cursor's request id
    same = rid >= cur.request_id if tenant > cur.tenant_id else rid > cur.request_id
    if order == "time":
        at = cur.position
        return [c.started_at <= at, sa.or_(c.started_at < at, sa.and_(c.started_at == at, same))]
    cost = cur.position
    if cost is None:
        return [c.cost_usd.is_(None), same]
    return [sa.or_(c.cost_usd < cost, c.cost_usd.is_(None), sa.and_(c.cost_usd == cost, same))]


def _order_by(order: CallOrder, dialect: str) -> list[Any]:
    c = calls.c
    rid = _by_code_point(c.request_id, dialect)
    if order == "time":
        return [c.started_at.desc(), rid.asc()]
    return [sa.case((c.cost_usd.is_(None), 1), else_=0).asc(), c.cost_usd.desc(), rid.asc()]


def _tenants(conn: sa.Connection) -> list[str]:
    """Every tenant with a call record: a loose index scan (one index probe per tenant)."""
    query = sa.text(
        "WITH RECURSIVE t(tenant_id) AS ("
        " SELECT MIN(tenant_id) FROM calls"
        " UNION ALL"
        " SELECT (SELECT MIN(c.tenant_id) FROM calls c WHERE c.tenant_id > t.tenant_id)"
        " FROM t WHERE t.tenant_id IS NOT NULL"
        ") SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL"
    )
    return [str(t) for (t,) in conn.execute(query)]


def calls_page(
    store: Store,
    flt: CallFilter,
    *,
    order: CallOrder = "time",
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the filter's call records in `order`, and the cursor of the next page (None on the
    last page). Blocks.

    Records are dicts of every `CallRecord` field (times as epoch seconds, metadata as JSON text;
    `call_row` shapes them for the API). With ``tenant_id=None`` each tenant is read through its own
    index range and the pages merged. A cursor belongs to its filter's range and order: pass the
    same range (or `cursor_range`'s) with it.

    Raises:
        ValueError: an unknown `order`, `limit` < 1, or a `cursor` that is malformed or was issued
            for another order or range (each message names the argument).
        StoreError: the database could not be read.
    """
    if order not in ("time", "cost"):
        raise ValueError(f"order must be 'time' or 'cost', got {order!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    after = None
    if cursor is not None:
        after = _decode_cursor(cursor)
        if after.order != order:
            raise ValueError(f"cursor belongs to order={after.order!r}, not order={order!r}")
        if [after.start, after.end] != _range_of(flt):
            raise ValueError("cursor belongs to another range: pass the `from` and `to` it was issued for")
    dialect = store.dialect
    # after a cursor, newest first, the cursor's started_at (inside the range) is the upper bound:
    # SQLite bounds an index range by one condition a side, and would otherwise scan down from `end`
    base = _conditions(flt, tenant=False, end=after is None or order != "time")
    found: list[dict[str, Any]] = []
    with store._reading("reading call records") as conn:
        tenants = [flt.tenant_id] if flt.tenant_id is not None else _tenants(conn)
        for tenant in tenants:
            query = sa.select(calls).where(calls.c.tenant_id == tenant, *base)
            if after is not None:
                query = query.where(*_after(order, after, tenant, dialect))
            query = query.order_by(*_order_by(order, dialect)).limit(limit + 1)
            found.extend(_record(row) for row in conn.execute(query).mappings())
    found.sort(key=lambda r: _sort_key(order, r))
    page = found[:limit]
    more = len(found) > limit
    return page, _encode_cursor(order, flt, page[-1]) if more else None


def call_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record (as `calls_page` returns it) shaped for the API: every field, ``started_at`` and
    ``updated_at`` as RFC 3339 UTC, ``metadata`` as a JSON object (or None). Pure."""
    row = dict(record)
    for name in ("started_at", "updated_at"):
        row[name] = rfc3339(datetime.fromtimestamp(record[name], UTC))
    text = record["metadata"]
    row["metadata"] = None if text is None else _json_decode(text)
    return row


def iter_calls(store: Store, flt: CallFilter, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """The filter's call records oldest first (by ``started_at``, then request id and tenant, by code
    point), as pages of at most `page_size` records shaped as `calls_page` returns them. Blocks.

    Each page is read by keyset (after the previous page's last record) in its own short read, so
    no transaction stays open between pages and memory holds one page. Records written meanwhile
    are included when they sort after the position reached. With a tenant, every page reads the
    (tenant_id, started_at) index from the position on, in order, so a page costs the same at the
    end of a long range as at its start.

    Raises:
        ValueError: `page_size` < 1 (naming ``page_size``).
        StoreError: the database could not be read.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be an integer >= 1, got {page_size!r}")
    c = calls.c
    rid = _by_code_point(c.request_id, store.dialect)
    tenant = _by_code_point(c.tenant_id, store.dialect)
    # Postgres may sort the whole rest of the range for each page when its statistics are stale (a
    # table just filled has none): bound each page by the started_at that page_size records reach
    # in index order. SQLite always reads the index in order and sorts ties only.
    bound = store.dialect == "postgresql"
    where = _conditions(flt)
    beyond = where  # records at a later started_at than the previous page's last (a subset)
    while True:
        reach = sa.select(c.started_at).where(*beyond).order_by(c.started_at).offset(page_size - 1)
        query = sa.select(calls).where(*where).order_by(c.started_at, rid, tenant).limit(page_size)
        with store._reading("reading call records") as conn:
            end = conn.execute(reach.limit(1)).scalar() if bound else None
            if end is not None:
                query = query.where(c.started_at <= end)
            page = [_record(row) for row in conn.execute(query).mappings()]
        if page:
            yield page
        if len(page) < page_size:
            return
        last = page[-1]
        at, request_id = last["started_at"], last["request_id"]
        tie = sa.or_(rid > request_id, sa.and_(rid == request_id, tenant > last["tenant_id"]))
        # the position replaces the filter's start: one lower bound, which SQLite's planner needs
        rest = _conditions(replace(flt, start=None))
        where = [*rest, c.started_at >= at, sa.or_(c.started_at > at, sa.and_(c.started_at == at, tie))]
        beyond = [*rest, c.started_at > at]


# -- costs -------------------------------------------------------------------------------------------


def group_key(group_by: str, dialect: str) -> Any:
    """The SQL expression of a `costs` group: an attribute of `GROUP_BY_ATTRIBUTES` or
    ``metadata.<key>`` (the key's value: a string as itself, any other JSON value as its JSON text,
    null when absent or JSON null). Builds SQL only.

    Raises:
        ValueError: an unknown attribute or an invalid metadata key (naming ``group_by``).
    """
    if group_by == "user_id":
        return _user_key()
    if group_by in GROUP_BY_ATTRIBUTES:
        return calls.c[group_by]
    if group_by.startswith(METADATA_PREFIX):
        key = group_by[len(METADATA_PREFIX) :]
        if not METADATA_KEY_PATTERN.fullmatch(key):
            raise ValueError(
                f"group_by {group_by!r}: a metadata key is 1 to 64 of A-Z, a-z, 0-9, '_', '.' and '-'"
            )
        text = calls.c["metadata"]
        if dialect == "postgresql":
            return sa.cast(text, postgresql.JSONB)[key].astext
        path = f'$."{key}"'
        kind = sa.func.json_type(text, path)
        value = sa.func.json_extract(text, path)
        return sa.case(
            (kind == "text", value),
            (kind == "true", sa.literal("true")),
            (kind == "false", sa.literal("false")),
            (kind == "null", sa.null()),
            else_=sa.cast(value, sa.Text),
        )
    names = ", ".join(GROUP_BY_ATTRIBUTES)
    raise ValueError(f"group_by must be one of {names} or metadata.<key>, got {group_by!r}")


def check_group_by(group_by: str) -> str:
    """`group_by` when `costs` accepts it (see `group_key`). Pure.

    Raises:
        ValueError: an unknown attribute or an invalid metadata key.
    """
    group_key(group_by, "sqlite")
    return group_by


def _aggregates(source: Any) -> list[Any]:
    """The figures of a set of calls (`source`: the calls table or a subquery of its columns)."""
    c = source.c
    return [
        sa.func.count().label("requests"),
        sa.func.sum(sa.case((c.status.in_(ERROR_STATUSES), 1), else_=0)).label("errors"),
        *(sa.func.sum(c[name]).label(name) for name in _TOKEN_SUMS),
        sa.func.sum(c.cost_usd).label("cost_usd"),
        sa.func.sum(sa.case((c.cost_usd.is_(None), 1), else_=0)).label("cost_unknown_requests"),
        sa.func.min(c.started_at).label("first_call_at"),
        sa.func.max(c.started_at).label("last_call_at"),
    ]


def _sum_groups(grouped: Any) -> list[Any]:
    """The figures of several groups added up (what `_aggregates` gives for their calls together)."""
    c = grouped.c
    return [
        sa.func.count().label("groups"),
        sa.func.sum(c.requests).label("requests"),
        sa.func.sum(c.errors).label("errors"),
        *(sa.func.sum(c[name]).label(name) for name in _TOKEN_SUMS),
        sa.func.sum(c.cost_usd).label("cost_usd"),
        sa.func.sum(c.cost_unknown_requests).label("cost_unknown_requests"),
        sa.func.min(c.first_call_at).label("first_call_at"),
        sa.func.max(c.last_call_at).label("last_call_at"),
    ]


def _group_order(order: CostOrder, grouped: Any, dialect: str) -> list[Any]:
    c = grouped.c
    if order == "cost":
        first = [sa.case((c.cost_usd.is_(None), 1), else_=0).asc(), c.cost_usd.desc()]
    elif order == "requests":
        first = [c.requests.desc()]
    else:
        first = [(c.input_tokens + c.output_tokens).desc()]
    key = sa.case((c.key.is_(None), 1), else_=0).asc()
    return [*first, key, _by_code_point(c.key, dialect).asc()]


def _time(value: Any) -> str | None:
    return None if value is None else rfc3339(datetime.fromtimestamp(float(value), UTC))


def _figures(row: Mapping[Any, Any], total_cost: float | None) -> dict[str, Any]:
    cost = None if row["cost_usd"] is None else float(row["cost_usd"])
    tokens = {name: int(row[name] or 0) for name in _TOKEN_SUMS}
    share = None
    if cost is not None and total_cost:
        share = cost / total_cost
    return {
        "requests": int(row["requests"] or 0),
        "errors": int(row["errors"] or 0),
        **tokens,
        "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
        "cost_usd": cost,
        "cost_unknown_requests": int(row["cost_unknown_requests"] or 0),
        "cost_share": share,
        "first_call_at": _time(row["first_call_at"]),
        "last_call_at": _time(row["last_call_at"]),
    }


def costs(
    store: Store,
    flt: CallFilter,
    *,
    group_by: str = "user_id",
    order: CostOrder = "cost",
    limit: int = 20,
) -> dict[str, Any]:
    """The filter's calls grouped by `group_by`, aggregated in SQL: ``{"groups": [...], "other":
    row | None, "total": row}``. Blocks.

    Groups come largest first by `order` (``cost``: unknown costs last; ``requests``; ``tokens``:
    input + output), ties by key ascending with null (calls without the attribute) last; at most
    `limit`. ``other`` adds up every group beyond them (None when there are none) and ``total`` every
    call, so groups + other = total exactly for every count. Each row: ``requests, errors`` (status
    error or timeout, as windows count them), ``input_tokens, output_tokens, cached_input_tokens,
    cache_write_tokens, reasoning_tokens, total_tokens``, ``cost_usd`` (None only when no call of
    the row has a known price), ``cost_unknown_requests``, ``cost_share`` (of the total's cost; None
    when either is None or the total is 0), ``first_call_at``, ``last_call_at`` (RFC 3339); a group
    also has its ``key``, ``other`` and ``total`` the number of ``groups`` they hold.

    Raises:
        ValueError: an unknown `group_by` or `order`, or `limit` < 1 (naming the argument).
        StoreError: the database could not be read.
    """
    if order not in ("cost", "requests", "tokens"):
        raise ValueError(f"order must be 'cost', 'requests' or 'tokens', got {order!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    dialect = store.dialect
    # One statement, one scan of the range: the calls grouped by key (sorting every call is most of
    # the time), the top `limit` groups (ORDER BY … LIMIT keeps only `limit` rows while it reads the
    # groups) numbered, and every other group summed into one more row. Ranking every group with a
    # window function sorted all the groups a second time, and summing by slot a third. Each step is
    # a subquery so that GROUP BY names a column (Postgres would not match two copies of an
    # expression holding a bound parameter).
    needed = [calls.c[name] for name in ("status", *_TOKEN_SUMS, "cost_usd", "started_at")]
    key = group_key(group_by, dialect).label("key")
    keyed = sa.select(key, *needed).where(*_conditions(flt)).subquery("keyed")
    grouped = sa.select(keyed.c.key, *_aggregates(keyed)).group_by(keyed.c.key).cte("grouped")
    top = sa.select(grouped).order_by(*_group_order(order, grouped, dialect)).limit(limit).cte("top")
    slot = sa.func.row_number().over(order_by=_group_order(order, top, dialect))
    top_rows = sa.select(
        slot.label("slot"), top.c.key, sa.literal(1).label("groups"), *(top.c[n] for n in _FIGURES)
    )
    # whether a group is one of the top ones, never null (a null key is not IN anything)
    in_top = sa.case(
        (grouped.c.key.is_(None), sa.exists().where(top.c.key.is_(None))),
        else_=grouped.c.key.in_(sa.select(top.c.key).where(top.c.key.is_not(None))),
    )
    other_row = sa.select(
        sa.literal(limit + 1).label("slot"), sa.null().label("key"), *_sum_groups(grouped)
    ).where(sa.not_(in_top))
    with store._reading("summing call costs") as conn, sqlite_sort_runs(conn):
        rows = sorted(conn.execute(sa.union_all(top_rows, other_row)).mappings(), key=lambda r: r["slot"])
    total = _total(rows)
    total_cost = total["cost_usd"]
    other = rows.pop()  # the sum of the groups beyond the top ones: always one row, of 0 groups or more
    return {
        "groups": [{"key": row["key"], **_figures(row, total_cost)} for row in rows],
        "other": {"groups": int(other["groups"]), **_figures(other, total_cost)} if other["groups"] else None,
        "total": {"groups": total["groups"], **_figures(total, total_cost)},
    }


def _total(rows: list[Any]) -> dict[str, Any]:
    """The figures of every group together, from the rows of `costs` (top groups and other)."""
    out: dict[str, Any] = {
        name: sum(int(row[name] or 0) for row in rows)
        for name in ("groups", "requests", "errors", *_TOKEN_SUMS, "cost_unknown_requests")
    }
    known = [float(row["cost_usd"]) for row in rows if row["cost_usd"] is not None]
    out["cost_usd"] = math.fsum(known) if known else None
    firsts = [float(row["first_call_at"]) for row in rows if row["first_call_at"] is not None]
    lasts = [float(row["last_call_at"]) for row in rows if row["last_call_at"] is not None]
    out["first_call_at"] = min(firsts) if firsts else None
    out["last_call_at"] = max(lasts) if lasts else None
    return out


# -- figures of a set of calls ---------------------------------------------------------------------


def call_delta(store: Store, flt: CallFilter, *, histograms: bool = True) -> WindowDelta:
    """The filter's calls added up as a window's figures (requests, errors, tokens, cost, latency
    and time-to-first-token counts and sums, and with `histograms` their histograms): what the
    minute windows would hold for calls selected by attributes the windows do not have (user,
    organisation, feature, environment). Without histograms it is one aggregate query; with them
    it reads one row per call, so keep that range short. Blocks.

    Raises:
        StoreError: the database could not be read.
    """
    c = calls.c
    if not histograms:
        sums = sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((c.status.in_(ERROR_STATUSES), 1), else_=0)),
            sa.func.sum(sa.case((c.status == "timeout", 1), else_=0)),
            sa.func.sum(c.input_tokens),
            sa.func.sum(c.output_tokens),
            sa.func.sum(c.cached_input_tokens),
            sa.func.sum(c.cache_write_tokens),
            sa.func.sum(c.reasoning_tokens),
            sa.func.sum(c.cost_usd),
            sa.func.count(c.cost_usd),
            sa.func.count(c.latency_ms),
            sa.func.sum(c.latency_ms),
            sa.func.count(c.ttft_ms),
            sa.func.sum(c.ttft_ms),
        ).where(*_conditions(flt))
        with store._reading("adding up calls") as conn:
            n, err, tout, inp, out, cached, written, reasoning, cost, priced, nl, sl, nt, st = conn.execute(
                sums
            ).one()
        d = WindowDelta()
        d.requests, d.errors, d.timeouts = int(n), int(err or 0), int(tout or 0)
        d.prompt_tokens, d.completion_tokens = int(inp or 0), int(out or 0)
        d.cached_input_tokens, d.cache_write_tokens, d.reasoning_tokens = (
            int(cached or 0),
            int(written or 0),
            int(reasoning or 0),
        )
        d.cost_usd, d.cost_unknown = float(cost or 0.0), int(n) - int(priced)
        d.latency_count, d.latency_sum_ms = int(nl), float(sl or 0.0)
        d.ttft_count, d.ttft_sum_ms = int(nt), float(st or 0.0)
        return d
    query = sa.select(
        c.status,
        c.latency_ms,
        c.ttft_ms,
        c.input_tokens,
        c.output_tokens,
        c.cached_input_tokens,
        c.cache_write_tokens,
        c.reasoning_tokens,
        c.cost_usd,
    ).where(*_conditions(flt))
    delta = WindowDelta()
    with store._reading("adding up calls") as conn:
        for status, latency, ttft, inp, out, cached, written, reasoning, cost in conn.execute(query):
            delta.requests += 1
            if status in ERROR_STATUSES:
                delta.errors += 1
            if status == "timeout":
                delta.timeouts += 1
            delta.prompt_tokens += int(inp)
            delta.completion_tokens += int(out)
            delta.cached_input_tokens += int(cached)
            delta.cache_write_tokens += int(written)
            delta.reasoning_tokens += int(reasoning)
            if cost is None:
                delta.cost_unknown += 1
            else:
                delta.cost_usd += float(cost)
            if latency is not None:
                delta.latency_count += 1
                delta.latency_sum_ms += float(latency)
                add(delta.latency_hist, float(latency))
            if ttft is not None:
                delta.ttft_count += 1
                delta.ttft_sum_ms += float(ttft)
                add(delta.ttft_hist, float(ttft))
    return delta
