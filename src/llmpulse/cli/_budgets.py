"""``llmpulse budgets``: list, show, set and delete the server's shared budgets (docs/budgets.md).

``budgets list`` prints every budget the caller may see (with an API key: its tenant's) with its
current period: amount, committed, reserved, remaining, the spend the telemetry observed, the burn
rate and when the budget runs out at that rate. ``budgets show ID`` prints one budget in full,
``budgets set ID --amount USD ...`` creates or replaces one, ``budgets delete ID`` removes one.
``--json`` prints the server's JSON unchanged.

The commands talk to a running server (``--url``, ``--api-key``). An error answer (422 naming a
field, 404 for an unknown budget, 403 for another tenant's) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

from llmpulse.cli._common import Subcommands, add_url, auth_headers, endpoint, non_negative_float
from llmpulse.cli._http import CliError

PERIODS: Final = ("day", "week", "month", "total")
#: The scope attributes ``set`` takes, as (flag, field of the API's ``scope``).
SCOPE_FLAGS: Final = (
    ("tenant", "tenant_id"),
    ("user", "user_id"),
    ("org", "org_id"),
    ("feature", "feature"),
    ("environment", "environment"),
)


def add_parser(sub: Subcommands) -> None:
    """Register ``budgets`` and its subcommands ``list``, ``show``, ``set`` and ``delete``."""
    parser = sub.add_parser(
        "budgets",
        help="list, show, set and delete shared budgets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every budget with its current period")
    add_url(listing)
    listing.add_argument("--tenant", help="only the budgets of this tenant")
    listing.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="one budget in full")
    add_url(show)
    show.add_argument("budget_id", metavar="ID", help="the budget's id")
    show.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    show.set_defaults(func=run_show)

    put = actions.add_parser("set", help="create or replace a budget")
    add_url(put)
    put.add_argument("budget_id", metavar="ID", help="the budget's id: letters, digits and ._:-")
    put.add_argument(
        "--amount", type=non_negative_float, required=True, metavar="USD", help="the cap per period"
    )
    put.add_argument("--period", choices=PERIODS, default="month", help="the period (default: month)")
    put.add_argument("--timezone", default="UTC", metavar="TZ", help="IANA zone of the period (default: UTC)")
    put.add_argument(
        "--soft", action="store_true", help="record reservations past the amount instead of refusing"
    )
    put.add_argument("--tenant", help="the tenant (default: the API key's; required without keys)")
    put.add_argument("--user", help="only this user_id's calls")
    put.add_argument("--org", help="only this org_id's calls")
    put.add_argument("--feature", help="only this feature's calls")
    put.add_argument("--environment", help="only this environment's calls")
    put.add_argument(
        "--ttl",
        type=non_negative_float,
        metavar="S",
        help="seconds a reservation may stay open (default: 600)",
    )
    put.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    put.set_defaults(func=run_set)

    delete = actions.add_parser("delete", help="delete a budget, its ledger and its reservations")
    add_url(delete)
    delete.add_argument("budget_id", metavar="ID", help="the budget's id")
    delete.set_defaults(func=run_delete)


def request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Send one request to the server and answer its JSON (None for 204). Blocks (one HTTP request).

    Raises `CliError` naming the server's message when it cannot be reached or answers an error.
    """
    url = endpoint(args.url, path)
    try:
        response = httpx.request(method, url, json=body, headers=auth_headers(args), timeout=30.0)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.status_code == 204:
        return None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 300:
        message = data.get("error") if isinstance(data, dict) else None
        raise CliError(f"{method} {url} answered {response.status_code}: {message or response.text[:200]}")
    if not isinstance(data, dict):
        raise CliError(f"{method} {url} answered {response.status_code} without a JSON object")
    return data


def _path(budget_id: str) -> str:
    # quoted whole: an id with a slash or a space reaches the server, which names what is wrong
    return f"/v1/budgets/{quote(budget_id, safe='')}"


def usd(value: Any) -> str:
    """``$1,234.5678``; ``–`` when unknown."""
    return "–" if not isinstance(value, int | float) else f"${value:,.4f}"


def scope_text(budget: dict[str, Any]) -> str:
    """``acme · user u1 · feature chat``: the tenant, then each attribute the budget is scoped to."""
    scope = budget.get("scope") or {}
    parts = [str(scope.get("tenant_id", "?"))]
    for flag, name in SCOPE_FLAGS[1:]:
        if scope.get(name):
            parts.append(f"{flag} {scope[name]}")
    return " · ".join(parts)


def _when(iso: Any) -> str:
    """``2025-11-19T18:30:00Z`` → ``2025-11-19 18:30 UTC``."""
    if not isinstance(iso, str):
        return "–"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def exhaustion_text(budget: dict[str, Any]) -> str:
    """When the budget runs out at its burn rate: a date, ``exhausted``, or ``not this period``."""
    remaining = budget.get("remaining_usd")
    if isinstance(remaining, int | float) and remaining <= 0:
        return "exhausted"
    at = budget.get("projected_exhaustion_at")
    if at is None:
        return "not at this rate" if budget.get("period") == "total" else "not this period"
    return _when(at)


