"""API keys: two tenants on every endpoint — 401 without a valid key, tenants rewritten on ingest,
queries scoped to the key's tenant (403 for another), public paths open, keys picked up while running."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from llmpulse.server import ServerSettings, create_app
from llmpulse.server._auth import Principal, is_loopback, requires_key, scoped_tenant, scoped_tenant_or_all
from llmpulse.server._errors import ApiError
from llmpulse.store import Store
from tests.server.conftest import call_body, now_iso, request_body, response_body
from tests.server.keyed import Keyed, MakeKeyed, add_windows, keyed_factory, wait_until


def _operations() -> list[tuple[str, str]]:
    """Every (method, path) of the API under /v1, and /metrics, from the app's own OpenAPI document."""
    schema = create_app(ServerSettings()).openapi()
    return sorted(
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method in ops
        if requires_key(path, metrics_public=False)
    )


OPERATIONS = _operations()
#: GET endpoints that read a tenant's data (they take `tenant_id`).
TENANT_READS = sorted(
    path
    for path, ops in create_app(ServerSettings()).openapi()["paths"].items()
    if "get" in ops and any(p.get("name") == "tenant_id" for p in ops["get"].get("parameters", []))
)


@pytest.fixture
def make_keyed(tmp_path: Path) -> Iterator[MakeKeyed]:
    with ExitStack() as stack:
        yield keyed_factory(stack, tmp_path)


@pytest.fixture
def keyed(make_keyed: MakeKeyed) -> Keyed:
    """A keyed server with an alert rule per tenant, so the alert endpoints answer too."""
    from llmpulse.alerts import Rule, Rules, Threshold

    rules = tuple(
        Rule(f"{t}-cost", t, threshold=Threshold("cost_usd", 300, above=1e9)) for t in ("alpha", "beta")
    )
    return make_keyed(alerts=Rules(rules=rules))


