"""Migrations: run on open, idempotent, concurrent-safe, and equal to the table definitions."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from llmpulse.store import Store
from llmpulse.store._engine import _MIGRATIONS_DIR
from llmpulse.store._tables import metadata

VERSION_TABLE = "llmpulse_store_version"


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _version_rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [str(v) for v in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()]


def test_open_twice_is_idempotent(store_url: str) -> None:
    with Store.open(store_url) as first:
        versions = _version_rows(first)
    with Store.open(store_url) as second:
        assert _version_rows(second) == versions
        assert versions == [_head()]
        tables = set(sa.inspect(second.engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= tables


#: Expression indexes: SQLAlchemy does not reflect them on SQLite (it warns), so they are compared by
#: their definition in the catalogue instead.
_EXPRESSION_INDEXES = {"ix_calls_second_request": ("started_at", "request_id")}


def test_migrated_schema_matches_table_definitions(store: Store) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    # an expression index alembic cannot compare may show as one to add: checked from the catalogue
    skipped = [d for d in diff if d[0] == "add_index" and d[1].name in _EXPRESSION_INDEXES]
    assert [d for d in diff if not _is_version_table(d) and d not in skipped] == []
    with store.engine.connect() as conn:
        for name, columns in _EXPRESSION_INDEXES.items():
            if store.dialect == "sqlite":
                query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
            else:
                query = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
            definition = str(conn.execute(sa.text(query), {"n": name}).scalar_one()).lower()
            assert "bigint" in definition, definition
            assert all(c in definition for c in columns), definition


def _is_version_table(diff: object) -> bool:
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == VERSION_TABLE


def test_windows_primary_key_serves_the_tenant_by_time_query(store: Store) -> None:
    pk = sa.inspect(store.engine).get_pk_constraint("windows")
    assert pk["constrained_columns"] == ["tenant_id", "window_start", "route", "model"]


def test_concurrent_opens_from_processes_migrate_once(store_url: str) -> None:
    url = store_url
    code = "import sys; from llmpulse.store import Store; Store.open(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE) for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else b"") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert results == [(0, b"")] * 4
    with Store.open(url) as store:
        assert _version_rows(store) == [_head()]


def test_importing_the_migration_env_module_does_nothing() -> None:
    import llmpulse.store.migrations.env as env

    assert callable(env._run)


def test_head_is_a_single_revision_after_the_window_version_one() -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1
    assert {"0002", "0003"} <= {rev.revision for rev in script.walk_revisions()}


def test_windows_written_before_versions_get_version_0_then_count_commits(store_url: str) -> None:
    """A store at revision 0002 holding a window is upgraded by `Store.open`: the window keeps its
    figures with version 0, and its next commit makes it version 1."""
    from alembic import command

    from llmpulse.store import Checkpoint, WindowKey, create_engine_for
    from tests.store.conftest import make_delta

    engine = create_engine_for(store_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            assert "version" not in {c["name"] for c in sa.inspect(conn).get_columns("windows")}
            conn.execute(
                sa.text(
                    "INSERT INTO windows (tenant_id, route, model, window_start, requests, updated_at) "
                    "VALUES ('t1', 'chat', 'm', 1763546400, 7, 1.0)"
                )
            )
    finally:
        engine.dispose()
    with Store.open(store_url) as store:
        assert _version_rows(store) == [_head()]
        (old,) = store.query_windows("t1")
        assert (old.delta.requests, old.version) == (7, 0)
        key = WindowKey("t1", "chat", "m", 1763546400)
        (written,) = store.commit(Checkpoint("c", windows={key: make_delta(requests=2)}), return_windows=True)
        assert (written.delta.requests, written.version) == (9, 1)
        (stored,) = store.query_windows("t1")
        assert (stored.delta.requests, stored.version) == (9, 1)


def test_a_store_at_0006_keeps_its_records_and_rollups_through_0007_and_0008(store_url: str) -> None:
    """A store at revision 0006 (rollups written by every commit, records keyed by request id) is
    upgraded by `Store.open`: its records keep every field under the new key, each tenant's rollups
    count as rolled up past its last hour (the roller never adds those hours twice), and a late
    delta for such an hour still reaches the rollups."""
    from alembic import command

    from llmpulse.store import Checkpoint, WindowKey, create_engine_for, roll_up
    from llmpulse.store._tables import rollup_progress
    from tests.store.conftest import make_delta

    hour = 1763546400  # 2025-11-19T10:00:00Z
    engine = create_engine_for(store_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    columns = "tenant_id, route, model, window_start, requests, updated_at"
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0006")
            for table, start in (
                ("windows", hour + 120),
                ("rollups_hour", hour),
                ("rollups_day", hour - 36000),
            ):
                conn.execute(
                    sa.text(f"INSERT INTO {table} ({columns}) VALUES ('t1', 'chat', 'm', {start}, 3, 1.0)")
                )
            for rid, at in (("b", hour + 130.5), ("a", hour + 125.25)):
                conn.execute(
                    sa.text(
                        "INSERT INTO calls (tenant_id, request_id, started_at, route, model, status, "
                        "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
                        "reasoning_tokens, cost_usd, user_id, updated_at) VALUES "
                        f"('t1', '{rid}', {at}, 'chat', 'm', 'ok', 10, 20, 0, 0, 0, 0.5, 'u-{rid}', 2.0)"
                    )
                )
    finally:
        engine.dispose()
    with Store.open(store_url) as store:
        assert _version_rows(store) == [_head()]
        with store.engine.connect() as conn:
            progress = {str(t): int(r) for t, r in conn.execute(sa.select(rollup_progress))}
            records = conn.execute(
                sa.text("SELECT request_id, started_at, user_id, cost_usd FROM calls")
            ).all()
        assert progress == {"t1": hour + 3600}
        assert sorted(tuple(r) for r in records) == [
            ("a", hour + 125.25, "u-a", 0.5),
            ("b", hour + 130.5, "u-b", 0.5),
        ]
        assert roll_up(store, hour + 5 * 86400).hours == 0  # nothing is added twice
        store.commit(
            Checkpoint("c", windows={WindowKey("t1", "chat", "m", hour + 180): make_delta(requests=2)})
        )
        with store.engine.connect() as conn:
            hourly = conn.execute(
                sa.text(f"SELECT requests FROM rollups_hour WHERE window_start = {hour}")
            ).scalar()
        assert hourly == 5


def test_a_store_at_0011_gets_its_rollups_tenant_totals(store_url: str) -> None:
    """Migration 0012 adds a tenant total row (route and model "") for each tenant and bucket of the
    rollups made before it: counts and sums added, histograms merged; the summary then reads them."""
    from alembic import command

    from llmpulse.store import create_engine_for

    day = 1763510400  # 2025-11-19T00:00:00Z
    engine = create_engine_for(store_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    columns = (
        "tenant_id, route, model, window_start, requests, cost_usd, latency_count, latency_hist, updated_at"
    )
    rows = [
        ("t1", "chat", "m1", 3, 0.25, 3, '{"10":2,"20":1}'),
        ("t1", "rag", "m2", 2, 0.5, 2, '{"10":1,"30":1}'),
        ("t2", "chat", "m1", 7, 1.0, 0, "{}"),
    ]
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0011")
            values = "(:t, :r, :m, :ws, :requests, :cost, :n, :hist, 1.0)"
            for table in ("rollups_hour", "rollups_day"):
                for tenant, route, model, requests, cost, n, hist in rows:
                    params = {"t": tenant, "r": route, "m": model, "ws": day, "requests": requests}
                    params.update({"cost": cost, "n": n, "hist": hist})
                    conn.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES {values}"), params)
            conn.execute(
                sa.text(
                    f"INSERT INTO rollup_progress (tenant_id, rolled_through) VALUES ('t1', {day + 86400})"
                )
            )
    finally:
        engine.dispose()
    with Store.open(store_url) as store:
        with store.engine.connect() as conn:
            for table in ("rollups_hour", "rollups_day"):
                totals = conn.execute(
                    sa.text(
                        f"SELECT tenant_id, requests, cost_usd, latency_count, latency_hist FROM {table} "
                        "WHERE route = '' AND model = '' ORDER BY tenant_id"
                    )
                ).all()
                assert [(t, r, c, n, json.loads(h)) for t, r, c, n, h in totals] == [
                    ("t1", 5, 0.75, 5, {"10": 3, "20": 1, "30": 1}),
                    ("t2", 7, 1.0, 0, {}),
                ]
        (row,) = store.summary("t1")
        assert (row.windows, row.delta.requests, row.delta.latency_hist) == (1, 5, {10: 3, 20: 1, 30: 1})
        assert {r.model for r in store.summary("t1", group_by="model")} == {"m1", "m2"}
