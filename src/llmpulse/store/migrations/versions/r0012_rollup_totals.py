"""Tenant totals in the rollups: each tenant's hourly and daily rows summed over its routes and
models into one row of route and model ``""`` (`llmpulse.store._tables.ALL_SERIES`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

From this revision the rollups' writers (the roller, late deltas) write these rows beside the
series'; this migration adds them for the rollups made before it, a tenant-bucket at a time in
primary-key order (counts and sums added, histograms merged bucket by bucket). Downgrading deletes
them.

Frozen copy of the logic at this revision (not imported from the store, which may move on).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

_COUNTS = (
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
_SUMS = ("latency_sum_ms", "ttft_sum_ms", "cost_usd")
_HISTS = ("latency_hist", "ttft_hist")
_BATCH = 500


def _totals(conn: sa.Connection, table: str) -> Iterator[dict[str, Any]]:
    columns = ", ".join(("tenant_id", "window_start", *_COUNTS, *_SUMS, *_HISTS, "updated_at"))
    rows = conn.execute(
        sa.text(f"SELECT {columns} FROM {table} WHERE route <> '' ORDER BY tenant_id, window_start")
    ).mappings()
    current: dict[str, Any] | None = None
    for row in rows:
        key = (row["tenant_id"], int(row["window_start"]))
        if current is None or (current["tenant_id"], current["window_start"]) != key:
            if current is not None:
                yield _finish(current)
            current = {"tenant_id": key[0], "window_start": key[1], "updated_at": 0.0}
            for name in (*_COUNTS, *_SUMS):
                current[name] = 0
            for name in _HISTS:
                current[name] = {}
        for name in (*_COUNTS, *_SUMS):
            current[name] += row[name]
        for name in _HISTS:
            hist = current[name]
            for bucket, count in json.loads(row[name] or "{}").items():
                n = hist.get(bucket, 0) + count
                if n:
                    hist[bucket] = n
                else:
                    hist.pop(bucket, None)
        current["updated_at"] = max(current["updated_at"], float(row["updated_at"]))
    if current is not None:
        yield _finish(current)


def _finish(total: dict[str, Any]) -> dict[str, Any]:
    for name in _HISTS:
        total[name] = json.dumps(total[name], separators=(",", ":"))
    total["route"] = ""
    total["model"] = ""
    total["version"] = 1
    return total


def upgrade() -> None:
    """Add a total row for every tenant and bucket of ``rollups_hour`` and ``rollups_day``."""
    conn = op.get_bind()
    for table in ("rollups_hour", "rollups_day"):
        names = (
            "tenant_id",
            "route",
            "model",
            "window_start",
            *_COUNTS,
            *_SUMS,
            *_HISTS,
            "updated_at",
            "version",
        )
        insert = sa.text(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
        )
        batch: list[dict[str, Any]] = []
        for total in list(_totals(conn, table)):
            batch.append(total)
            if len(batch) >= _BATCH:
                conn.execute(insert, batch)
                batch = []
        if batch:
            conn.execute(insert, batch)


def downgrade() -> None:
    """Delete the total rows."""
    for table in ("rollups_hour", "rollups_day"):
        op.execute(f"DELETE FROM {table} WHERE route = '' AND model = ''")
