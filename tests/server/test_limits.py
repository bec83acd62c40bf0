"""Every HTTP limit, each over the real parts: body size (as sent, chunked, gzip bomb) 413, JSON depth
400, batch size 413, field lengths 422, query range and page size 400, rate limit 429 + Retry-After,
slow body 408 — over a real socket where the socket matters."""

from __future__ import annotations

import gzip
import json
import random
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Limits
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._limits import RateLimiter, RequestLimits, json_depth_exceeds
from tests.server.conftest import MakeClient, call_body, iso, request_body
from tests.server.keyed import MakeKeyed, keyed_factory
from tests.server.live_server import live_server


@pytest.fixture
def make_keyed(tmp_path: Path) -> Iterator[MakeKeyed]:
    with ExitStack() as stack:
        yield keyed_factory(stack, tmp_path)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real uvicorn server with a 64 KiB body limit and a 0.5 s body deadline: (host, port)."""
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'live.db'}",
        run_processor=False,
        log_sync="NORMAL",
        limits=Limits(max_body_bytes=64 * 1024),
        request_limits=RequestLimits(body_read_timeout_s=0.5),
    )
    with live_server(create_app(settings)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def _exchange(
    address: tuple[str, int], head: bytes, parts: list[bytes], pause_s: float = 0.0
) -> tuple[bytes, bool]:
    """Send `head` then `parts` (pausing between), read the answer: (response bytes, server closed?)."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(head)
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the server answered and closed: it stopped reading
            if pause_s:
                time.sleep(pause_s)
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return data, True
            if not chunk:
                return data, True
            data += chunk
            if b"\r\n\r\n" in data:
                head_end = data.index(b"\r\n\r\n") + 4
                length = int(data.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                if len(data) >= head_end + length:
                    break
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        return data, closed


def _head(method_path: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([method_path + b" HTTP/1.1", b"host: x", *headers]) + b"\r\n\r\n"


JSON_TYPE = b"content-type: application/json"
CHUNKED = b"transfer-encoding: chunked"


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _body(response: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return result


# -- body size ---------------------------------------------------------------------------------------------


def test_declared_body_over_the_limit_is_413_before_it_is_sent(live: tuple[str, int]) -> None:
    head = _head(b"POST /v1/events", JSON_TYPE, b"content-length: 99999999")
    started = time.monotonic()
    response, closed = _exchange(live, head, [])
    assert _status(response) == 413
    assert "max_body_bytes" in _body(response)["error"]
    assert closed
    assert time.monotonic() - started < 3


def test_chunked_body_is_refused_as_soon_as_it_passes_the_limit(live: tuple[str, int]) -> None:
    head = _head(b"POST /v1/events", JSON_TYPE, CHUNKED)
    chunk = b"[" + b" " * 16383
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)]  # 1 MiB offered in all
    response, closed = _exchange(live, head, parts, pause_s=0.005)
    assert _status(response) == 413
    assert closed


def test_gzip_bomb_is_413_after_at_most_the_limit(make_client: MakeClient) -> None:
    client = make_client(limits=Limits(max_body_bytes=1 << 20))
    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]", compresslevel=9)
    assert len(bomb) < 1 << 20
    response = client.post(
        "/v1/events", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]


# -- slow clients ------------------------------------------------------------------------------------------


def test_a_body_that_stops_arriving_is_408(live: tuple[str, int]) -> None:
    head = _head(b"POST /v1/llm/request", JSON_TYPE, b"content-length: 1000")
    started = time.monotonic()
    response, closed = _exchange(live, head, [b'{"request_id": '])
    elapsed = time.monotonic() - started
    assert _status(response) == 408
    assert "body_read_timeout_s" in _body(response)["error"]
    assert closed
    assert 0.4 < elapsed < 3


def test_a_trickling_body_is_408_at_the_deadline_not_at_each_idle_gap(live: tuple[str, int]) -> None:
    head = _head(b"POST /v1/events", JSON_TYPE, CHUNKED)
    parts = [b"1\r\n \r\n"] * 40  # one byte every 0.05 s: never idle for long, 2 s in all
    started = time.monotonic()
    response, _ = _exchange(live, head, parts, pause_s=0.05)
    assert _status(response) == 408
    assert time.monotonic() - started < 3


def test_a_body_within_the_deadline_is_accepted(live: tuple[str, int]) -> None:
    body = json.dumps(request_body()).encode()
    head = _head(b"POST /v1/llm/request", JSON_TYPE, b"content-length: %d" % len(body))
    response, _ = _exchange(live, head, [body[:10], body[10:]], pause_s=0.1)
    assert _status(response) == 200