def test_every_api_endpoint_is_covered() -> None:
    paths = {path for _, path in OPERATIONS}
    assert {
        "/v1/events",
        "/v1/llm/request",
        "/v1/llm/response",
        "/v1/metrics",
        "/v1/metrics/summary",
    } <= paths
    assert {"/v1/stats", "/metrics"} <= paths
    assert {"/v1/metrics", "/v1/metrics/summary"} <= set(TENANT_READS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer lp_unknownunknownunknownunknownunknownunknown0",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "x" * 5000,
    ],
)
def test_without_a_valid_key_every_endpoint_is_401_with_a_challenge(
    keyed: Keyed, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = keyed.client.request(method, path, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert keyed.keys["alpha"] not in response.text


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_a_revoked_key_is_401_everywhere(keyed: Keyed, method: str, path: str) -> None:
    with Store.open(keyed.store_url) as store:
        assert store.keys.revoke(keyed.ids["alpha"]) is not None
    response = keyed.client.request(method, path, headers=keyed.auth("alpha"), content=b"{}")
    assert response.status_code == 401
    assert response.json() == {"error": "unknown or revoked API key"}


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs", "/"])
def test_public_paths_need_no_key(keyed: Keyed, path: str) -> None:
    response = keyed.client.get(path)
    assert response.status_code == 200, response.text


def test_static_files_need_no_key(keyed: Keyed) -> None:
    page = keyed.client.get("/")
    if page.status_code != 200 or "/static/" not in page.text:
        pytest.skip("no dashboard page with static files in this build")
    asset = page.text.split("/static/", 1)[1].split('"', 1)[0]
    assert keyed.client.get(f"/static/{asset}").status_code == 200


def test_without_keys_nothing_needs_a_key(make_keyed: MakeKeyed) -> None:
    open_app = make_keyed(tenants=())
    assert open_app.client.post("/v1/llm/request", json=request_body()).status_code == 200
    assert open_app.client.get("/v1/metrics", params={"tenant_id": "acme"}).status_code == 200
    # an unknown key changes nothing while no key exists
    headers = {"Authorization": "Bearer lp_nope"}
    assert open_app.client.get("/v1/metrics", params={"tenant_id": "x"}, headers=headers).status_code == 200
    assert open_app.client.get("/v1/metrics").status_code == 400  # tenant_id still required


# -- ingest: the tenant comes from the key ----------------------------------------------------------------


def test_single_request_claiming_another_tenant_is_stored_as_the_keys(keyed: Keyed) -> None:
    response = keyed.client.post(
        "/v1/llm/request", json=request_body(tenant_id="beta"), headers=keyed.auth("alpha")
    )
    assert response.status_code == 200, response.text
    response = keyed.client.post("/v1/llm/response", json=response_body(), headers=keyed.auth("alpha"))
    assert response.status_code == 200
    # the response names no tenant: it gets the key's, so it joins only that tenant's request
    assert keyed.logged_tenants() == ["alpha", "alpha"]
    metrics = keyed.client.get("/metrics", headers=keyed.auth("alpha")).text
    assert "llmpulse_events_tenant_rewritten_total 1.0" in metrics  # the request alone was rewritten


@pytest.mark.parametrize("encoding", ["array", "object", "ndjson", "gzip"])
def test_batches_are_rewritten_to_the_keys_tenant(keyed: Keyed, encoding: str) -> None:
    items = [
        request_body(request_id="a", tenant_id="beta", type="llm.request"),
        call_body(request_id="b", tenant_id="alpha"),
        call_body(request_id="c"),  # no tenant_id: would be "default"
        {k: v for k, v in call_body(request_id="d").items() if k != "tenant_id"},
        {**response_body(request_id="a"), "type": "llm.response"},
    ]
    headers = {**keyed.auth("beta"), "content-type": "application/json"}
    if encoding == "array":
        body = json.dumps(items).encode()
    elif encoding == "object":
        items = items[:1]
        body = json.dumps(items[0]).encode()
    elif encoding == "ndjson":
        body = "\n".join(json.dumps(i) for i in items).encode()
        headers["content-type"] = "application/x-ndjson"
    else:
        body = gzip.compress(json.dumps(items).encode())
        headers["content-encoding"] = "gzip"
    response = keyed.client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    expected = ["beta"] * len(items)  # the response too: it joins only the key's tenant's request
    assert keyed.logged_tenants() == expected


def test_a_batch_that_already_names_the_keys_tenant_is_stored_unchanged(keyed: Keyed) -> None:
    items = [call_body(request_id="x", tenant_id="alpha", timestamp=now_iso(-2))]
    response = keyed.client.post("/v1/events", json=items, headers=keyed.auth("alpha"))
    assert response.status_code == 200
    assert keyed.logged_tenants() == ["alpha"]
    metrics = keyed.client.get("/metrics", headers=keyed.auth("alpha")).text
    assert "llmpulse_events_tenant_rewritten_total 0.0" in metrics


def _otlp_document(tenant: str) -> dict[str, Any]:
    start = time.time_ns() - 5_000_000_000
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "30"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "4"}},
    ]
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 800_000_000),
        "attributes": attrs,
    }
    resource = {"attributes": [{"key": "llmpulse.tenant_id", "value": {"stringValue": tenant}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


def test_otlp_spans_claiming_another_tenant_are_stored_as_the_keys(keyed: Keyed) -> None:
    if "/v1/traces" not in {path for _, path in OPERATIONS}:
        pytest.skip("no OTLP receiver in this build")
    response = keyed.client.post("/v1/traces", json=_otlp_document("beta"), headers=keyed.auth("alpha"))
    assert response.status_code == 200, response.text
    assert keyed.logged_tenants() == ["alpha"]


# -- queries: the key's tenant by default, 403 for another --------------------------------------------------


@pytest.mark.parametrize("path", TENANT_READS)
def test_reads_default_to_the_keys_tenant_and_never_show_another(keyed: Keyed, path: str) -> None:
    add_windows(keyed.state.store, ["alpha", "beta"])
    for tenant, other in (("alpha", "beta"), ("beta", "alpha")):
        response = keyed.client.get(path, headers=keyed.auth(tenant))
        assert response.status_code == 200, response.text
        assert other not in response.text
        if path == "/v1/metrics":
            assert [row["tenant_id"] for row in response.json()["metrics"]] == [tenant]
        if path == "/v1/metrics/summary":
            assert [row["tenant_id"] for row in response.json()["summary"]] == [tenant]
        same = keyed.client.get(path, params={"tenant_id": tenant}, headers=keyed.auth(tenant))
        assert same.status_code == 200
        assert same.json() == response.json() or path != "/v1/metrics"


@pytest.mark.parametrize("path", TENANT_READS)
def test_asking_for_another_tenant_is_403(keyed: Keyed, path: str) -> None:
    add_windows(keyed.state.store, ["alpha", "beta"])
    response = keyed.client.get(path, params={"tenant_id": "beta"}, headers=keyed.auth("alpha"))
    assert response.status_code == 403, response.text
    assert "beta" in response.json()["error"]
    assert "alpha" not in response.text


def test_server_wide_stats_need_a_key_of_any_tenant(keyed: Keyed) -> None:
    assert keyed.client.get("/v1/stats").status_code == 401
    assert keyed.client.get("/v1/stats", headers=keyed.auth("beta")).status_code == 200


# -- how the server learns about keys --------------------------------------------------------------------


def test_a_key_created_while_running_is_enforced_within_the_cache_time(make_keyed: MakeKeyed) -> None:
    app = make_keyed(tenants=())
    assert app.client.get("/v1/metrics", params={"tenant_id": "alpha"}).status_code == 200
    with Store.open(app.store_url) as store:
        _, key = store.keys.create("alpha")
    # the new key works at once (unknown keys are looked up), and makes keys required
    response = app.client.get("/v1/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert app.client.get("/v1/metrics", params={"tenant_id": "alpha"}).status_code == 401


def test_keys_created_elsewhere_turn_enforcement_on_without_any_request_using_them(
    make_keyed: MakeKeyed,
) -> None:
    app = make_keyed(tenants=())
    with Store.open(app.store_url) as store:
        store.keys.create("alpha")
    wait_until(lambda: app.client.get("/v1/metrics", params={"tenant_id": "alpha"}).status_code == 401, 5)


def test_revocation_takes_effect_within_the_cache_time_and_revoking_all_keeps_keys_required(
    keyed: Keyed,
) -> None:
    assert keyed.client.get("/v1/metrics", headers=keyed.auth("alpha")).status_code == 200
    with Store.open(keyed.store_url) as store:
        for key_id in keyed.ids.values():
            store.keys.revoke(key_id)
    wait_until(lambda: keyed.client.get("/v1/metrics", headers=keyed.auth("alpha")).status_code == 401, 5)
    time.sleep(0.5)  # several refresh rounds: enforcement stays on without any active key
    assert keyed.client.get("/v1/metrics", params={"tenant_id": "alpha"}).status_code == 401


def test_last_use_is_recorded(keyed: Keyed) -> None:
    assert keyed.client.get("/v1/metrics", headers=keyed.auth("beta")).status_code == 200

    def recorded() -> bool:
        with Store.open(keyed.store_url) as store:
            found = store.keys.get(keyed.ids["beta"])
        return found is not None and found.last_used_at is not None

    wait_until(recorded, 5)
    with Store.open(keyed.store_url) as store:
        alpha = store.keys.get(keyed.ids["alpha"])
    assert alpha is not None
    assert alpha.last_used_at is None


def test_the_openapi_document_declares_the_bearer_key(keyed: Keyed) -> None:
    schema = keyed.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    metrics = schema["paths"]["/v1/metrics"]["get"]
    assert metrics["security"] == [{"bearerAuth": []}, {}]
    assert {"401", "403", "429"} <= set(metrics["responses"])
    assert "security" not in schema["paths"]["/health"]["get"]


# -- the helpers ------------------------------------------------------------------------------------------


def _request(caller: Principal | None) -> Request:
    return Request({"type": "http", "state": {"llmpulse_principal": caller}, "headers": []})


def test_scoped_tenant_rules() -> None:
    alpha = Principal("k1", "alpha")
    assert scoped_tenant(_request(alpha), None) == "alpha"
    assert scoped_tenant(_request(alpha), "") == "alpha"
    assert scoped_tenant(_request(alpha), "alpha") == "alpha"
    with pytest.raises(ApiError) as forbidden:
        scoped_tenant(_request(alpha), "beta")
    assert forbidden.value.status == 403
    assert scoped_tenant(_request(None), "beta") == "beta"
    with pytest.raises(ApiError) as missing:
        scoped_tenant(_request(None), None)
    assert missing.value.status == 400
    assert scoped_tenant_or_all(_request(None), None) is None
    assert scoped_tenant_or_all(_request(alpha), None) == "alpha"
    with pytest.raises(ApiError):
        scoped_tenant_or_all(_request(alpha), "beta")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_unreachable_store_makes_key_checks_503_without_details(
    keyed: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmpulse.store import StoreUnavailable

    def down(key: str) -> None:
        raise StoreUnavailable("looking up an API key: connection refused (SELECT ... FROM api_keys)")

    monkeypatch.setattr(keyed.state.store.keys, "lookup", down)
    response = keyed.client.get("/v1/metrics", headers=keyed.auth("alpha"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "cannot check the API key: the store is unavailable"}
