"""``llmpulse export`` over real stores (SQLite and Postgres): every format round-trips every field,
filters and the range select what `CallFilter` selects, records stream in pages in constant memory,
and bad flags are one-line usage errors."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from llmpulse.cli import _export, main
from llmpulse.store import (
    CALL_FIELDS,
    CALL_STATUSES,
    CallFilter,
    CallRecord,
    Checkpoint,
    Store,
    StoreUnavailable,
    iter_calls,
)
from tests.postgres_server import suite_dsn
from tests.store.conftest import DIALECTS, make_record, reset_postgres

T0 = 1_763_546_400.0  # 2025-11-19T10:00:00Z
FROM, TO = "2025-11-19T00:00:00Z", "2025-11-20T00:00:00Z"
FORMATS = ["csv", "jsonl", "parquet"]
_INTS = {"input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"}
_FLOATS = {"latency_ms", "ttft_ms", "cost_usd", "sender_cost_usd"}
_TIMES = {"started_at", "updated_at"}


@pytest.fixture(params=DIALECTS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL: a SQLite file, or the emptied Postgres test database."""
    if request.param == "postgresql":
        dsn = suite_dsn()
        reset_postgres(dsn)
        return dsn
    return f"sqlite:///{tmp_path / 'export.db'}"


def _put(url: str, records: Iterable[CallRecord]) -> None:
    with Store.open(url) as store:
        store.commit(Checkpoint("c", calls={(r.tenant_id, r.request_id): r for r in records}))


