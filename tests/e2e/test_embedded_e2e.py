"""End to end: `llmpulse serve` as a subprocess, fed over HTTP, killed with SIGKILL mid-stream.

Thousands of out-of-order request/response pairs with duplicates, orphans and call events go in; the
windows `/v1/metrics` answers must equal the brute-force oracle's: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpulse.events import Event
from llmpulse.store import WindowKey
from llmpulse.testing.traffic import encode_batch_json, generate_events, iter_batches
from tests.e2e._server import ServerProcess
from tests.oracle import Expected, ExpectedWindow, expected_windows, nearest_rank

pytestmark = pytest.mark.slow

ORPHAN_TIMEOUT_S = 3


def _events(n_pairs: int, seed: int) -> list[Event]:
    return generate_events(
        n_pairs,
        tenants=3,
        routes=3,
        start=datetime.now(UTC) - timedelta(minutes=40),
        duration_s=30 * 60,
        error_rate=0.05,
        duplicate_rate=0.05,
        orphan_request_rate=0.02,
        orphan_response_rate=0.02,
        call_rate=0.1,
        shuffle=60,
        seed=seed,
    )


class Sender(threading.Thread):
    """Posts batches in order; a batch that gets no answer is re-sent until it is acknowledged."""

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.bodies = bodies
        self.acked = 0
        self.resent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10.0) as client:
                for body in self.bodies:
                    while True:
                        try:
                            response = client.post(
                                f"{self.url}/v1/events",
                                content=body,
                                headers={"content-type": "application/json"},
                            )
                        except httpx.TransportError:
                            self.resent += 1
                            time.sleep(0.05)
                            continue
                        if response.status_code == 503:
                            self.resent += 1
                            time.sleep(float(response.headers.get("retry-after", "1")))
                            continue
                        assert response.status_code == 200, response.text
                        self.acked += 1
                        break
        except BaseException as exc:
            self.error = exc


def _windows(url: str, tenants: set[str]) -> dict[WindowKey, dict[str, Any]]:
    rows: dict[WindowKey, dict[str, Any]] = {}
    for tenant in tenants:
        body = httpx.get(f"{url}/v1/metrics", params={"tenant_id": tenant, "limit": 10000}, timeout=10).json()
        assert body["count"] == len(body["metrics"])
        for row in body["metrics"]:
            start = int(datetime.fromisoformat(row["window_start"]).timestamp())
            rows[WindowKey(row["tenant_id"], row["route"], row["model"], start)] = row
    return rows


def _mismatches(rows: dict[WindowKey, dict[str, Any]], expected: Expected) -> list[str]:
    problems: list[str] = []
    if set(rows) != set(expected.windows):
        problems.append(f"window keys differ: {len(rows)} served, {len(expected.windows)} expected")
        return problems
    for key, want in expected.windows.items():
        got = rows[key]
        problems.extend(_row_mismatches(key, got, want))
    return problems


def _row_mismatches(key: WindowKey, got: dict[str, Any], want: ExpectedWindow) -> list[str]:
    out = []
    for field, value in (
        ("requests", want.requests),
        ("errors", want.errors),
        ("timeouts", want.timeouts),
        ("prompt_tokens", want.prompt_tokens),
        ("completion_tokens", want.completion_tokens),
        ("cached_input_tokens", want.cached_input_tokens),
        ("reasoning_tokens", want.reasoning_tokens),
        ("cost_unknown_requests", want.cost_unknown),
    ):
        if got[field] != value:
            out.append(f"{key} {field}: served {got[field]}, expected {value}")
    if want.latencies:
        avg = math.fsum(want.latencies) / len(want.latencies)
        if not math.isclose(got["avg_latency_ms"], avg, rel_tol=1e-9):
            out.append(f"{key} avg_latency_ms: served {got['avg_latency_ms']}, expected {avg}")
        p95 = nearest_rank(want.latencies, 0.95)
        assert p95 is not None
        if abs(got["p95_latency_ms"] - p95) > 0.01 * p95 + 1e-3:
            out.append(f"{key} p95_latency_ms: served {got['p95_latency_ms']}, expected {p95} ± 1%")
    elif got["avg_latency_ms"] is not None:
        out.append(f"{key} avg_latency_ms: served {got['avg_latency_ms']}, expected null")
    if (
        want.requests
        and want.cost_unknown < want.requests
        and not math.isclose(got["estimated_cost_usd"], want.cost_usd, rel_tol=1e-9, abs_tol=1e-12)
    ):
        out.append(f"{key} estimated_cost_usd: served {got['estimated_cost_usd']}, expected {want.cost_usd}")
    return out


def _wait_for_oracle(url: str, expected: Expected, timeout: float) -> list[str]:
    tenants = {key.tenant_id for key in expected.windows}
    deadline = time.monotonic() + timeout
    problems = ["not checked"]
    while time.monotonic() < deadline:
        problems = _mismatches(_windows(url, tenants), expected)
        if not problems:
            return []
        time.sleep(0.5)
    return problems


def test_windows_equal_the_oracle_after_a_sigkill_mid_stream(tmp_path: Path) -> None:
    events = _events(4000, seed=11)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    assert expected.duplicates > 0
    assert expected.orphan_responses > 0
    assert expected.unanswered_requests > 0
    bodies = [encode_batch_json(batch) for batch in iter_batches(events, 100)]

    args = ("--db", f"sqlite:///{tmp_path / 'e2e.db'}", "--orphan-timeout", str(ORPHAN_TIMEOUT_S))
    server = ServerProcess(tmp_path, *args).start()
    sender = Sender(server.url, bodies)
    try:
        sender.start()
        while sender.acked < len(bodies) // 3 and sender.is_alive():
            time.sleep(0.01)
        server.kill()  # mid-stream: the sender's current batch gets no answer and is re-sent
        killed_at = sender.acked
        server.start()
        sender.join(120)
        assert sender.error is None, sender.error
        assert sender.acked == len(bodies)
        assert 0 < killed_at < len(bodies)

        problems = _wait_for_oracle(server.url, expected, timeout=60 + ORPHAN_TIMEOUT_S)
        assert not problems, "\n".join(problems[:20])
        counters = server.health()["counters"]
        assert counters.get("orphan_responses", 0) == expected.orphan_responses

        # a second kill after everything was counted, then a restart: still nothing counted twice
        server.kill()
        server.start()
        time.sleep(1.0)
        assert _mismatches(_windows(server.url, {k.tenant_id for k in expected.windows}), expected) == []
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def test_graceful_stop_keeps_everything_acknowledged(tmp_path: Path) -> None:
    events = [e for e in _events(600, seed=5) if e is not None]
    expected = expected_windows(events, unanswered_are_timeouts=True)
    bodies = [encode_batch_json(batch) for batch in iter_batches(events, 100)]
    args = ("--db", f"sqlite:///{tmp_path / 'stop.db'}", "--orphan-timeout", str(ORPHAN_TIMEOUT_S))
    server = ServerProcess(tmp_path, *args).start()
    try:
        sender = Sender(server.url, bodies)
        sender.run()
        assert sender.error is None
        server.stop()  # SIGTERM right after the last acknowledgement
        server.start()
        problems = _wait_for_oracle(server.url, expected, timeout=30 + ORPHAN_TIMEOUT_S)
        assert not problems, "\n".join(problems[:20])
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
