"""API row formatting: exact StreamLens fields first, then llmpulse's additions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmpulse.store import StoredWindow, SummaryRow, WindowKey, metrics_row, quantile, rfc3339, summary_row
from tests.store.conftest import make_delta

T0 = 1_763_546_400  # 2025-11-19T10:00:00Z
SEED_FIELDS = [
    "tenant_id",
    "route",
    "model",
    "window_start",
    "window_end",
    "requests",
    "errors",
    "avg_latency_ms",
    "p95_latency_ms",
    "avg_prompt_tokens",
    "avg_completion_tokens",
    "estimated_cost_usd",
]
EXTRA_FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
    "p50_latency_ms",
    "p99_latency_ms",
    "avg_ttft_ms",
    "p95_ttft_ms",
    "timeouts",
    "late_events",
    "cost_unknown_requests",
]
NOW = datetime.fromtimestamp(T0 + 3600, UTC)


def _window(**figures: object) -> StoredWindow:
    return StoredWindow(WindowKey("t1", "chat", "gpt-4.1-mini", T0), make_delta(**figures), NOW)  # type: ignore[arg-type]


def test_metrics_row_has_exactly_the_seed_fields_first_then_additions() -> None:
    row = metrics_row(_window(requests=1), now=NOW, final_after_s=60)
    assert list(row) == [*SEED_FIELDS, "final", *EXTRA_FIELDS]


def test_metrics_row_values_and_formats() -> None:
    w = _window(
        requests=3,
        errors=1,
        latencies=[100.0, 200.0],  # the third request has no latency (a timeout)
        ttfts=[30.0, 50.0],
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=0.123456789,
        timeouts=1,
        late=2,
        cost_unknown=1,
    )
    w.delta.cached_input_tokens, w.delta.reasoning_tokens = 40, 20
    row = metrics_row(w, now=NOW, final_after_s=60)
    assert row["window_start"] == "2025-11-19T10:00:00Z"
    assert row["window_end"] == "2025-11-19T10:01:00Z"
    assert (row["tenant_id"], row["route"], row["model"]) == ("t1", "chat", "gpt-4.1-mini")
    assert (row["requests"], row["errors"], row["timeouts"], row["late_events"]) == (3, 1, 1, 2)
    assert row["avg_latency_ms"] == 150.0  # over calls with a latency, unrounded
    assert row["avg_prompt_tokens"] == pytest.approx(100 / 3)  # per request, unrounded
    assert row["avg_completion_tokens"] == pytest.approx(50 / 3)
    assert row["estimated_cost_usd"] == 0.123456789
    assert row["p95_latency_ms"] == quantile(w.delta.latency_hist, 0.95)
    assert row["p95_latency_ms"] == pytest.approx(200.0, rel=0.01)
    assert row["p50_latency_ms"] == pytest.approx(100.0, rel=0.01)
    assert row["p99_latency_ms"] == pytest.approx(200.0, rel=0.01)
    assert row["avg_ttft_ms"] == 40.0
    assert row["p95_ttft_ms"] == pytest.approx(50.0, rel=0.01)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (100, 50, 150)
    assert (row["cached_input_tokens"], row["reasoning_tokens"], row["cache_write_tokens"]) == (40, 20, 0)
    assert row["cost_unknown_requests"] == 1


def test_figures_without_data_are_null() -> None:
    row = metrics_row(_window(), now=NOW, final_after_s=0)
    for name in ("avg_latency_ms", "p95_latency_ms", "avg_prompt_tokens", "avg_completion_tokens"):
        assert row[name] is None, name
    for name in ("p50_latency_ms", "p99_latency_ms", "avg_ttft_ms", "p95_ttft_ms"):
        assert row[name] is None, name
    assert row["requests"] == 0


def test_cost_is_null_when_no_request_has_a_known_cost() -> None:
    assert (
        metrics_row(_window(requests=2, cost_unknown=2), now=NOW, final_after_s=0)["estimated_cost_usd"]
        is None
    )
    partly = metrics_row(_window(requests=2, cost_unknown=1, cost_usd=0.5), now=NOW, final_after_s=0)
    assert partly["estimated_cost_usd"] == 0.5
    assert metrics_row(_window(requests=2), now=NOW, final_after_s=0)["estimated_cost_usd"] == 0.0


@pytest.mark.parametrize(
    ("seconds_after_end", "final"),
    [(-1, False), (29.999, False), (30, True), (31, True)],
)
def test_final_once_window_end_plus_grace_has_passed(seconds_after_end: float, final: bool) -> None:
    now = datetime.fromtimestamp(T0 + 60 + seconds_after_end, UTC)
    assert metrics_row(_window(requests=1), now=now, final_after_s=30)["final"] is final


def test_rfc3339_is_utc_with_z() -> None:
    plus2 = datetime(2025, 11, 19, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(plus2) == "2025-11-19T12:00:00Z"
    assert rfc3339(datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)) == "2025-01-02T03:04:05.600000Z"


def test_summary_row_fields() -> None:
    delta = make_delta(requests=4, latencies=[10.0, 20.0, 30.0, 40.0], cost_usd=1.5)
    start = datetime.fromtimestamp(T0, UTC)
    row = summary_row(SummaryRow("t1", None, "m1", start, start + timedelta(hours=1), 3, delta))
    assert list(row) == [
        "tenant_id",
        "route",
        "model",
        "from",
        "to",
        "windows",
        *SEED_FIELDS[5:],
        *EXTRA_FIELDS,
    ]
    assert (row["tenant_id"], row["route"], row["model"], row["windows"]) == ("t1", None, "m1", 3)
    assert (row["from"], row["to"]) == ("2025-11-19T10:00:00Z", "2025-11-19T11:00:00Z")
    assert row["p95_latency_ms"] == pytest.approx(40.0, rel=0.01)
    assert row["avg_latency_ms"] == 25.0
    assert row["estimated_cost_usd"] == 1.5
