"""Store fixtures: every store test runs on SQLite files and on Postgres.

The Postgres is `tests.postgres_server.suite_dsn`'s: ``POSTGRES_TEST_DSN`` when set, else the
machine's own at 127.0.0.1:5432 when it answers, else a private server the tests start. The store's
tables in that database are dropped before each test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmpulse.store import CallRecord, Store, WindowDelta
from llmpulse.store._histogram import add
from llmpulse.store._tables import metadata
from tests.postgres_server import suite_dsn

DIALECTS = ["sqlite", "postgresql"]


def reset_postgres(dsn: str) -> None:
    """Drop the store's tables (and its migration version table) from a Postgres database."""
    from llmpulse.store import create_engine_for

    engine = create_engine_for(dsn)
    try:
        with engine.begin() as conn:
            for table in [*metadata.sorted_tables, sa.table("llmpulse_store_version")]:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=DIALECTS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a SQLite file in tmp_path, or the (emptied) Postgres test database."""
    if request.param == "postgresql":
        dsn = suite_dsn()
        reset_postgres(dsn)
        return dsn
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An opened (migrated) store on `store_url`, closed after the test."""
    s = Store.open(store_url)
    try:
        yield s
    finally:
        s.close()


def make_delta(
    *,
    requests: int = 0,
    errors: int = 0,
    latencies: Iterable[float] = (),
    ttfts: Iterable[float] = (),
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float = 0.0,
    cost_unknown: int = 0,
    timeouts: int = 0,
    late: int = 0,
) -> WindowDelta:
    """A window delta with the given figures; latencies and ttfts fill counts, sums and histograms."""
    d = WindowDelta()
    d.requests, d.errors, d.timeouts, d.late = requests, errors, timeouts, late
    d.prompt_tokens, d.completion_tokens = prompt_tokens, completion_tokens
    d.cost_usd, d.cost_unknown = cost_usd, cost_unknown
    for v in latencies:
        d.latency_count += 1
        d.latency_sum_ms += v
        add(d.latency_hist, v)
    for v in ttfts:
        d.ttft_count += 1
        d.ttft_sum_ms += v
        add(d.ttft_hist, v)
    return d


def make_record(tenant: str, request_id: str, **fields: object) -> CallRecord:
    """A call record with plausible figures; `fields` override any of them."""
    values: dict[str, object] = {
        "tenant_id": tenant,
        "request_id": request_id,
        "started_at": 1_763_546_400.0,
        "route": "chat",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "latency_ms": 812.5,
        "ttft_ms": None,
        "input_tokens": 100,
        "output_tokens": 20,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.000027,
        "cost_source": "genai-prices",
        "user_id": None,
        "user_id_hash": None,
        "org_id": None,
        "session_id": None,
        "feature": None,
        "endpoint": None,
        "environment": None,
        "trace_id": None,
        "span_id": None,
        "metadata": None,
        "updated_at": 1_763_546_401.0,
    }
    values.update(fields)
    return CallRecord(**values)  # type: ignore[arg-type]
