"""Benchmark 7: reads over a month of history (issue 11), each beside the read it replaces.

One SQLite store holds one tenant's calls over `BENCH_HISTORY_DAYS` days (default 29) ending now:
`BENCH_HISTORY_CALLS` calls (default 1,000,000, about 0.4 calls/s) over 10 routes × 5 models from
`BENCH_HISTORY_USERS` users (default 100,000, every one of them calling). It is built without the
HTTP path or the processor (`bench._history_data`): generated calls are committed with
`Store.commit` in checkpoints of 20,000, each holding the calls' records and their minute-window
deltas as the processor's checkpoints do; the store writes the hourly and daily rollups from the
same deltas in the same transaction. Nothing is pruned (the in-process app runs no pruner).

1. Long-range summary: `Store.summary` over the last 1, 7 and 29 days (the median of `REPEAT` runs
   after one untimed run), and `GET /v1/metrics/summary` over 29 days through the app in process
   (`fastapi.testclient`). Reference: the same 29-day summary read from the minute windows only, as
   `Store.summary` did before the rollups (`_minute_summary`: one select over ``windows``, every
   row merged). Targets: 29 days ≤ 3 × 1 day, and < 0.3 s.
2. Costs by user: `llmpulse.store.costs` (top 20 by ``user_id``, with ``other`` and ``total``) over
   the 29 days, median of 3 runs. Reference: DuckDB (one thread) computing the same answer over the
   same calls in one query, read from the SQLite file by DuckDB's sqlite extension when it is
   installed (it is never downloaded), else from a DuckDB table the calls' columns are copied into
   first (untimed, through a CSV file). Target: < 1 s.

The run checks that the summaries, the minute-window reference and the API count the same calls,
and that both costs answers name the same top users and add up to the same total.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb
import sqlalchemy as sa

from bench._history_data import TENANT, build, table_rows
from llmpulse.store import (
    CallFilter,
    RetentionPolicy,
    Store,
    SummaryRow,
    WindowDelta,
    costs,
    minute_bounds,
    rfc3339,
)
from llmpulse.store._query import windows_select
from llmpulse.store._tables import delta_from_row

#: Size knobs (environment variables) and their defaults.
ENV_CALLS: Final = "BENCH_HISTORY_CALLS"
ENV_USERS: Final = "BENCH_HISTORY_USERS"
ENV_DAYS: Final = "BENCH_HISTORY_DAYS"
DEFAULT_CALLS: Final = 1_000_000
DEFAULT_USERS: Final = 100_000
DEFAULT_DAYS: Final = 29
#: Timed runs of each fast read (the median counts), after one untimed run.
REPEAT: Final = 5
#: Groups in the costs answer.
TOP: Final = 20
#: Summary ranges timed, in days.
RANGES_DAYS: Final = (1, 7, 29)

_T = TypeVar("_T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# -- 1. long-range summary -------------------------------------------------------------------------


def _timed(fn: Callable[[], _T], repeat: int = REPEAT) -> tuple[float, _T]:
    """The median wall seconds of `repeat` runs of `fn` after one untimed run, and its result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _minute_summary(store: Store, start: datetime, end: datetime) -> SummaryRow | None:
    """The reference: the tenant's summary over ``[start, end)`` as `Store.summary` computed it before
    the rollups (551ddda^): every minute window of the range selected and merged. Blocks."""
    query = windows_select(TENANT, route=None, model=None, start=start, end=end)
    total, count = WindowDelta(), 0
    with store.engine.connect() as conn:
        for row in conn.execute(query).mappings():
            total.merge(delta_from_row(row))
            count += 1
    if not count:
        return None
    return SummaryRow(TENANT, None, None, start, end, count, total)


