"""A forked child restarts its pipelines and delivers its own items; the parent keeps its own."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from llmpulse.exporters import FileExporter
from llmpulse.sdk._pipeline import ExportPipeline
from llmpulse.testing import InMemoryExporter
from tests.sdk.test_pipeline import call

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _fork() -> int:
    with warnings.catch_warnings():
        # Python ≥ 3.12 warns about forking a multi-threaded process; forking is what is under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _child_status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    return os.WEXITSTATUS(status)


def test_forked_child_delivers_its_own_items_and_not_the_parents() -> None:
    sink = InMemoryExporter()
    pipeline = ExportPipeline(sink, flush_interval_s=60.0)
    pipeline.offer(call(1))
    pipeline.offer(call(2))  # queued in the parent at the fork
    pid = _fork()
    if pid == 0:  # pragma: no cover - runs in the child, which reports through its exit status
        code = 70
        try:
            before = len(sink.items)
            for i in range(100, 103):
                pipeline.offer(call(i))
            flushed = pipeline.force_flush(timeout=5.0)
            ids = [item["request_id"] for item in sink.items[before:]]
            stats = pipeline.stats()
            if not flushed:
                code = 1
            elif ids != ["r100", "r101", "r102"]:
                code = 2
            elif (stats["offered"], stats["exported"], stats["queued"], stats["dropped"]) != (3, 3, 0, 0):
                code = 3
            else:
                code = 0
        finally:
            os._exit(code)
    assert _child_status(pid) == 0
    assert pipeline.force_flush(timeout=5.0)
    assert [item["request_id"] for item in sink.items] == ["r1", "r2"]
    assert pipeline.shutdown(timeout=5.0)


def test_forked_child_writes_through_its_own_file_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    pipeline = ExportPipeline(FileExporter(path), flush_interval_s=60.0)
    pipeline.offer(call(1))
    assert pipeline.force_flush(timeout=5.0)  # the parent's file is open now
    pid = _fork()
    if pid == 0:  # pragma: no cover - child
        code = 70
        try:
            pipeline.offer(call(2))
            code = 0 if pipeline.shutdown(timeout=5.0) else 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    assert _child_status(pid) == 0
    pipeline.offer(call(3))
    assert pipeline.shutdown(timeout=5.0)
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids[0] == "r1"
    assert sorted(ids) == ["r1", "r2", "r3"]
