"""The one dialect switch: a database URL becomes a configured SQLAlchemy engine; errors and migrations.

`create_engine_for` maps ``sqlite:///path`` (or ``sqlite:///:memory:``) to a SQLite engine in WAL mode and
``postgresql://…`` / ``postgres://…`` (the libpq URL form ``POSTGRES_DSN`` holds) to a pooled psycopg 3
engine. Everything dialect-specific in the store starts here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.pool import StaticPool

#: Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
#: Execution option naming how a SQLite transaction begins (``"DEFERRED"`` or ``"IMMEDIATE"``).
SQLITE_BEGIN_OPTION: Final = "llmpulse_sqlite_begin"
#: KiB of rows a SQLite sort holds in memory before it writes them out, sorted, as one run of its
#: merge, inside `sqlite_sort_runs`. SQLite sizes the runs by the connection's page cache (64 MiB
#: here, kept for the writes): a run that large is sorted far outside the CPU's caches. At 2 MiB,
#: grouping 1M calls by user took 1.1–1.4 s instead of 1.7–2.2 s, and the process 7 MiB of memory
#: instead of 137 MiB (a C program on the SQLite library; docs/performance.md, benchmark 7).
SQLITE_SORT_RUN_KIB: Final = 2048
#: Key of the Postgres advisory lock that serialises migrations of concurrent `Store.open` calls.
MIGRATION_LOCK_KEY: Final = 0x6C6D_7075_6C73  # "lmpuls"

_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_SQLITE_SCHEMES: Final = frozenset({"sqlite", "sqlite+pysqlite"})
_MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
_VERSION_TABLE: Final = "llmpulse_store_version"


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy (connection refused or lost, lock timeout): retryable."""


class StoreIntegrityError(StoreError):
    """The database rejected the data (a constraint failed); retrying the same data will fail again."""


class MigrationError(StoreError):
    """Bringing the schema to the current version failed."""


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors raised inside the block as `StoreError` subclasses."""
    try:
        yield
    except exc.IntegrityError as e:
        raise StoreIntegrityError(f"{action}: {e.orig}") from e
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as e:
        detail = e.orig if isinstance(e, exc.DBAPIError) else e
        raise StoreUnavailable(f"{action}: {detail}") from e
    except exc.SQLAlchemyError as e:
        raise StoreError(f"{action}: {e}") from e
    except sqlite3.Error as e:  # raised outside a statement, e.g. by a PRAGMA on connect
        raise StoreUnavailable(f"{action}: {e}") from e


def create_engine_for(url: str) -> sa.Engine:
    """An engine for a database URL: SQLite (WAL, ``synchronous=NORMAL``) or Postgres (psycopg 3, pooled).

    Accepted schemes: ``sqlite``, ``sqlite+pysqlite``, ``postgresql``, ``postgres``, ``postgresql+psycopg``.
    A SQLite file's parent directory is created when missing. Does not connect (no blocking).

    Raises:
        ValueError: the URL has no scheme or an unknown one (the message names it).
        StoreError: a Postgres URL while psycopg is not installed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"database URL must look like scheme://…, got {url!r}")
    scheme = scheme.lower()
    if scheme in _SQLITE_SCHEMES:
        return _sqlite_engine(rest)
    if scheme in _POSTGRES_SCHEMES:
        try:
            return sa.create_engine(
                "postgresql+psycopg://" + rest,
                pool_size=5,
                max_overflow=10,
                pool_pre_ping=True,
                pool_recycle=1800,
            )
        except ModuleNotFoundError as e:
            raise StoreError(f"Postgres needs psycopg 3: pip install 'llmpulse[postgres]' ({e})") from e
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://…")


def _sqlite_engine(rest: str) -> sa.Engine:
    # `rest` is what follows "sqlite://": "" or "/:memory:" for memory, "/relative" or "//absolute" for files.
    path = rest[1:] if rest.startswith("/") else rest
    path, _, query = path.partition("?")
    if query:
        raise ValueError(f"sqlite URLs take no query parameters, got {query!r}")
    memory = path in ("", ":memory:")
    if memory:
        # One shared connection, so every thread sees the same database; the Store serialises access.
        engine = sa.create_engine(
            "sqlite://",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            "sqlite:///" + path,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
    _configure_sqlite(engine, wal=not memory)
    return engine


def _configure_sqlite(engine: sa.Engine, *, wal: bool) -> None:
    busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is deferred only).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache per connection
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read-write transaction; on SQLite it takes the write lock at BEGIN (``BEGIN IMMEDIATE``).

    Taking the lock up front makes read-modify-write safe across processes and avoids SQLite's
    deferred-lock upgrade deadlock. Blocks while another writer holds the lock (up to the busy timeout).
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def sqlite_sort_runs(conn: sa.Connection, kib: int = SQLITE_SORT_RUN_KIB) -> Iterator[None]:
    """Inside the block, `conn`'s sorts (GROUP BY, ORDER BY) on SQLite write runs of `kib` KiB; a
    no-op on Postgres. Blocks on the database.

    The sorter's runs follow the page cache's size, so the block shrinks `conn`'s page cache to `kib`
    (a read of many rows sweeps the cache anyway) and gives it its size back at the end. A sort
    bigger than a run spills to a temporary file, as any SQLite sort past its memory does
    (``PRAGMA temp_store=MEMORY`` would instead hold the whole sort in memory, unbounded, and
    sort it in one run: slower). The connection is invalidated if its cache size cannot be put
    back, so that the pool never hands out a connection with the small cache.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield
    finally:
        try:
            conn.exec_driver_sql(f"PRAGMA cache_size={before}")
        except exc.SQLAlchemyError:
            conn.invalidate()
            raise


_migrate_lock = threading.Lock()


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent). Blocks.

    All revisions run in one transaction that first takes a lock (SQLite's write lock, a Postgres
    advisory lock), so two processes opening the same database at once migrate it once.

    Raises:
        MigrationError: a migration failed (the schema is left as it was).
        StoreUnavailable: the database cannot be reached.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
    cfg.set_main_option("version_table", _VERSION_TABLE)
    with translate_errors("migrating the store schema"), _migrate_lock, write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as e:
            raise MigrationError(f"migrating the store schema failed: {e}") from e
        except exc.SQLAlchemyError as e:
            if isinstance(e, exc.OperationalError | exc.InterfaceError):
                raise
            raise MigrationError(f"migrating the store schema failed: {e}") from e
