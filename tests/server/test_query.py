"""Query parameter validation and the shape of ``/v1/metrics`` and ``/v1/metrics/summary``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from llmpulse.server._errors import ApiError
from llmpulse.server._query import parse_time


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/metrics/summary"])
@pytest.mark.parametrize("query", ["", "?tenant_id=", "?route=chat"])
def test_missing_tenant_is_400(client: TestClient, path: str, query: str) -> None:
    response = client.get(path + query)
    assert response.status_code == 400
    assert response.json() == {"error": "tenant_id is required"}


@pytest.mark.parametrize("limit", ["0", "-3", "abc", "1.5"])
def test_bad_limit_is_422_naming_it(client: TestClient, limit: str) -> None:
    response = client.get("/v1/metrics", params={"tenant_id": "t", "limit": limit})
    assert response.status_code == 422
    assert "limit" in response.json()["error"]


@pytest.mark.parametrize("param", ["from", "to"])
@pytest.mark.parametrize("value", ["yesterday", "2025-11-19T10:00:00", "2025-13-01T00:00:00Z", "1700000000"])
def test_bad_time_is_422_naming_the_parameter(client: TestClient, param: str, value: str) -> None:
    for path in ("/v1/metrics", "/v1/metrics/summary"):
        response = client.get(path, params={"tenant_id": "t", param: value})
        assert response.status_code == 422
        assert f"`{param}`" in response.json()["error"]


def test_from_after_to_is_422(client: TestClient) -> None:
    response = client.get(
        "/v1/metrics", params={"tenant_id": "t", "from": "2025-11-19T11:00:00Z", "to": "2025-11-19T10:00:00Z"}
    )
    assert response.status_code == 422
    assert "from" in response.json()["error"]


def test_bad_group_by_is_422(client: TestClient) -> None:
    response = client.get("/v1/metrics/summary", params={"tenant_id": "t", "group_by": "tenant"})
    assert response.status_code == 422
    assert "group_by" in response.json()["error"]


def test_unknown_tenant_has_no_rows(client: TestClient) -> None:
    response = client.get("/v1/metrics", params={"tenant_id": "nobody"})
    assert response.status_code == 200
    assert response.json() == {"metrics": [], "count": 0}
    summary = client.get("/v1/metrics/summary", params={"tenant_id": "nobody", "group_by": "model"})
    assert summary.json() == {"summary": [], "count": 0}


def test_parse_time_accepts_offsets_and_returns_utc() -> None:
    parsed = parse_time("from", "2025-11-19T12:00:00+02:00")
    assert parsed is not None
    assert parsed.isoformat() == "2025-11-19T10:00:00+00:00"
    assert parse_time("from", None) is None
    with pytest.raises(ApiError) as caught:
        parse_time("to", "nope")
    assert caught.value.status == 422