def _varied(i: int, tenant: str = "t1", **fields: Any) -> CallRecord:
    """A record whose every field varies with `i`: nulls, quotes, commas, newlines, non-ASCII text,
    ints beyond a double's precision, floats that print long, metadata objects and ties in time."""
    prefix = ["r-", "R-", "é-", "_", "r-"][i % 5]  # orders differently by code point than by locale
    values: dict[str, Any] = {
        "started_at": T0 + (i // 3) * 1.234567,  # three records per instant: ties by request id
        "route": ["chat", 'search, "quoted"', "naïve/ü"][i % 3],
        "model": ["gpt-4o-mini", "claude-3-5-haiku"][i % 2],
        "provider": None if i % 4 == 0 else "openai",
        "status": CALL_STATUSES[i % 4],
        "error_type": "server_error" if i % 4 in (1, 2) else None,
        "error_message": 'line one\nline two, with a comma and a "quote"' if i % 4 == 1 else None,
        "latency_ms": None if i % 7 == 0 else 0.1 * i + 0.2,
        "ttft_ms": None if i % 2 else i / 3,
        "input_tokens": 1_000_003 * i,
        "output_tokens": 2**53 + i,  # not representable as a double
        "cached_input_tokens": i % 11,
        "cache_write_tokens": i % 13,
        "reasoning_tokens": 2**62 - i,
        "cost_usd": None if i % 6 == 0 else i * 1e-7 + 1 / 3,
        "cost_source": None if i % 6 == 0 else ["provider", "estimate", "genai-prices"][i % 3],
        "user_id": None if i % 3 == 0 else f"user-{i % 5}",
        "user_id_hash": "ab" * 16 if i % 3 == 0 else None,
        "org_id": None if i % 5 == 0 else f"org-{i % 2}",
        "session_id": f"s-{i % 4}",
        "feature": None if i % 2 else "summarise",
        "endpoint": "/v1/chat" if i % 3 else None,
        "environment": ["prod", "staging"][i % 2],
        "trace_id": f"{i:032x}",
        "span_id": None if i % 2 else f"{i:016x}",
        "metadata": None
        if i % 4 == 0
        else json.dumps({"plan": "pro", "ünï": 'ç"q', "n": [i, 2.5, None], "deep": {"ok": True}}),
        "updated_at": T0 + i + 0.000001,
    }
    values.update(fields)
    return make_record(tenant, f"{prefix}{i}", **values)


def _expected(record: CallRecord) -> dict[str, Any]:
    """A record as every format must give it back: times as aware datetimes, metadata decoded."""
    out = record._asdict()
    for name in _TIMES:
        out[name] = datetime.fromtimestamp(out[name], UTC)
    out["metadata"] = None if record.metadata is None else json.loads(record.metadata)
    return out


def _order(records: Iterable[CallRecord]) -> list[CallRecord]:
    return sorted(records, key=lambda r: (r.started_at, r.request_id, r.tenant_id))


def _from_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert list(row) == list(CALL_FIELDS)
        for name in _TIMES:
            row[name] = datetime.fromisoformat(row[name])
    return rows


def _from_csv(path: Path, stored_metadata: list[str | None]) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == list(CALL_FIELDS)
        rows = [dict(zip(CALL_FIELDS, cells, strict=True)) for cells in reader]
    out = []
    for row, metadata in zip(rows, stored_metadata, strict=True):
        assert row["metadata"] == (metadata or "")  # the stored JSON text itself
        decoded: dict[str, Any] = {}
        for name, cell in row.items():
            if cell == "":
                decoded[name] = None
            elif name in _INTS:
                decoded[name] = int(cell)
            elif name in _FLOATS:
                decoded[name] = float(cell)
            elif name in _TIMES:
                decoded[name] = datetime.fromisoformat(cell)
            elif name == "metadata":
                decoded[name] = json.loads(cell)
            else:
                decoded[name] = cell
        out.append(decoded)
    return out


def _from_parquet(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    for row in rows:
        row["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    return rows


def _read(fmt: str, path: Path, records: list[CallRecord]) -> list[dict[str, Any]]:
    if fmt == "csv":
        return _from_csv(path, [r.metadata for r in records])
    return _from_jsonl(path) if fmt == "jsonl" else _from_parquet(path)


def _run(url: str, out: Path, *args: str, fmt: str = "jsonl") -> None:
    argv = ["export", "--db", url, "--tenant", "t1", "--format", fmt, "--out", str(out), "--quiet", *args]
    assert main(argv) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_back_every_field_exactly_in_time_then_request_id_order(
    store_url: str, tmp_path: Path, fmt: str
) -> None:
    records = [_varied(i) for i in range(250)]
    _put(store_url, [*records, *(_varied(i, "t2") for i in range(20))])  # another tenant: not exported
    out = tmp_path / f"calls.{fmt}"
    _run(store_url, out, "--from", FROM, "--to", TO, "--page-size", "100", fmt=fmt)
    ordered = _order(records)
    got = _read(fmt, out, ordered)
    assert got == [_expected(r) for r in ordered]
    assert [r["request_id"] for r in got][:4] == ["R-1", "r-0", "é-2", "_3"]  # code point, not locale
    if fmt == "parquet":
        assert pq.ParquetFile(out).num_row_groups == 3  # a row group a page


def test_the_parquet_schema_is_explicit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    _put(url, [_varied(1)])
    out = tmp_path / "one.parquet"
    _run(url, out, "--from", FROM, "--to", TO, fmt="parquet")
    schema = pq.read_schema(out)
    assert schema.names == list(CALL_FIELDS)
    types = {f.name: str(f.type) for f in schema}
    assert types["started_at"] == types["updated_at"] == "timestamp[us, tz=UTC]"
    assert {types[n] for n in _INTS} == {"int64"}
    assert {types[n] for n in _FLOATS} == {"double"}
    assert {types[n] for n in CALL_FIELDS if n not in _INTS | _FLOATS | _TIMES} == {"string"}
    assert schema.field("route").nullable
    assert not schema.field("input_tokens").nullable


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


FILTER_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--route", "naïve/ü"], {"route": "naïve/ü"}),
    (["--model", "claude-3-5-haiku"], {"model": "claude-3-5-haiku"}),
    (["--provider", "openai"], {"provider": "openai"}),
    (["--user-id", "user-2"], {"user_id": "user-2"}),
    (["--user-id", "ab" * 16], {"user_id": "ab" * 16}),  # the hash when the call has no user id
    (["--org-id", "org-1"], {"org_id": "org-1"}),
    (["--session-id", "s-3"], {"session_id": "s-3"}),
    (["--feature", "summarise"], {"feature": "summarise"}),
    (["--endpoint", "/v1/chat"], {"endpoint": "/v1/chat"}),
    (["--environment", "staging"], {"environment": "staging"}),
    (["--status", "timeout"], {"status": "timeout"}),
    (["--request-id", "é-7"], {"request_id": "é-7"}),
    (["--min-cost-usd", "0.33334"], {"min_cost_usd": 0.33334}),
    (
        ["--model", "gpt-4o-mini", "--status", "ok", "--org-id", "org-0"],
        {"model": "gpt-4o-mini", "status": "ok", "org_id": "org-0"},
    ),
]


def _matches(record: CallRecord, want: dict[str, Any]) -> bool:
    for name, value in want.items():
        if name == "min_cost_usd":
            if record.cost_usd is None or record.cost_usd < value:
                return False
        elif name == "user_id":
            if (record.user_id if record.user_id is not None else record.user_id_hash) != value:
                return False
        elif getattr(record, name) != value:
            return False
    return True


def test_filters_and_the_range_select_what_the_flags_say(store_url: str, tmp_path: Path) -> None:
    records = [_varied(i) for i in range(120)]
    _put(store_url, records)
    out = tmp_path / "f.jsonl"
    for argv, want in FILTER_CASES:
        _run(store_url, out, "--from", FROM, "--to", TO, *argv)
        expected = [r.request_id for r in _order(records) if _matches(r, want)]
        assert expected, argv  # each case selects something, and not everything
        assert len(expected) < len(records), argv
        assert _ids(out) == expected, argv


def _ceil_minute(t: float) -> float:
    return math.ceil(t / 60) * 60


def test_the_range_is_rounded_up_to_the_minute_as_v1_calls_rounds_it(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every 7.5 s for 30 minutes: records on whole minutes and between them
    records = [make_record("t1", f"r{i:03d}", started_at=T0 + i * 7.5) for i in range(240)]
    _put(store_url, records)
    out = tmp_path / "range.jsonl"
    for start, end in [
        (T0 + 60, T0 + 600),
        (T0 + 61.5, T0 + 599.9),
        (T0 + 0.000001, T0 + 1799),
        (T0 + 5, T0 + 50),
    ]:
        _run(
            store_url,
            out,
            "--from",
            _at(start).isoformat(),
            "--to",
            _at(end).astimezone(timezone(timedelta(hours=-5))).isoformat(),  # any offset
        )
        lo, hi = _ceil_minute(start), _ceil_minute(end)
        assert _ids(out) == [r.request_id for r in records if lo <= r.started_at < hi], (start, end)
    # the summary names the range exported
    argv = ["export", "--db", store_url, "--tenant", "t1", "--out", str(out)]
    assert main([*argv, "--from", "2025-11-19T10:00:01+00:00", "--to", "2025-11-19T11:29:59.5+01:00"]) == 0
    assert capsys.readouterr().err == (
        "exported 232 call records of tenant 't1' from 2025-11-19T10:01:00Z to 2025-11-19T10:30:00Z "
        f"to {out} as jsonl\n"
    )


def test_the_default_range_is_the_30_days_before_to_else_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'default.db'}"
    now = time.time()
    day = 86_400.0
    ages = {"old": 31 * day, "edge-in": 30 * day - 60, "recent": 60.0, "future": -600.0}
    _put(url, [make_record("t1", name, started_at=now - age) for name, age in ages.items()])
    out = tmp_path / "d.jsonl"
    _run(url, out)
    assert _ids(out) == ["edge-in", "recent"]
    to = datetime.fromtimestamp(now - 30.5 * day, UTC).isoformat()
    _run(url, out, "--to", to)  # the 30 days before --to: "old" only
    assert _ids(out) == ["old"]
    since = datetime.fromtimestamp(now - 40 * day, UTC).isoformat()
    _run(url, out, "--from", since)  # from --from until now
    assert _ids(out) == ["old", "edge-in", "recent"]


def test_records_are_read_and_written_a_page_at_a_time(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [make_record("t1", f"r{i:05d}", started_at=T0 + (i // 7)) for i in range(1050)]
    _put(store_url, records)
    pages: list[int] = []
    real = _export.iter_calls

    def spy(store: Store, flt: CallFilter, page_size: int) -> Iterator[list[dict[str, Any]]]:
        for page in real(store, flt, page_size):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(_export, "iter_calls", spy)
    out = tmp_path / "p.parquet"
    _run(store_url, out, "--from", FROM, "--to", TO, "--page-size", "100", fmt="parquet")
    assert pages == [100] * 10 + [50]
    assert [pq.ParquetFile(out).metadata.row_group(g).num_rows for g in range(11)] == pages
    assert pq.read_table(out, columns=["request_id"]).column(0).to_pylist() == [r.request_id for r in records]


def test_iter_calls_pages_every_tenant_by_time_request_id_then_tenant(store_url: str) -> None:
    same = {"started_at": T0}
    records = [make_record(t, rid, **same) for t in ("b", "a", "c") for rid in ("x", "y")]
    records.append(make_record("a", "early", started_at=T0 - 1))
    records += [make_record("d", f"tie-{i}", started_at=T0 + 1) for i in (4, 1, 3, 0, 2)]
    _put(store_url, records)
    with Store.open(store_url) as store:
        pages = list(iter_calls(store, CallFilter(None, end=_at(T0 + 1)), 2))
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        got = [(r["tenant_id"], r["request_id"]) for p in pages for r in p]
        assert got == [("a", "early"), ("a", "x"), ("b", "x"), ("c", "x"), ("a", "y"), ("b", "y"), ("c", "y")]
        assert [r["request_id"] for p in iter_calls(store, CallFilter("b"), 1) for r in p] == ["x", "y"]
        ties = list(iter_calls(store, CallFilter("d"), 2))  # one instant across three pages
        assert [[r["request_id"] for r in p] for p in ties] == [
            ["tie-0", "tie-1"],
            ["tie-2", "tie-3"],
            ["tie-4"],
        ]
        assert list(iter_calls(store, CallFilter("nobody"), 5)) == []
        with pytest.raises(ValueError, match="page_size"):
            next(iter_calls(store, CallFilter("a"), 0))


def test_iter_calls_matches_a_sort_in_python_for_any_page_size(store_url: str) -> None:
    rng = random.Random(11)
    letters = "aAbB_é-Z9"
    records = {}
    for _ in range(300):
        tenant = rng.choice(["t1", "t2", "T1"])
        rid = "".join(rng.choice(letters) for _ in range(rng.randint(1, 3)))
        records[tenant, rid] = make_record(tenant, rid, started_at=T0 + rng.choice([0, 0.5, 1, 7, 60]))
    _put(store_url, records.values())
    with Store.open(store_url) as store:
        for flt in (
            CallFilter("t1"),
            CallFilter(None),
            CallFilter("t2", start=_at(T0 + 0.5), end=_at(T0 + 60)),
        ):
            want = [
                (r.tenant_id, r.request_id)
                for r in _order(records.values())
                if flt.tenant_id in (None, r.tenant_id)
                and (flt.start is None or flt.start.timestamp() <= r.started_at)
                and (flt.end is None or r.started_at < flt.end.timestamp())
            ]
            for size in (1, 7, 100, 1000):
                pages = list(iter_calls(store, flt, size))
                assert all(len(p) == size for p in pages[:-1])
                assert 0 < len(pages[-1]) <= size
                assert [(r["tenant_id"], r["request_id"]) for p in pages for r in p] == want, (flt, size)


def _peak_bytes(url: str, out: Path, fmt: str, end: str) -> tuple[int, int]:
    """(tracemalloc peak while exporting [FROM, end) in pages of 500, records written)."""
    flt = CallFilter("t1", datetime.fromisoformat(FROM), datetime.fromisoformat(end))
    with Store.open(url) as store, out.open("wb") as f:
        _export.export(store, flt, f, fmt, page_size=500)  # warm: statement caches, imports
        f.seek(0)
        f.truncate()
        tracemalloc.start()
        try:
            written = _export.export(store, flt, f, fmt, page_size=500)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak, written


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_memory_stays_flat_from_2k_to_20k_records(tmp_path: Path, fmt: str) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    _put(url, [_varied(i, started_at=T0 + i * 0.5) for i in range(20_000)])
    small_end = datetime.fromtimestamp(T0 + 2_000 * 0.5, UTC).isoformat()
    small, n_small = _peak_bytes(url, tmp_path / "small", fmt, small_end)
    large, n_large = _peak_bytes(url, tmp_path / "large", fmt, TO)
    assert (n_small, n_large) == (2_000, 20_000)
    print(f"{fmt}: tracemalloc peak {small:,} B for 2k records, {large:,} B for 20k")
    assert large < 2 * small, (small, large)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "2025-11-19"], "argument --from: expected an RFC 3339 timestamp with an offset"),
        (["--to", "2025-11-19T10:00:00"], "argument --to: expected an RFC 3339 timestamp with an offset"),
        (["--from", "yesterday"], "argument --from"),
        (["--to", "1969-12-31T23:59:59Z"], "argument --to: expected a time from 1970 on"),
        (["--to", "9999-12-31T23:59:30Z"], "--to is out of range (up to 9999)"),
        (["--from", TO, "--to", FROM], "--from must be before --to, got 2025-11-20T00:00:00Z"),
        (["--from", "2999-01-01T00:00:00Z"], "--from must be before --to (default: now)"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--status", "failed"], "argument --status: invalid choice: 'failed'"),
        (["--min-cost-usd", "-1"], "argument --min-cost-usd: expected a finite number >= 0"),
        (["--page-size", "0"], "argument --page-size: expected a positive integer"),
        (["--format", "parquet"], "--format parquet needs a file: pass --out FILE"),
        (["--format", "parquet", "--out", "-"], "--format parquet needs a file"),
        (["--db", "mysql://x/y"], "unsupported database URL scheme 'mysql'"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    with pytest.raises(SystemExit) as exited:
        main(["export", "--tenant", "t1", *db, *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("llmpulse export: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_a_missing_tenant_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export"])
    assert exited.value.code == 2
    assert "the following arguments are required: --tenant" in capsys.readouterr().err


def test_parquet_without_pyarrow_says_to_install_the_export_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    argv = ["export", "--tenant", "t1", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--format", "parquet"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--out", str(tmp_path / "x.parquet")])
    assert exited.value.code == 2
    assert "pip install 'llmpulse[export]'" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_an_unreachable_store_fails_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["export", "--tenant", "t1", "--db", "postgresql://postgres@127.0.0.1:1/none"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("llmpulse export: error: cannot open the store postgresql://")
    assert err.count("\n") == 1


def test_a_failure_midway_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    _put(url, [make_record("t1", f"r{i}") for i in range(30)])

    def failing(store: Store, flt: CallFilter, page_size: int) -> Iterator[list[dict[str, Any]]]:
        pages = iter_calls(store, flt, page_size)
        yield next(pages)
        raise StoreUnavailable("the database went away")

    monkeypatch.setattr(_export, "iter_calls", failing)
    for fmt in FORMATS:
        out = tmp_path / f"x.{fmt}"
        argv = ["export", "--tenant", "t1", "--db", url, "--from", FROM, "--to", TO, "--page-size", "10"]
        assert main([*argv, "--format", fmt, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err == "llmpulse export: error: cannot read the call records: the database went away\n"
    assert [n for n in os.listdir(tmp_path) if "x." in n] == []  # neither the target nor a temporary


def test_an_existing_file_is_replaced_only_when_the_export_is_complete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _put(url, [make_record("t1", "r1")])
    out = tmp_path / "calls.jsonl"
    out.write_text("previous\n")
    _run(url, out, "--from", FROM, "--to", TO)
    assert _ids(out) == ["r1"]
    assert [n for n in os.listdir(tmp_path) if "calls" in n] == ["calls.jsonl"]


def test_the_progress_bar_counts_records_on_a_terminal_and_quiet_hides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'bar.db'}"
    _put(url, [make_record("t1", f"r{i}") for i in range(1050)])
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(_export, "err_console", lambda: terminal)
    argv = ["export", "--tenant", "t1", "--db", url, "--from", FROM, "--to", TO, "--out", str(tmp_path / "o")]
    assert main([*argv, "--page-size", "100"]) == 0
    shown = screen.getvalue()
    assert "call records" in shown
    assert "1050/?" in shown
    assert "exported 1,050 call records of tenant 't1' from 2025-11-19T00:00:00Z" in shown
    screen.seek(0)
    screen.truncate()
    assert main([*argv, "--quiet"]) == 0
    assert screen.getvalue() == ""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", "export", *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_stdout_as_a_subprocess_with_the_store_from_the_environment(store_url: str) -> None:
    records = [_varied(i) for i in range(40)]
    _put(store_url, records)
    env = {"LLMPULSE_DB": store_url, "POSTGRES_DSN": ""}
    done = _cli("--tenant", "t1", "--from", FROM, "--to", TO, "--format", "csv", env=env)
    assert done.returncode == 0, done.stderr
    ordered = _order(records)
    rows = list(csv.reader(io.StringIO(done.stdout.decode("utf-8"), newline="")))
    assert rows[0] == list(CALL_FIELDS)
    assert [row[1] for row in rows[1:]] == [r.request_id for r in ordered]
    # stderr is not a terminal: no bar, the summary line only
    assert done.stderr.decode() == (
        f"exported 40 call records of tenant 't1' from {FROM} to {TO} to stdout as csv\n"
    )
    quiet = _cli("--tenant", "t1", "--from", FROM, "--to", TO, "--out", "-", "--quiet", env=env)
    assert quiet.returncode == 0
    assert quiet.stderr == b""
    lines = quiet.stdout.decode("utf-8").splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [r.request_id for r in ordered]


def test_a_reader_that_stops_early_ends_the_export_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pipe.db'}"
    _put(url, [_varied(i) for i in range(3000)])  # megabytes of JSON lines: more than a pipe holds
    argv = ["export", "--db", url, "--tenant", "t1", "--from", FROM, "--to", TO, "--page-size", "100"]
    with subprocess.Popen(
        [sys.executable, "-m", "llmpulse.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        assert json.loads(child.stdout.readline())["request_id"] == "R-1"
        child.stdout.close()  # as `| head -1` does
        assert child.wait(timeout=60) == 1
        assert child.stderr.read() == b""  # no traceback, no summary
