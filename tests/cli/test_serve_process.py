"""``llmpulse serve`` as a process: SIGTERM shuts it down gracefully and keeps what it acknowledged."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from llmpulse.pipeline import SQLiteEventLog
from llmpulse.testing import encode_batch_json, generate_events
from tests.server.live_server import free_port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_shuts_down_gracefully_keeping_every_acknowledged_event(
    tmp_path: Path, signum: signal.Signals
) -> None:
    port = free_port()
    db = tmp_path / "p.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmpulse.cli", "serve", "--port", str(port), "--db", f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        events = generate_events(300, start=datetime.now(UTC), duration_s=30, seed=3)
        acknowledged = 0
        for i in range(0, len(events), 100):
            response = httpx.post(
                f"{url}/v1/events", content=encode_batch_json(events[i : i + 100]), timeout=10
            )
            assert response.status_code == 200
            acknowledged += response.json()["accepted"]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if signum == signal.SIGTERM:
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says SIGTERM
        assert proc.returncode in (0, -signal.SIGTERM), err
    else:
        assert proc.returncode == 0, err
        assert "stopped" in err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}" in err  # the banner
    log = SQLiteEventLog(f"sqlite:///{tmp_path / 'p.log.db'}")
    try:
        stored = sum(len(r.events) for r in log.read(0, 0, 100_000))
    finally:
        log.close()
    assert stored == acknowledged == len(events)
