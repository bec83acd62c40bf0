"""The shared budgets' HTTP API: definitions, reservations, expiry on the server's clock, API keys,
the budgets file, and observed spend from ingested calls."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.server import ServerSettings
from llmpulse.server._budgets_file import load_budgets
from tests.server.conftest import MakeClient, call_body
from tests.server.keyed import keyed_factory, wait_until


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _budget(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"amount_usd": 5.0, "period": "day", "scope": {"tenant_id": "acme"}}
    body.update(fields)
    return body


def test_put_get_list_and_delete(client: TestClient) -> None:
    put = client.put("/v1/budgets/acme-day", json=_budget(timezone="Europe/Paris", hard=False))
    assert put.status_code == 200
    view = put.json()
    assert view["id"] == "acme-day"
    assert view["amount_usd"] == 5.0
    assert view["remaining_usd"] == 5.0
    assert view["hard"] is False
    assert view["scope"] == {"tenant_id": "acme"}
    assert view["period_end"] is not None
    assert view["projected_exhaustion_at"] is None
    assert client.get("/v1/budgets/acme-day").json() == client.get("/v1/budgets").json()["budgets"][0]
    assert client.put("/v1/budgets/acme-day", json=_budget(amount_usd=7.0)).json()["amount_usd"] == 7.0
    assert client.delete("/v1/budgets/acme-day").status_code == 204
    assert client.get("/v1/budgets/acme-day").status_code == 404
    assert client.get("/v1/budgets").json() == {"budgets": []}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_budget(amount_usd=-1), "amount_usd"),
        (_budget(amount_usd="lots"), "amount_usd"),
        (_budget(period="year"), "period"),
        (_budget(timezone="Mars/Olympus"), "timezone"),
        (_budget(scope={"tenant_id": "acme", "team": "x"}), "scope.team"),
        (_budget(scope={}), "scope.tenant_id"),
        (_budget(reservation_ttl_s=0), "reservation_ttl_s"),
        (_budget(color="red"), "color"),
    ],
)
def test_a_bad_budget_is_422_naming_the_field(client: TestClient, body: dict[str, Any], named: str) -> None:
    answer = client.put("/v1/budgets/b1", json=body)
    assert answer.status_code == 422
    assert named in answer.json()["error"]
    assert client.get("/v1/budgets/b1").status_code == 404


def test_an_id_out_of_its_pattern_is_422(client: TestClient) -> None:
    assert client.put("/v1/budgets/bad%20id", json=_budget()).status_code == 422
    assert client.put("/v1/budgets/" + "x" * 129, json=_budget()).status_code == 422


def test_reservations_commit_release_and_extend(client: TestClient) -> None:
    client.put("/v1/budgets/b1", json=_budget(amount_usd=1.0))
    first = client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.6})
    assert first.status_code == 201
    rid = first.json()["reservation_id"]
    assert first.json()["remaining_usd"] == pytest.approx(0.4)
    refused = client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.5})
    assert refused.status_code == 409
    assert refused.json()["remaining_usd"] == pytest.approx(0.4)
    assert "left" in refused.json()["error"]
    grown = client.post(f"/v1/budgets/b1/reservations/{rid}/extend", json={"estimate_usd": 0.9})
    assert grown.status_code == 200
    assert grown.json()["estimate_usd"] == pytest.approx(0.9)
    assert (
        client.post(f"/v1/budgets/b1/reservations/{rid}/extend", json={"estimate_usd": 1.5}).status_code
        == 409
    )
    done = client.post(f"/v1/budgets/b1/reservations/{rid}/commit", json={"cost_usd": 0.95})
    assert done.json() == {
        "reservation_id": rid,
        "state": "committed",
        "cost_usd": 0.95,
        "remaining_usd": pytest.approx(0.05),
        "expired": False,
    }
    again = client.post(f"/v1/budgets/b1/reservations/{rid}/commit", json={"cost_usd": 0.1})
    assert again.json()["cost_usd"] == 0.95
    assert client.delete(f"/v1/budgets/b1/reservations/{rid}").status_code == 409
    assert client.delete("/v1/budgets/b1/reservations/nope").status_code == 404
    second = client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.05}).json()["reservation_id"]
    released = client.delete(f"/v1/budgets/b1/reservations/{second}")
    assert released.json()["state"] == "released"
    assert (
        client.post(f"/v1/budgets/b1/reservations/{second}/commit", json={"cost_usd": 0.01}).status_code
        == 409
    )
    view = client.get("/v1/budgets/b1").json()
    assert view["committed_usd"] == 0.95
    assert view["overrun_usd"] == pytest.approx(0.05)
    assert view["reservations_open"] == 0
    assert client.post("/v1/budgets/none/reservations", json={"estimate_usd": 0.1}).status_code == 404
    for bad in ({"estimate_usd": -1}, {"estimate_usd": 0.1, "ttl_s": 0}, {}, {"estimate_usd": 0.1, "x": 1}):
        answer = client.post("/v1/budgets/b1/reservations", json=bad)
        assert answer.status_code == 422, bad


def test_reservations_expire_on_the_servers_clock(client: TestClient) -> None:
    clock = Clock(1_796_000_000.0)
    client.app.state.llmpulse.clock = clock  # type: ignore[attr-defined]
    client.put("/v1/budgets/b1", json=_budget(amount_usd=1.0, reservation_ttl_s=30))
    rid = client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.8}).json()["reservation_id"]
    assert client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.5}).status_code == 409
    clock.now += 30
    view = client.get("/v1/budgets/b1").json()
    assert view["reservations_expired"] == 1
    assert view["remaining_usd"] == 1.0
    assert client.post("/v1/budgets/b1/reservations", json={"estimate_usd": 0.5}).status_code == 201
    late = client.post(f"/v1/budgets/b1/reservations/{rid}/commit", json={"cost_usd": 0.2}).json()
    assert late["expired"] is True
    assert client.get("/v1/budgets/b1").json()["committed_usd"] == 0.2
    clock.now += 86400  # the next day: a new period
    view = client.get("/v1/budgets/b1").json()
    assert view["committed_usd"] == 0.0
    assert view["remaining_usd"] == 1.0


def test_the_burn_rate_projects_when_the_budget_runs_out(client: TestClient) -> None:
    clock = Clock(1_796_000_000.0)  # 2026-11-30T00:53:20Z
    client.app.state.llmpulse.clock = clock  # type: ignore[attr-defined]
    client.put("/v1/budgets/m", json=_budget(amount_usd=10.0, period="month"))
    rid = client.post("/v1/budgets/m/reservations", json={"estimate_usd": 1.0}).json()["reservation_id"]
    client.post(f"/v1/budgets/m/reservations/{rid}/commit", json={"cost_usd": 1.0})
    clock.now += 3600  # $1 an hour since the budget was made: $9 left runs out 9 hours later
    view = client.get("/v1/budgets/m").json()
    assert view["burn_usd_per_hour"] == pytest.approx(1.0)
    assert view["projected_exhaustion_at"] == "2026-11-30T10:53:20Z"
    clock.now += 3600 * 22  # $1 in 23 hours: $9 more would take past the end of the month
    assert client.get("/v1/budgets/m").json()["projected_exhaustion_at"] is None


def test_api_keys_scope_budgets_to_their_tenant(tmp_path: Path) -> None:
    with ExitStack() as stack:
        keyed = keyed_factory(stack, tmp_path)(("alpha", "beta"))
        c = keyed.client
        mine = c.put("/v1/budgets/a1", json={"amount_usd": 2.0}, headers=keyed.auth("alpha"))
        assert mine.status_code == 200
        assert mine.json()["scope"] == {"tenant_id": "alpha"}  # the key's tenant by default
        other = c.put(
            "/v1/budgets/b1", json=_budget(scope={"tenant_id": "alpha"}), headers=keyed.auth("beta")
        )
        assert other.status_code == 403
        assert c.get("/v1/budgets/a1", headers=keyed.auth("beta")).status_code == 404
        assert c.get("/v1/budgets", headers=keyed.auth("beta")).json() == {"budgets": []}
        assert (
            c.post(
                "/v1/budgets/a1/reservations", json={"estimate_usd": 0.1}, headers=keyed.auth("beta")
            ).status_code
            == 404
        )
        taken = c.put("/v1/budgets/a1", json={"amount_usd": 9.0}, headers=keyed.auth("beta"))
        assert taken.status_code == 404  # another tenant's id cannot be taken over
        assert c.get("/v1/budgets/a1", headers=keyed.auth("alpha")).json()["amount_usd"] == 2.0
        assert c.get("/v1/budgets").status_code == 401
        assert c.delete("/v1/budgets/a1", headers=keyed.auth("beta")).status_code == 404
        assert (
            c.post(
                "/v1/budgets/a1/reservations", json={"estimate_usd": 0.1}, headers=keyed.auth("alpha")
            ).status_code
            == 201
        )


BUDGETS_YAML = """
budgets:
  - id: acme-daily
    amount_usd: 25
    period: day
    timezone: Europe/Paris
    scope: {tenant_id: acme, feature: chat}
  - id: beta-total
    amount_usd: 100
    period: total
    hard: false
    scope: {tenant_id: beta}
    reservation_ttl_s: 60
