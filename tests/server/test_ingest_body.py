"""Body limits, gzip, content types and encodings on the ingest endpoints."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from llmpulse.events import Limits
from llmpulse.server._body import read_body
from llmpulse.server._errors import ApiError
from tests.server.conftest import MakeClient, logged, request_body, response_body

SMALL = Limits(max_body_bytes=4096, max_batch_items=5)


def _events(n: int) -> list[dict[str, Any]]:
    return [{"type": "llm.request", **request_body(request_id=f"r{i}")} for i in range(n)]


def test_body_over_the_limit_with_content_length_is_413(make_client: MakeClient) -> None:
    client = make_client(limits=SMALL)
    raw = json.dumps(_events(1) * 1 + [{"pad": "x" * 5000}]).encode()
    response = client.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "4096" in response.json()["error"]
    assert logged(client) == []


def test_chunked_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = make_client(limits=SMALL)

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(100):
            yield json.dumps({"type": "llm.request", **request_body()}).encode() + b","
        yield b"{}]"

    response = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]


def test_body_just_under_the_limit_is_accepted(make_client: MakeClient) -> None:
    client = make_client(limits=Limits(max_body_bytes=4096))
    raw = json.dumps(request_body(metadata={"pad": "x"})).encode()
    raw = raw[:-1] + b" " * (4096 - len(raw)) + b"}"
    assert len(raw) == 4096
    response = client.post("/v1/llm/request", content=raw)
    assert response.status_code == 200


def test_gzip_body_is_accepted(client: TestClient) -> None:
    raw = gzip.compress(json.dumps(_events(3)).encode())
    response = client.post(
        "/v1/events", content=raw, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 3}
    assert len(logged(client)) == 3


def test_concatenated_gzip_members_are_one_body(client: TestClient) -> None:
    lines = [json.dumps(e).encode() + b"\n" for e in _events(2)]
    raw = gzip.compress(lines[0]) + gzip.compress(lines[1])
    response = client.post(
        "/v1/events",
        content=raw,
        headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 2}


def test_gzip_bomb_is_413(make_client: MakeClient) -> None:
    client = make_client(limits=Limits(max_body_bytes=64 * 1024))
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    response = client.post(
        "/v1/events", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x1f\x8b\x08\x00garbage-garbage",
        gzip.compress(json.dumps(request_body()).encode())[:-12],
        zlib.compress(json.dumps(request_body()).encode()),
        b"plain text, not gzip",
    ],
    ids=["corrupt", "truncated", "zlib-not-gzip", "not-compressed"],
)
def test_corrupt_gzip_is_400(client: TestClient, raw: bytes) -> None:
    response = client.post(
        "/v1/llm/request",
        content=raw,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "gzip, br"])
def test_unknown_content_encoding_is_415(client: TestClient, encoding: str) -> None:
    response = client.post(
        "/v1/llm/request",
        content=json.dumps(request_body()),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert response.status_code == 415
    assert "Content-Encoding" in response.json()["error"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"],
)
def test_wrong_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/v1/events", content=json.dumps(_events(1)), headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert "Content-Type" in response.json()["error"]


def test_ndjson_is_refused_on_single_event_endpoints(client: TestClient) -> None:
    response = client.post(
        "/v1/llm/request",
        content=json.dumps(request_body()),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    "content_type", [None, "application/json; charset=utf-8", "application/cloudevents+json"]
)
def test_json_content_types_and_none_are_accepted(client: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/v1/llm/response", content=json.dumps(response_body()), headers=headers)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1}


def test_bad_content_length_header_is_400() -> None:
    # httpx always sends a correct Content-Length, so read a raw ASGI request instead
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"abc")]}
    request = Request(scope, receive)
    with pytest.raises(ApiError) as caught:
        anyio.run(lambda: read_body(request, 100, allow_ndjson=True))
    assert caught.value.status == 400
    assert "Content-Length" in caught.value.message
