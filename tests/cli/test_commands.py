"""``replay``, ``demo`` and ``query`` against a real server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmpulse.cli import main
from llmpulse.cli._replay import batches
from llmpulse.events import LLMCall, LLMRequest, LLMResponse
from tests.cli.conftest import Live
from tests.server.live_server import free_port


def _line(**fields: object) -> str:
    return json.dumps(fields)


def _replay_file(tmp_path: Path) -> Path:
    old = datetime.now(UTC) - timedelta(days=40)
    ts = old.isoformat()
    lines = [
        _line(
            type="llm.request",
            request_id="a",
            tenant_id="t1",
            route="chat",
            model="gpt-4o",
            timestamp=ts,
            prompt_tokens=10,
        ),
        _line(type="llm.response", request_id="a", timestamp=ts, latency_ms=120.0, completion_tokens=5),
        "",
        _line(
            type="llm.request",
            request_id="b",
            tenant_id="t1",
            model="gpt-4o",
            timestamp=ts,
            prompt_tokens="ten",
        ),
        _line(
            event_type="llm_cost",
            model="gpt-4o",
            timestamp=ts,
            input_tokens=3,
            output_tokens=4,
            tenant_id="t1",
        ),
        "{not json",
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_posts_the_file_and_reports_rejected_lines(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _replay_file(tmp_path)
    status = main(["replay", str(path), "--url", live.url, "--batch-size", "2"])
    err = capsys.readouterr().err
    assert status == 1
    assert "accepted 3, rejected 2" in err
    assert "line 4:" in err
    assert "prompt_tokens" in err
    assert "line 6:" in err
    kinds = [type(e) for e in live.logged()]
    assert kinds == [LLMRequest, LLMResponse, LLMCall]


def test_replay_of_a_clean_file_exits_0(live: Live, tmp_path: Path) -> None:
    now = datetime.now(UTC).isoformat()
    path = tmp_path / "clean.jsonl"
    path.write_text(
        "\n".join(
            _line(type="llm.call", model="gpt-4o-mini", timestamp=now, request_id=f"c{i}", tenant_id="t2")
            for i in range(25)
        )
    )
    assert main(["replay", str(path), "--url", live.url, "--batch-size", "10"]) == 0
    assert len(live.logged()) == 25


def test_replay_of_a_missing_file_fails_with_one_line(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "/no/such/file.jsonl", "--url", live.url]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err
    assert "Traceback" not in err


def test_replay_batches_split_by_count_and_bytes_and_keep_line_numbers() -> None:
    data = b'{"a":1}\n\n{"b":2}\n{"c":3}\n' + b'{"d":"' + b"x" * 50 + b'"}\n'
    out = list(batches(io.BytesIO(data), batch_size=2, max_bytes=40))
    assert [numbers for _, numbers, _ in out] == [[1, 3], [4], [5]]
    assert out[0][0] == b'{"a":1}\n{"b":2}\n'
    assert sum(consumed for _, _, consumed in out) == len(data)


def test_demo_posts_pairs_and_query_prints_a_table(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["demo", "--url", live.url, "--requests", "60", "--tenants", "2", "--seed", "5", "--spread", "120"]
    )
    err = capsys.readouterr().err
    assert status == 0
    assert "rejected 0" in err
    events = live.logged()
    requests = [e for e in events if isinstance(e, LLMRequest)]
    assert len(requests) == 60
    assert {e.tenant_id for e in requests} <= {"tenant-1", "tenant-2"}
    assert len([e for e in events if isinstance(e, LLMResponse)]) == 60
    live.wait_processed()

    assert main(["query", "--url", live.url, "--tenant", "tenant-1", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "tenant-1" in out
    assert "requests" in out
    assert "p95 ms" in out

    assert main(["query", "--url", live.url, "--tenant", "tenant-1", "--json", "--limit", "10000"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == len(data["metrics"]) > 0
    assert sum(r["requests"] for r in data["metrics"]) == sum(
        1 for e in requests if e.tenant_id == "tenant-1"
    )


def test_demo_with_a_rate_paces_the_calls(live: Live) -> None:
    assert main(["demo", "--url", live.url, "--requests", "10", "--rate", "20", "--seed", "9"]) == 0
    requests = [e for e in live.logged() if isinstance(e, LLMRequest)]
    assert len(requests) == 10
    newest = max(e.timestamp for e in requests)
    assert abs((datetime.now(UTC) - newest).total_seconds()) < 30


def test_query_for_an_unknown_tenant_says_so(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--url", live.url, "--tenant", "nobody"]) == 0
    assert "no windows" in capsys.readouterr().out


def test_commands_against_no_server_fail_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["query", "--url", url, "--tenant", "t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmpulse query: error: cannot reach")
    assert "Traceback" not in err