def period_text(budget: dict[str, Any]) -> str:
    """``day (Europe/Paris)``, or ``total``."""
    period = str(budget.get("period", "?"))
    return period if period == "total" else f"{period} ({budget.get('timezone', 'UTC')})"


def table(budgets: list[dict[str, Any]], title: str) -> Table:
    """The budgets as a rich table, a row each."""
    out = Table(title=title)
    out.add_column("id", no_wrap=True)
    out.add_column("scope")
    out.add_column("period", no_wrap=True)
    out.add_column("mode", no_wrap=True)
    for name in ("amount", "committed", "reserved", "remaining", "observed", "burn/h"):
        out.add_column(name, justify="right", no_wrap=True)
    out.add_column("projected exhaustion", no_wrap=True)
    for b in budgets:
        out.add_row(
            str(b.get("id", "")),
            scope_text(b),
            period_text(b),
            "hard" if b.get("hard") else "soft",
            usd(b.get("amount_usd")),
            usd(b.get("committed_usd")),
            usd(b.get("reserved_usd")),
            usd(b.get("remaining_usd")),
            usd(b.get("observed_usd")),
            usd(b.get("burn_usd_per_hour")),
            exhaustion_text(b),
        )
    return out


def details(b: dict[str, Any]) -> Table:
    """One budget as a two-column table of its fields."""
    out = Table(title=f"budget {b.get('id', '')}", show_header=False)
    out.add_column("field", style="bold", no_wrap=True)
    out.add_column("value")
    period_end = b.get("period_end")
    rows = [
        ("scope", scope_text(b)),
        ("period", period_text(b)),
        ("period start", _when(b.get("period_start")) if b.get("period_start") else "–"),
        ("period end", _when(period_end) if period_end else "–"),
        ("mode", "hard (refuses what does not fit)" if b.get("hard") else "soft (records past the amount)"),
        ("amount", usd(b.get("amount_usd"))),
        ("committed", usd(b.get("committed_usd"))),
        ("reserved", usd(b.get("reserved_usd"))),
        ("remaining", usd(b.get("remaining_usd"))),
        ("overrun", usd(b.get("overrun_usd"))),
        ("observed", f"{usd(b.get('observed_usd'))} in {b.get('observed_requests', 0):,} calls"),
        ("burn/h", usd(b.get("burn_usd_per_hour"))),
        ("projected exhaustion", exhaustion_text(b)),
        ("reservation TTL", f"{b.get('reservation_ttl_s', 0):g} s"),
        ("reservations open", f"{b.get('reservations_open', 0):,}"),
        ("reservations expired", f"{b.get('reservations_expired', 0):,}"),
        ("updated", _when(b.get("updated_at"))),
    ]
    for name, value in rows:
        out.add_row(name, value)
    return out


def _console() -> Console:
    # piped output is not squeezed to 80 columns: it is read by people and tools alike
    return Console() if sys.stdout.isatty() else Console(width=200)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def run_list(args: argparse.Namespace) -> int:
    """``GET /v1/budgets`` and print it. Blocks (one HTTP request)."""
    data = request(args, "GET", "/v1/budgets")
    budgets = [b for b in data.get("budgets", []) if isinstance(b, dict)]
    if args.tenant:
        budgets = [b for b in budgets if (b.get("scope") or {}).get("tenant_id") == args.tenant]
        data = {**data, "budgets": budgets}
    if args.json:
        _print_json(data)
        return 0
    console = _console()
    if not budgets:
        console.print("no budgets" + (f" for tenant {args.tenant!r}" if args.tenant else ""))
        return 0
    console.print(table(budgets, f"{len(budgets)} budget{'s' if len(budgets) != 1 else ''}"))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """``GET /v1/budgets/{id}`` and print it. Blocks (one HTTP request)."""
    data = request(args, "GET", _path(args.budget_id))
    if args.json:
        _print_json(data)
    else:
        _console().print(details(data))
    return 0


def set_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PUT /v1/budgets/{id}`` body of ``budgets set``'s flags."""
    scope = {name: getattr(args, flag) for flag, name in SCOPE_FLAGS if getattr(args, flag)}
    body: dict[str, Any] = {
        "amount_usd": args.amount,
        "period": args.period,
        "timezone": args.timezone,
        "hard": not args.soft,
        "scope": scope,
    }
    if args.ttl is not None:
        body["reservation_ttl_s"] = args.ttl
    return body


def run_set(args: argparse.Namespace) -> int:
    """``PUT /v1/budgets/{id}`` and print the budget the server answers. Blocks (one HTTP request)."""
    data = request(args, "PUT", _path(args.budget_id), set_body(args))
    if args.json:
        _print_json(data)
    else:
        _console().print(table([data], f"budget {data.get('id', args.budget_id)} set"))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """``DELETE /v1/budgets/{id}``. Blocks (one HTTP request)."""
    request(args, "DELETE", _path(args.budget_id))
    print(f"deleted budget {args.budget_id!r}", file=sys.stderr)
    return 0