def _api_summary(store: Store, db_url: str, start: datetime, end: datetime) -> tuple[float, dict[str, Any]]:
    """`GET /v1/metrics/summary` over ``[start, end)`` through the app in process: median seconds and
    the answer's row. Blocks."""
    from fastapi.testclient import TestClient

    from llmpulse.server import ServerSettings, create_app

    # no pruner: the default retention would delete the minute windows the reference reads
    settings = ServerSettings(db_url=db_url, run_processor=False, retention=RetentionPolicy(interval_s=0))
    app = create_app(settings, store=store)
    params = {"tenant_id": TENANT, "from": rfc3339(start), "to": rfc3339(end)}
    with TestClient(app) as client:

        def get() -> dict[str, Any]:
            response = client.get("/v1/metrics/summary", params=params)
            response.raise_for_status()
            rows: list[dict[str, Any]] = response.json()["summary"]
            return rows[0]

        return _timed(get)


def _summary_of(store: Store, start: datetime, end: datetime) -> Callable[[], list[SummaryRow]]:
    return lambda: store.summary(TENANT, start=start, end=end)


def bench_summary(store: Store, db_url: str, end: datetime) -> dict[str, Any]:
    """Item 1: the summaries over the last 1, 7 and 29 days, the API's, and the minute-only reference."""
    figures: dict[str, Any] = {}
    requests: dict[str, int] = {}
    for days in RANGES_DAYS:
        start = end - timedelta(days=days)
        seconds, rows = _timed(_summary_of(store, start, end))
        figures[f"summary_{days}d_s"] = seconds
        figures[f"summary_{days}d_rows_merged"] = rows[0].windows
        requests[f"summary_{days}d"] = rows[0].delta.requests
    longest = max(RANGES_DAYS)
    start = end - timedelta(days=longest)
    figures["summary_ratio_longest_to_1d"] = figures[f"summary_{longest}d_s"] / figures["summary_1d_s"]
    api_s, api_row = _api_summary(store, db_url, start, end)
    figures[f"api_summary_{longest}d_s"] = api_s
    requests["api"] = api_row["requests"]
    t = time.perf_counter()
    reference = _minute_summary(store, start, end)
    figures[f"minute_windows_{longest}d_s"] = time.perf_counter() - t
    figures[f"minute_windows_{longest}d_rows"] = reference.windows if reference else 0
    requests["minute_windows"] = reference.delta.requests if reference else 0
    figures["summary_vs_minute_windows"] = (
        figures[f"summary_{longest}d_s"] / figures[f"minute_windows_{longest}d_s"]
    )
    figures["requests_counted"] = requests
    figures["agree"] = requests[f"summary_{longest}d"] == requests["api"] == requests["minute_windows"]
    figures["targets_met"] = {
        f"{longest}d <= 3x 1d": figures["summary_ratio_longest_to_1d"] <= 3.0,
        f"{longest}d < 0.3 s": figures[f"summary_{longest}d_s"] < 0.3,
    }
    return figures


# -- 2. costs by user ------------------------------------------------------------------------------

_DUCK_COLUMNS: Final = (
    ("tenant_id", "VARCHAR"), ("started_at", "DOUBLE"), ("user_id", "VARCHAR"),
    ("user_id_hash", "VARCHAR"), ("status", "VARCHAR"), ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"), ("cached_input_tokens", "BIGINT"), ("cache_write_tokens", "BIGINT"),
    ("reasoning_tokens", "BIGINT"), ("cost_usd", "DOUBLE"),
)  # fmt: skip
_TOKENS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_AGGREGATES: Final = (
    "count(*) AS requests, sum(CASE WHEN status IN ('error', 'timeout') THEN 1 ELSE 0 END) AS errors, "
    + ", ".join(f"sum({t}) AS {t}" for t in _TOKENS)
    + ", sum(cost_usd) AS cost_usd, sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS cost_unknown, "
    "min(started_at) AS first_at, max(started_at) AS last_at"
)
_SUMS: Final = ("requests", "errors", *_TOKENS, "cost_usd", "cost_unknown")
#: The answer of `costs(group_by="user_id", order="cost", limit=TOP)` in one DuckDB query: the
#: groups ranked as `costs` ranks them (DuckDB compares strings by code point, as `costs` does); the
#: top ones, then every other group added up, then the total.
_DUCK_SQL: Final = f"""
WITH grouped AS (
    SELECT coalesce(user_id, user_id_hash) AS key, {_AGGREGATES}
    FROM {{source}} WHERE tenant_id = $tenant AND started_at >= $lo AND started_at < $hi
    GROUP BY ALL
),
ranked AS (
    SELECT *, row_number() OVER (
        ORDER BY cost_usd IS NULL, cost_usd DESC, key IS NULL, key
    ) AS rank FROM grouped
),
summed AS (
    SELECT rank > {TOP} AS beyond, {", ".join(f"sum({n}) AS {n}" for n in _SUMS)},
        min(first_at) AS first_at, max(last_at) AS last_at, count(*) AS groups
    FROM ranked GROUP BY ROLLUP (beyond)
)
SELECT 'group' AS part, rank, key, {", ".join(_SUMS)}, first_at, last_at, 1 AS groups
FROM ranked WHERE rank <= {TOP}
UNION ALL
SELECT CASE WHEN beyond IS NULL THEN 'total' ELSE 'other' END, NULL, NULL, {", ".join(_SUMS)},
    first_at, last_at, groups
FROM summed WHERE beyond IS NULL OR beyond
ORDER BY part, rank
"""


