"""FileExporter: JSON lines, size rotation that never splits a line, retryable disk errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmpulse.exporters import FileExporter
from llmpulse.sdk._exporter import RetryableError
from llmpulse.sdk._pipeline import ExportPipeline
from tests.sdk.test_pipeline import call


def item(i: int, pad: int = 0) -> dict[str, Any]:
    return {"type": "llm.call", "request_id": f"r{i:03d}", "pad": "x" * pad}


def ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def test_appends_json_lines_across_batches_and_reopenings(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "calls.jsonl"
    exporter = FileExporter(path)
    exporter.export([item(1), item(2)])
    exporter.shutdown(1.0)
    again = FileExporter(path)
    again.export([item(3)])
    again.shutdown(1.0)
    assert ids(path) == ["r001", "r002", "r003"]


def test_rotation_keeps_whole_lines_and_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    line_size = len(json.dumps(item(0), separators=(",", ":"))) + 1
    exporter = FileExporter(path, max_bytes=3 * line_size + 5, backup_count=2)
    for start in range(0, 20, 4):
        exporter.export([item(i) for i in range(start, start + 4)])
    exporter.shutdown(1.0)
    files = [path, path.with_name("calls.jsonl.1"), path.with_name("calls.jsonl.2")]
    assert not path.with_name("calls.jsonl.3").exists()
    for f in files:
        assert f.stat().st_size <= 3 * line_size + 5
        assert f.read_bytes().endswith(b"\n")
    assert ids(files[2]) + ids(files[1]) + ids(files[0]) == [f"r{i:03d}" for i in range(12, 20)]


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    exporter = FileExporter(path, max_bytes=200, backup_count=3)
    exporter.export([item(1), item(2, pad=500), item(3)])
    exporter.shutdown(1.0)
    assert ids(path.with_name("calls.jsonl.2")) == ["r001"]
    assert ids(path.with_name("calls.jsonl.1")) == ["r002"]
    assert ids(path) == ["r003"]


def test_rotation_continues_from_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(item(0)) + "\n")
    exporter = FileExporter(path, max_bytes=len(path.read_bytes()) + 10)
    exporter.export([item(1)])
    exporter.shutdown(1.0)
    assert ids(path.with_name("calls.jsonl.1")) == ["r000"]
    assert ids(path) == ["r001"]


def test_a_file_system_error_is_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RetryableError, match="cannot write"):
        FileExporter(blocker / "calls.jsonl").export([item(1)])


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"max_bytes": 0}, "max_bytes"), ({"backup_count": 0}, "backup_count")]
)
def test_bad_settings_are_refused(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FileExporter(tmp_path / "x.jsonl", **kwargs)


def test_through_the_pipeline_with_rotation(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    pipeline = ExportPipeline(FileExporter(path, max_bytes=4096, backup_count=50), max_batch=7)
    for i in range(100):
        pipeline.offer(call(i))
    assert pipeline.shutdown(timeout=10.0)
    rotated = sorted(tmp_path.glob("calls.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert rotated
    every = [i for f in [*rotated, path] for i in ids(f)]
    assert every == [f"r{i}" for i in range(100)]
