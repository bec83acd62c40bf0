"""Retries on 503 honouring Retry-After, and reading batch answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from llmpulse.cli._http import CliError, RetryPolicy, batch_outcome, post_with_retry, retry_after_s


def _client(responses: list[httpx.Response | Exception]) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_503_is_retried_after_retry_after() -> None:
    client, seen = _client(
        [
            httpx.Response(503, headers={"retry-after": "2"}, json={"error": "busy"}),
            httpx.Response(200, json={"accepted": 3}),
        ]
    )
    waits: list[float] = []
    response = post_with_retry(client, "http://x/v1/events", b"[]", {}, RetryPolicy(), sleep=waits.append)
    assert response.status_code == 200
    assert waits == [2.0]
    assert len(seen) == 2


def test_transport_errors_are_retried_with_backoff() -> None:
    client, _ = _client([httpx.ConnectError("refused"), httpx.Response(200, json={"accepted": 1})])
    waits: list[float] = []
    policy = RetryPolicy(base_backoff_s=0.5)
    assert post_with_retry(client, "http://x", b"", {}, policy, sleep=waits.append).status_code == 200
    assert len(waits) == 1
    assert 0.25 <= waits[0] <= 0.75


def test_gives_up_after_max_attempts_with_one_line() -> None:
    client, seen = _client([httpx.Response(503, headers={"retry-after": "1"}) for _ in range(3)])
    with pytest.raises(CliError) as caught:
        post_with_retry(client, "http://x", b"", {}, RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert "3 attempts" in str(caught.value)
    assert "503" in str(caught.value)
    assert len(seen) == 3


def test_other_errors_are_not_retried() -> None:
    client, seen = _client([httpx.Response(413, json={"error": "too big"})])
    response = post_with_retry(client, "http://x", b"", {}, RetryPolicy(), sleep=lambda s: None)
    assert response.status_code == 413
    assert len(seen) == 1


def test_retry_after_forms() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = retry_after_s(later)
    assert value is not None
    assert 25 <= value <= 31


def test_batch_outcomes() -> None:
    partial = batch_outcome(
        httpx.Response(207, json={"accepted": 1, "rejected": [{"index": 1, "error": "bad"}]})
    )
    assert (partial.accepted, partial.rejected, partial.failed) == (1, [(1, "bad")], None)
    refused = batch_outcome(httpx.Response(413, json={"error": "too big"}))
    assert refused.failed == "HTTP 413: too big"
    garbage = batch_outcome(httpx.Response(500, text="oops"))
    assert garbage.failed == "HTTP 500: oops"