def _duckdb_source(con: duckdb.DuckDBPyConnection, db_path: Path, tmp: Path) -> tuple[str, str]:
    """Where DuckDB reads the calls: the SQLite file through the sqlite extension if it is installed
    (never downloaded), else a DuckDB table copied from it (untimed). (FROM clause, how)."""
    con.execute("SET autoinstall_known_extensions = false")
    try:
        con.execute("LOAD sqlite")
    except duckdb.Error:
        pass
    else:
        return f"sqlite_scan('{db_path}', 'calls')", "sqlite extension over the SQLite file"
    path = tmp / "calls.csv"
    names = [name for name, _ in _DUCK_COLUMNS]
    with sa.create_engine(f"sqlite:///{db_path}").connect() as conn, path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        result = conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM calls")
        while chunk := result.fetchmany(50_000):
            writer.writerows(chunk)
    columns = ", ".join(f"'{n}': '{t}'" for n, t in _DUCK_COLUMNS)
    con.execute(
        f"CREATE TABLE calls AS SELECT * FROM read_csv('{path}', header = true, columns = {{{columns}}})"
    )
    path.unlink()
    return "calls", "DuckDB table copied from the SQLite file (no sqlite extension offline)"


def bench_costs(store: Store, db_path: Path, start: datetime, end: datetime) -> dict[str, Any]:
    """Item 2: `costs` top `TOP` by user over ``[start, end)``, beside DuckDB on the same calls."""
    lo, hi = minute_bounds(start, end)
    flt = CallFilter(tenant_id=TENANT, start=lo, end=hi)
    llmpulse_s, answer = _timed(lambda: costs(store, flt, group_by="user_id", limit=TOP), repeat=3)
    assert lo is not None
    assert hi is not None
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-duck-") as tmp:
        con = duckdb.connect()
        con.execute("SET threads = 1")
        source, how = _duckdb_source(con, db_path, Path(tmp))
        sql = _DUCK_SQL.format(source=source)
        params = {"tenant": TENANT, "lo": lo.timestamp(), "hi": hi.timestamp()}
        duck_s, rows = _timed(lambda: _duck_rows(con, sql, params), repeat=3)
        con.close()
    return {
        "costs_s": llmpulse_s,
        "duckdb_s": duck_s,
        "costs_vs_duckdb": llmpulse_s / duck_s,
        "duckdb_source": how,
        "groups": answer["total"]["groups"],
        "requests": answer["total"]["requests"],
        "agree": _same_costs(answer, rows),
        "targets_met": {"costs < 1 s": llmpulse_s < 1.0},
    }


