"""`Collector` across process boundaries: forked children, and the `atexit` flush in a real interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmpulse.events import LLMCall
from llmpulse.exporters import FileExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.testing import InMemoryExporter


def call(request_id: str) -> LLMCall:
    return LLMCall(
        model="gpt-4o-mini",
        timestamp=datetime.now(UTC),
        input_tokens=10,
        output_tokens=2,
        request_id=request_id,
    )


def _fork() -> int:
    with warnings.catch_warnings():
        # Python ≥ 3.12 warns about forking a multi-threaded process; forking is what is under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _exit_status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    return os.WEXITSTATUS(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_delivers_its_own_events_and_the_parent_its_own(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    memory = InMemoryExporter()
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), [FileExporter(path), memory])
    for i in range(5):
        collector.record(call(f"parent-{i}"))  # still queued at the fork
    collector.start()
    pid = _fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 70
        try:
            for i in range(3):
                collector.record(call(f"child-{i}"))
            stats = collector.stats()
            delivered = collector.shutdown(5.0)
            ids = [item["request_id"] for item in memory.items]
            if not delivered:
                code = 1
            elif stats["emitted"] != 3 or stats["exporters"]["memory"]["emitted"] != 3:
                code = 2
            elif ids[-3:] != ["child-0", "child-1", "child-2"] or any(i.startswith("parent") for i in ids):
                code = 3
            else:
                code = 0
        finally:
            os._exit(code)
    assert _exit_status(pid) == 0
    collector.record(call("parent-after"))
    assert collector.shutdown(5.0)
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == sorted(
        [f"parent-{i}" for i in range(5)] + ["parent-after"] + [f"child-{i}" for i in range(3)]
    )
    assert collector.stats()["emitted"] == 6  # the child's counters never leak into the parent


def _run_script(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    return done, time.monotonic() - started


_PRELUDE = """
    import sys
    from datetime import UTC, datetime
    from llmpulse.events import LLMCall
    from llmpulse.exporters import FileExporter
    from llmpulse.sdk import Collector, TelemetryConfig

    collector = Collector(TelemetryConfig(flush_interval_ms=600_000), [FileExporter("out.jsonl")])
    for i in range(200):
        collector.record(LLMCall(model="gpt-4o-mini", timestamp=datetime.now(UTC), request_id=f"r{i}"))
"""


@pytest.mark.parametrize(
    ("ending", "returncode"),
    [("", 0), ("sys.exit(3)", 3), ("raise RuntimeError('app crashed')", 1), ("del collector", 0)],
    ids=["normal-exit", "sys-exit", "uncaught-exception", "collector-dropped"],
)
def test_atexit_delivers_what_was_recorded_without_shutdown(
    tmp_path: Path, ending: str, returncode: int
) -> None:
    done, _ = _run_script(tmp_path, _PRELUDE + "    " + ending + "\n")
    assert done.returncode == returncode, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(200)]


def test_exit_is_not_held_up_by_a_dead_exporter_beyond_the_shutdown_timeout(tmp_path: Path) -> None:
    body = """
        import threading
        from datetime import UTC, datetime
        from llmpulse.events import LLMCall
        from llmpulse.sdk import Collector, TelemetryConfig

        class Dead:
            name = "dead"
            def export(self, items):
                threading.Event().wait()  # never returns
            def force_flush(self, timeout):
                return True
            def shutdown(self, timeout):
                return None

        collector = Collector(TelemetryConfig(flush_interval_ms=10, shutdown_timeout_s=0.5), [Dead()])
        for i in range(100):
            collector.record(LLMCall(model="m", timestamp=datetime.now(UTC)))
        print("recorded", flush=True)
    """
    done, elapsed = _run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "recorded"
    assert elapsed < 0.5 + 5.0  # interpreter start-up plus the 0.5 s deadline, loosely
