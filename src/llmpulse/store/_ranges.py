"""Reading a range from the coarsest aggregates that cover it exactly.

Before a tenant's ``rollup_progress.rolled_through`` (`rolled_through`), minute windows, hourly and
daily rollups hold the same calls (the roller sums each finished hour into the rollups, and later
commits add to all three), so a range of window starts ``[lo, hi)`` can be read as whole days in
its middle, whole hours around them, and minutes at its ragged edges and from ``rolled_through`` on:
the sum is the minute-level answer, percentiles included (histograms merge by adding counts), and
the rows read grow with the number of days, not with the calls behind them.

`plan` decides the pieces (pure); `read_rows` runs one query per piece. A range whose ragged edges
are older than the minute windows' retention reads what is left of them (the hours and days are
still exact).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from llmpulse.store._tables import ALL_SERIES, rollup_progress, rollups_day, rollups_hour, windows

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400
#: The resolutions a range may be read at, finest first, with their tables.
_TABLES: Final = {MINUTE: windows, HOUR: rollups_hour, DAY: rollups_day}


@dataclass(frozen=True, slots=True)
class Piece:
    """One query of a plan: the rows of `table` (`seconds` per row) starting in ``[lo, hi)`` (None:
    unbounded on that side)."""

    seconds: int
    lo: int | None
    hi: int | None

    @property
    def table(self) -> sa.Table:
        """The aggregate table holding rows of this resolution."""
        return _TABLES[self.seconds]


def _ceil(t: int | None, step: int) -> int | None:
    return None if t is None else -(-t // step) * step


def _floor(t: int | None, step: int) -> int | None:
    return None if t is None else t // step * step


def _empty(lo: int | None, hi: int | None) -> bool:
    return lo is not None and hi is not None and lo >= hi


def plan(lo: int | None, hi: int | None, coarsest: int = DAY, *, rolled: int | None = None) -> list[Piece]:
    """The pieces that read window starts ``[lo, hi)`` (epoch seconds; None: unbounded) exactly,
    using rows no coarser than `coarsest` (60, 3600 or 86400). Pure.

    A piece never splits a coarse row: an hour or a day is read whole only when it lies inside the
    range; the rest is read finer. With `rolled` (a whole hour: how far the rollups go, see
    `rolled_through`), rollups are read only before it and minutes from it on.
    """
    if coarsest not in _TABLES:
        raise ValueError(f"coarsest must be 60, 3600 or 86400, got {coarsest!r}")
    if rolled is not None and rolled % HOUR:
        raise ValueError(f"rolled must be a whole hour, got {rolled!r}")
    lo = _ceil(lo, MINUTE)
    hi = _ceil(hi, MINUTE)
    if _empty(lo, hi):
        return []
    if rolled is None or (hi is not None and hi <= rolled):
        pieces = _split(lo, hi, coarsest)
    elif lo is not None and lo >= rolled:
        pieces = [Piece(MINUTE, lo, hi)]
    else:
        pieces = [*_split(lo, rolled, coarsest), Piece(MINUTE, rolled, hi)]
    return [p for p in pieces if not _empty(p.lo, p.hi)]


def rolled_through(conn: sa.Connection, tenant_id: str | None) -> int:
    """How far the rollups of `tenant_id` go (every tenant's when None: the least of them), a whole
    hour in epoch seconds: 0 when nothing is rolled up. Read before the rows it plans (the value only
    grows, and the hours before it stay complete). Blocks on `conn`."""
    if tenant_id is None:
        query = sa.select(sa.func.min(rollup_progress.c.rolled_through))
    else:
        query = sa.select(rollup_progress.c.rolled_through).where(rollup_progress.c.tenant_id == tenant_id)
    found = conn.execute(query).scalar()
    return 0 if found is None else int(found)


def _split(lo: int | None, hi: int | None, coarsest: int) -> list[Piece]:
    if coarsest == MINUTE:
        return [Piece(MINUTE, lo, hi)]
    h1, h2 = _ceil(lo, HOUR), _floor(hi, HOUR)
    if _empty(h1, h2):
        return [Piece(MINUTE, lo, hi)]
    edges = [Piece(MINUTE, lo, h1)] if lo is not None else []
    tail = [Piece(MINUTE, h2, hi)] if hi is not None else []
    if coarsest == HOUR:
        return [*edges, Piece(HOUR, h1, h2), *tail]
    d1, d2 = _ceil(h1, DAY), _floor(h2, DAY)
    if _empty(d1, d2):
        return [*edges, Piece(HOUR, h1, h2), *tail]
    inner = [Piece(HOUR, h1, d1)] if h1 is not None else []
    inner.append(Piece(DAY, d1, d2))
    if h2 is not None:
        inner.append(Piece(HOUR, d2, h2))
    return [*edges, *inner, *tail]


def piece_conditions(
    piece: Piece,
    *,
    tenant_id: str | None,
    route: str | None,
    model: str | None,
    totals: bool = False,
) -> list[Any]:
    """The WHERE conditions of one piece's rows (of one tenant, or of every tenant when None),
    optionally of one route and model. With `totals` (and no route or model), a rollup piece reads
    the tenants' total rows (`ALL_SERIES`) instead of their series; otherwise a rollup piece never
    reads totals. Builds SQL only; does not block."""
    table = piece.table
    found: list[Any] = []
    if tenant_id is not None:
        found.append(table.c.tenant_id == tenant_id)
    if piece.seconds != MINUTE:
        if totals and route is None and model is None:
            found += [table.c.route == ALL_SERIES, table.c.model == ALL_SERIES]
        elif route is None:
            found.append(table.c.route != ALL_SERIES)
    if route is not None:
        found.append(table.c.route == route)
    if model is not None:
        found.append(table.c.model == model)
    if piece.lo is not None:
        found.append(table.c.window_start >= piece.lo)
    if piece.hi is not None:
        found.append(table.c.window_start < piece.hi)
    return found


def piece_select(
    piece: Piece,
    *,
    tenant_id: str | None,
    route: str | None,
    model: str | None,
    columns: tuple[str, ...] | None = None,
    totals: bool = False,
) -> sa.Select[Any]:
    """The rows of one piece (`piece_conditions`), whole or only `columns` (distinct). Builds SQL
    only; does not block."""
    table = piece.table
    query = sa.select(table) if columns is None else sa.select(*(table.c[c] for c in columns)).distinct()
    return query.where(*piece_conditions(piece, tenant_id=tenant_id, route=route, model=model, totals=totals))


def read_rows(
    conn: sa.Connection,
    pieces: list[Piece],
    *,
    tenant_id: str | None,
    route: str | None,
    model: str | None,
    totals: bool = False,
) -> Iterator[tuple[Piece, Any]]:
    """Every row of every piece (as a mapping), with its piece; rollup pieces read the tenants'
    total rows with `totals` (see `piece_select`). Blocks on `conn`."""
    for piece in pieces:
        query = piece_select(piece, tenant_id=tenant_id, route=route, model=model, totals=totals)
        for row in conn.execute(query).mappings():
            yield piece, row
