"""The dialect switch: URL schemes, SQLite pragmas, Postgres driver mapping."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import llmpulse.store
from llmpulse.store import Store, create_engine_for
from llmpulse.store._engine import sqlite_sort_runs


def test_exports_are_sorted_and_exist() -> None:
    names = llmpulse.store.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert hasattr(llmpulse.store, name), name


@pytest.mark.parametrize("url", ["mysql://u@h/db", "redis://localhost", "SQLITE3:///x.db"])
def test_unknown_scheme_is_a_value_error_naming_it(url: str) -> None:
    scheme = url.split("://")[0].lower()
    with pytest.raises(ValueError, match=scheme):
        create_engine_for(url)


def test_url_without_scheme_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        create_engine_for("/var/lib/llmpulse.db")


def test_sqlite_file_engine_sets_wal_and_pragmas(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "sub" / "x.db").exists()
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/x.db", "sqlite://"])
def test_sqlite_sort_runs_shrink_the_page_cache_inside_and_give_its_size_back(
    url: str, tmp_path: Path
) -> None:
    engine = create_engine_for(url.format(tmp=tmp_path))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (k INTEGER, pad TEXT)")
            # ~6 MiB of rows: more than the small cache, which an in-memory database must not lose
            conn.exec_driver_sql(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29999) "
                "INSERT INTO t SELECT i % 1000, printf('%0200d', i) FROM n"
            )
        with engine.connect() as conn:
            before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            with sqlite_sort_runs(conn, kib=1024):
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -1024
                groups = conn.exec_driver_sql("SELECT count(*) FROM (SELECT k FROM t GROUP BY k)").scalar()
            assert groups == 1000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == before == -65536
            with pytest.raises(RuntimeError), sqlite_sort_runs(conn):
                raise RuntimeError
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == before
            assert conn.exec_driver_sql("SELECT count(*), sum(length(pad)) FROM t").one() == (
                30_000,
                6_000_000,
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_database_is_shared_by_threads(url: str) -> None:
    with Store.open(url) as store:
        seen: list[list[str]] = []
        thread = threading.Thread(target=lambda: seen.append(store.tenants()))
        thread.start()
        thread.join()
        # The other thread saw the migrated schema (a per-thread database would have no tables).
        assert seen == [[]]
        assert store.dialect == "sqlite"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
        "postgresql+psycopg://postgres@127.0.0.1/test",
    ],
)
def test_postgres_urls_map_to_psycopg(url: str) -> None:
    pytest.importorskip("psycopg")
    engine = create_engine_for(url)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.database == "test"
        assert engine.dialect.name == "postgresql"
        assert isinstance(engine.pool, sa.pool.QueuePool)
    finally:
        engine.dispose()