"""


def test_the_budgets_file_defines_budgets_at_start(make_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(BUDGETS_YAML)
    specs = load_budgets(path)
    assert [s.budget_id for s in specs] == ["acme-daily", "beta-total"]
    client = make_client(budgets=specs)
    views = {v["id"]: v for v in client.get("/v1/budgets").json()["budgets"]}
    assert views["acme-daily"]["scope"] == {"tenant_id": "acme", "feature": "chat"}
    assert views["acme-daily"]["timezone"] == "Europe/Paris"
    assert views["beta-total"]["period_start"] is None
    assert views["beta-total"]["hard"] is False
    assert views["beta-total"]["reservation_ttl_s"] == 60.0
    settings = ServerSettings.from_env({"LLMPULSE_BUDGETS_FILE": str(path)})
    assert settings.budgets == specs


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("budgets:\n  - {id: b1, amount_usd: -2, scope: {tenant_id: a}}", "budget 'b1': amount_usd"),
        ("budgets:\n  - {id: b1, amount_usd: 2, period: year, scope: {tenant_id: a}}", "budget 'b1': period"),
        ("budgets:\n  - {id: b1, amount_usd: 2, scope: {feature: x}}", "budget 'b1': scope.tenant_id"),
        ("budgets:\n  - {amount_usd: 2, scope: {tenant_id: a}}", "budgets[0]: id is required"),
        ("budgets:\n  - {id: b1, amount_usd: 2, colour: red, scope: {tenant_id: a}}", "budget 'b1': colour"),
        (
            "budgets:\n  - {id: b1, amount_usd: 2, scope: {tenant_id: a}}\n"
            "  - {id: b1, amount_usd: 3, scope: {tenant_id: a}}",
            "budget 'b1': id is defined twice",
        ),
        ("budgets: [unclosed", "not valid YAML"),
        ("limits: []", "`budgets`"),
    ],
)
def test_a_bad_budgets_file_is_refused_naming_the_budget_and_field(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"b\.yaml") as info:
        load_budgets(path)
    assert named in str(info.value)
    with pytest.raises(ValueError, match="LLMPULSE_BUDGETS_FILE"):
        ServerSettings.from_env({"LLMPULSE_BUDGETS_FILE": str(path)})


def test_observed_spend_is_what_the_ingested_calls_cost(make_client: MakeClient) -> None:
    client = make_client(run_processor=True)
    client.put("/v1/budgets/u1", json=_budget(scope={"tenant_id": "acme", "user_id": "u1"}))
    events = [call_body(user_id="u1", request_id=f"r{i}", cost=0.5, cost_source="provider") for i in range(3)]
    events.append(call_body(user_id="u2", request_id="r9", cost=4.0, cost_source="provider"))
    assert client.post("/v1/events", json=events).status_code in (200, 202)

    def observed() -> bool:
        return client.get("/v1/budgets/u1").json()["observed_requests"] == 3

    wait_until(observed, timeout=20)
    view = client.get("/v1/budgets/u1").json()
    assert view["observed_usd"] == pytest.approx(1.5)
    costs = client.get(
        "/v1/costs", params={"tenant_id": "acme", "user_id": "u1", "from": view["period_start"]}
    )
    assert costs.json()["total"]["cost_usd"] == pytest.approx(view["observed_usd"])
    assert view["committed_usd"] == 0.0  # nothing was reserved: the drift is visible