def _duck_rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _same_costs(answer: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether `costs`' answer and DuckDB's name the same groups in the same order, and their groups,
    other and total hold the same counts and (to 1e-9) costs."""
    mine = [*answer["groups"], answer["other"] or {"groups": 0}, answer["total"]]
    other = [r for r in rows if r["part"] == "other"] or [{"groups": 0}]
    theirs = [*(r for r in rows if r["part"] == "group"), *other, *(r for r in rows if r["part"] == "total")]
    if len(mine) != len(theirs):
        return False
    for a, b in zip(mine, theirs, strict=True):
        if a.get("key") != b.get("key") or a.get("groups", 1) != b["groups"]:
            return False
        if b["groups"] and (
            any(a[n] != b[n] for n in ("requests", "errors", *_TOKENS))
            or a["cost_unknown_requests"] != b["cost_unknown"]
            or not math.isclose(a["cost_usd"], b["cost_usd"], rel_tol=1e-9)
        ):
            return False
    return True


# -- the run ---------------------------------------------------------------------------------------


def run(n_calls: int | None = None, n_users: int | None = None, days: int | None = None) -> dict[str, Any]:
    """Build the store, run both measurements and print them beside their references. Blocks (about
    three minutes at the default size); arguments default to the environment, then the defaults."""
    n_calls = n_calls or _env_int(ENV_CALLS, DEFAULT_CALLS)
    n_users = n_users or _env_int(ENV_USERS, DEFAULT_USERS)
    days = days or _env_int(ENV_DAYS, DEFAULT_DAYS)
    end_s = time.time()
    end = datetime.fromtimestamp(end_s, UTC)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-history-") as tmp:
        db_path = Path(tmp) / "history.db"
        db_url = f"sqlite:///{db_path}"
        with Store.open(db_url) as store:
            built = build(store, n_calls, n_users, days, end_s)
            built["table_rows"] = table_rows(store)
            built["db_mb"] = db_path.stat().st_size / 2**20
            summary = bench_summary(store, db_url, end)
            cost = bench_costs(store, db_path, end - timedelta(days=days), end)
    results = {"build": built, "summary": summary, "costs": cost}
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    b, s, c = results["build"], results["summary"], results["costs"]
    rows = b["table_rows"]
    longest = max(RANGES_DAYS)
    print(
        f"history benchmark: {b['calls']:,} calls of one tenant over {b['days']} days from {b['users']:,} "
        f"users; built in {b['build_s']:.0f} s ({b['build_calls_per_s']:,.0f} calls/s committed)\n"
        f"  rows: {rows['windows']:,} minute windows, {rows['rollups_hour']:,} hourly, "
        f"{rows['rollups_day']:,} daily, {rows['calls']:,} call records ({b['db_mb']:,.0f} MiB)"
    )
    for days in RANGES_DAYS:
        print(
            f"  Store.summary, last {days:>2} d        {s[f'summary_{days}d_s'] * 1000:>9.1f} ms  "
            f"({s[f'summary_{days}d_rows_merged']:,} rows merged)"
        )
    ratio = s["summary_ratio_longest_to_1d"]
    print(f"  {longest} d / 1 d                    {ratio:>9.2f}    (target ≤ 3; < 300 ms at {longest} d)")
    print(f"  GET /v1/metrics/summary {longest} d   {s[f'api_summary_{longest}d_s'] * 1000:>9.1f} ms")
    print(
        f"  reference: minute windows {longest} d {s[f'minute_windows_{longest}d_s'] * 1000:>9.1f} ms  "
        f"({s[f'minute_windows_{longest}d_rows']:,} rows; "
        f"llmpulse/ref = {s['summary_vs_minute_windows']:.4f})"
    )
    print(
        f"  costs by user_id, top {TOP}, {longest} d {c['costs_s'] * 1000:>8.1f} ms  "
        f"({c['groups']:,} users, {c['requests']:,} calls; target < 1 s)"
    )
    print(
        f"  reference: DuckDB, 1 thread      {c['duckdb_s'] * 1000:>9.1f} ms  "
        f"(llmpulse/ref = {c['costs_vs_duckdb']:.2f}; {c['duckdb_source']})"
    )
    print(f"  answers agree: summary {s['agree']}, costs {c['agree']}")


if __name__ == "__main__":
    run()