# -- JSON nesting ------------------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_bodies_are_400_on_every_json_endpoint(client: TestClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    cases = [
        ("/v1/llm/request", '{"request_id": "r", "metadata": {"a": NESTED}}', "application/json"),
        ("/v1/llm/response", '{"request_id": "r", "error": {"a": NESTED}}', "application/json"),
        ("/v1/events", '[{"type": "llm.call", "metadata": {"a": NESTED}}]', "application/json"),
        ("/v1/events", '{"type": "llm.call"}\n{"metadata": NESTED}', "application/x-ndjson"),
        ("/v1/traces", '{"resourceSpans": NESTED}', "application/json"),
    ]
    for path, body, content_type in cases:
        data = body.replace("NESTED", nested).encode()
        response = client.post(path, content=data, headers={"content-type": content_type})
        assert response.status_code == 400, (path, response.text)
        assert "max_json_depth" in response.json()["error"]


def test_nesting_up_to_the_limit_is_decoded_normally(make_client: MakeClient) -> None:
    client = make_client(request_limits=RequestLimits(max_json_depth=8))
    ok = [call_body(metadata={"a": {"b": {"c": {"d": 1}}}})]  # depth 6: array, item, metadata, a, b, c
    assert client.post("/v1/events", json=ok).status_code == 200
    deep = [call_body(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}})]  # depth 9
    response = client.post("/v1/events", json=deep)
    assert response.status_code == 400
    # brackets inside strings do not nest
    strings = [call_body(metadata={"s": '[[[[[[[[[[{{{{{{{{{{\\"[['})]
    assert client.post("/v1/events", json=strings).status_code == 200


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_depth_check_agrees_with_the_real_depth_of_random_documents() -> None:
    rng = random.Random(5)
    texts = ["", "x", "\\", '"', "[", "]", "{", "}", '\\"[', "\n", "é"]

    def gen(budget: int) -> Any:
        if budget == 0 or rng.random() < 0.25:
            return rng.choice(texts) * rng.randint(0, 3) if rng.random() < 0.7 else rng.randint(0, 9)
        if rng.random() < 0.5:
            return [gen(budget - 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(texts) + str(i): gen(budget - 1) for i in range(rng.randint(0, 3))}

    for _ in range(600):
        value = gen(rng.randint(1, 40))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = _depth(value)
        for limit in {1, 3, max(1, depth - 1), max(1, depth), depth + 1}:
            assert json_depth_exceeds(text, limit) is (depth > limit), (limit, depth, text[:200])


# -- batches and fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndjson", [False, True])
def test_batch_over_max_batch_items_is_413(make_client: MakeClient, ndjson: bool) -> None:
    client = make_client(limits=Limits(max_batch_items=5))
    items = [call_body(request_id=f"c{i}") for i in range(6)]
    if ndjson:
        body = "\n".join(json.dumps(i) for i in items).encode()
        response = client.post("/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
    else:
        response = client.post("/v1/events", json=items)
    assert response.status_code == 413
    assert "limit is 5" in response.json()["error"]
    assert client.post("/v1/events", json=items[:5]).status_code == 200


@pytest.mark.parametrize(
    ("field", "length"), [("tenant_id", 257), ("route", 257), ("model", 257), ("request_id", 129)]
)
def test_fields_over_their_length_are_422_naming_them(client: TestClient, field: str, length: int) -> None:
    response = client.post("/v1/llm/request", json=request_body(**{field: "x" * length}))
    assert response.status_code == 422
    assert field in response.json()["error"]
    assert client.post("/v1/llm/request", json=request_body(**{field: "x" * (length - 1)})).status_code == 200


@pytest.mark.parametrize("param", ["tenant_id", "route", "model"])
def test_query_parameters_over_256_characters_are_422(client: TestClient, param: str) -> None:
    params = {"tenant_id": "t", param: "x" * 257}
    for path in ("/v1/metrics", "/v1/metrics/summary"):
        response = client.get(path, params=params)
        assert response.status_code == 422
        assert param in response.json()["error"]


# -- query ranges and page sizes ---------------------------------------------------------------------------


def test_page_size_over_max_page_size_is_400(make_client: MakeClient) -> None:
    default = make_client()
    response = default.get("/v1/metrics", params={"tenant_id": "t", "limit": 10_001})
    assert response.status_code == 400
    assert "max_page_size" in response.json()["error"]
    assert default.get("/v1/metrics", params={"tenant_id": "t", "limit": 10_000}).status_code == 200
    small = make_client(request_limits=RequestLimits(max_page_size=50))
    assert small.get("/v1/metrics", params={"tenant_id": "t", "limit": 51}).status_code == 400
    assert small.get("/v1/metrics", params={"tenant_id": "t", "limit": 50}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/metrics/summary"])
def test_query_range_over_max_query_range_is_400(make_client: MakeClient, path: str) -> None:
    client = make_client(request_limits=RequestLimits(max_query_range_s=7 * 86400))
    now = datetime.now(UTC)
    long = {"tenant_id": "t", "from": iso(now - timedelta(days=8)), "to": iso(now)}
    response = client.get(path, params=long)
    assert response.status_code == 400
    assert "max_query_range_s" in response.json()["error"]
    open_ended = {"tenant_id": "t", "from": iso(now - timedelta(days=8))}  # `to` defaults to now
    assert client.get(path, params=open_ended).status_code == 400
    far_future = {"tenant_id": "t", "from": iso(now), "to": "9999-01-01T00:00:00Z"}
    assert client.get(path, params=far_future).status_code == 400
    fine = {"tenant_id": "t", "from": iso(now - timedelta(days=6)), "to": iso(now)}
    assert client.get(path, params=fine).status_code == 200


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1969-12-31T23:00:00Z"]
)
def test_timestamps_out_of_range_are_422_not_500(client: TestClient, value: str) -> None:
    for path in ("/v1/metrics", "/v1/metrics/summary"):
        for param in ("from", "to"):
            response = client.get(path, params={"tenant_id": "t", param: value})
            assert response.status_code == 422, (path, param, response.text)


# -- rate limit --------------------------------------------------------------------------------------------


def test_each_key_has_its_own_bucket_and_429_says_when_to_retry(make_keyed: MakeKeyed) -> None:
    keyed = make_keyed(request_limits=RequestLimits(rate_limit_per_s=2.0, rate_limit_burst=3))
    statuses = [keyed.client.get("/v1/metrics", headers=keyed.auth("alpha")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = keyed.client.post("/v1/events", json=[call_body()], headers=keyed.auth("alpha"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "rate limit" in refused.json()["error"]
    assert keyed.logged_tenants() == []  # nothing appended
    # another key is not affected
    assert keyed.client.get("/v1/metrics", headers=keyed.auth("beta")).status_code == 200
    time.sleep(0.6)  # one token back at 2 per second
    assert keyed.client.get("/v1/metrics", headers=keyed.auth("alpha")).status_code == 200


def test_retry_after_is_whole_seconds_rounded_up(make_keyed: MakeKeyed) -> None:
    keyed = make_keyed(request_limits=RequestLimits(rate_limit_per_s=0.25, rate_limit_burst=1))
    assert keyed.client.get("/v1/stats", headers=keyed.auth("beta")).status_code == 200
    refused = keyed.client.get("/v1/stats", headers=keyed.auth("beta"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] in ("4", "3")


def test_requests_without_a_valid_key_are_limited_per_client_ip(make_keyed: MakeKeyed) -> None:
    keyed = make_keyed(request_limits=RequestLimits(rate_limit_per_s=0.5, rate_limit_burst=3))
    bad = {"Authorization": "Bearer lp_guess"}
    statuses = [keyed.client.get("/v1/metrics", headers=bad).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert keyed.client.get("/v1/metrics", headers=keyed.auth("alpha")).status_code == 200


def test_without_keys_loopback_is_not_limited_but_an_exposed_server_is(make_keyed: MakeKeyed) -> None:
    limits = RequestLimits(rate_limit_per_s=0.5, rate_limit_burst=2)
    local = make_keyed(tenants=(), request_limits=limits)
    assert {local.client.get("/v1/stats").status_code for _ in range(10)} == {200}
    exposed = make_keyed(tenants=(), request_limits=limits, host="0.0.0.0", insecure=True)
    assert [exposed.client.get("/v1/stats").status_code for _ in range(3)] == [200, 200, 429]


def test_health_and_docs_are_never_limited(make_keyed: MakeKeyed) -> None:
    keyed = make_keyed(request_limits=RequestLimits(rate_limit_per_s=0.1, rate_limit_burst=1))
    assert {keyed.client.get("/health").status_code for _ in range(5)} == {200}


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    limiter = RateLimiter(rate=10.0, burst=2, max_buckets=2)
    assert limiter.take("a", now=0.0) is None
    assert limiter.take("a", now=0.0) is None
    wait = limiter.take("a", now=0.0)
    assert wait == pytest.approx(0.1)
    assert limiter.take("a", now=0.1) is None
    assert limiter.take("a", now=100.0) is None  # refilled, but only up to the burst
    assert limiter.take("a", now=100.0) is None
    assert limiter.take("a", now=100.0) is not None
    limiter.take("b", now=100.0)
    limiter.take("c", now=100.0)  # "a" is the least recently used: forgotten (starts full again)
    assert limiter.take("a", now=100.0) is None
    assert RateLimiter(rate=0.0, burst=1).take("x") is None


# -- settings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("body_read_timeout_s", 0),
        ("max_json_depth", 0),
        ("rate_limit_per_s", -1),
        ("rate_limit_burst", 0),
        ("max_query_range_s", float("inf")),
        ("max_page_size", 1.5),
    ],
)
def test_bad_request_limits_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RequestLimits(**{field: value})


def test_request_limits_from_the_environment() -> None:
    env = {
        "LLMPULSE_BODY_TIMEOUT_S": "7.5",
        "LLMPULSE_MAX_JSON_DEPTH": "12",
        "LLMPULSE_RATE_LIMIT": "0",
        "LLMPULSE_RATE_BURST": "9",
        "LLMPULSE_MAX_QUERY_RANGE_S": "3600",
        "LLMPULSE_MAX_PAGE_SIZE": "100",
        "LLMPULSE_KEY_CACHE_S": "1",
        "LLMPULSE_METRICS_PUBLIC": "1",
    }
    settings = ServerSettings.from_env(env)
    assert settings.request_limits == RequestLimits(7.5, 12, 0.0, 9, 3600.0, 100)
    assert settings.key_cache_s == 1.0
    assert settings.metrics_public is True
    with pytest.raises(ValueError, match="LLMPULSE_RATE_LIMIT"):
        ServerSettings.from_env({"LLMPULSE_RATE_LIMIT": "fast"})
    with pytest.raises(ValueError, match="LLMPULSE_METRICS_PUBLIC"):
        ServerSettings.from_env({"LLMPULSE_METRICS_PUBLIC": "maybe"})


# -- NUL characters (Postgres cannot store or compare them) -------------------------------------------------


def test_a_nul_character_in_an_event_body_is_422(client: TestClient) -> None:
    for path, body in (
        ("/v1/llm/request", request_body(tenant_id="a\x00b")),
        ("/v1/events", [call_body(route="\x00")]),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 422
        assert "NUL" in response.json()["error"]


def test_a_nul_character_in_a_query_is_422(client: TestClient) -> None:
    for path in ("/v1/metrics", "/v1/metrics/summary"):
        response = client.get(f"{path}?tenant_id=t&route=a%00")
        assert response.status_code == 422
        assert "NUL" in response.json()["error"]


def test_integers_beyond_64_bits_in_free_form_objects_are_422_per_item(client: TestClient) -> None:
    # JSON allows them, the event log's MessagePack does not: they used to fail the append (500), or
    # on the raw-JSON path the processor's next checkpoint
    huge = 2**64
    single = client.post("/v1/llm/request", json=request_body(metadata={"n": [1, huge]}))
    assert single.status_code == 422
    assert "64-bit" in single.json()["error"]
    batch = client.post(
        "/v1/events",
        json=[call_body(request_id="ok"), call_body(request_id="bad", error={"code": -huge - 1})],
    )
    assert batch.status_code == 207
    assert batch.json()["rejected"] == [
        {"index": 1, "error": "`error` holds an integer outside the 64-bit range"}
    ]


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_without_a_utc_equivalent_are_422_not_500(client: TestClient, timestamp: str) -> None:
    single = client.post("/v1/llm/request", json=request_body(timestamp=timestamp))
    assert single.status_code == 422
    assert "timestamp" in single.json()["error"]
    ndjson = "\n".join(json.dumps(i) for i in (call_body(), call_body(timestamp=timestamp))).encode()
    batch = client.post("/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson"})
    assert batch.status_code == 207
    assert "timestamp" in batch.json()["rejected"][0]["error"]
    array = client.post("/v1/events", json=[call_body(timestamp=timestamp)])
    assert array.status_code == 422
