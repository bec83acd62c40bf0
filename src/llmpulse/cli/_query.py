"""``llmpulse query``: print a tenant's recent windows as a table (or the raw JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from llmpulse.cli._common import Subcommands, add_url, auth_headers, endpoint, positive_int
from llmpulse.cli._http import CliError


def add_parser(sub: Subcommands) -> None:
    """Register ``query``."""
    parser = sub.add_parser(
        "query", help="print a tenant's recent windows", description="Print a tenant's recent windows."
    )
    add_url(parser)
    parser.add_argument("--tenant", required=True, help="the tenant id")
    parser.add_argument("--route", help="only this route")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--from", dest="start", metavar="RFC3339", help="windows starting at or after this")
    parser.add_argument("--to", dest="end", metavar="RFC3339", help="windows starting before this")
    parser.add_argument("--limit", type=positive_int, default=20, help="most windows (default 20)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    parser.set_defaults(func=run)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _window(start: str) -> str:
    """``2026-11-22T06:31:00Z`` → ``2026-11-22 06:31``."""
    return start.replace("T", " ")[:16] if len(start) >= 16 else start


def _cost(value: Any) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def table(rows: list[dict[str, Any]], title: str) -> Table:
    """The windows as a rich table: start, route, model, requests, errors, latency, tokens, cost, final."""
    out = Table(title=title)
    out.add_column("window (UTC)", no_wrap=True)
    out.add_column("route", no_wrap=True)
    out.add_column("model", no_wrap=True)
    for name in ("requests", "errors", "avg ms", "p95 ms", "tokens", "cost"):
        out.add_column(name, justify="right", no_wrap=True)
    out.add_column("final")
    for row in rows:
        tokens = row.get("total_tokens")
        if tokens is None:
            tokens = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
        out.add_row(
            _window(str(row.get("window_start", ""))),
            str(row.get("route", "")),
            str(row.get("model", "")),
            _num(row.get("requests")),
            _num(row.get("errors")),
            _num(row.get("avg_latency_ms"), 0),
            _num(row.get("p95_latency_ms"), 0),
            _num(tokens),
            _cost(row.get("estimated_cost_usd")),
            "yes" if row.get("final") else "no",
        )
    return out


def run(args: argparse.Namespace) -> int:
    """Fetch ``/v1/metrics`` and print it. Blocks (one HTTP request)."""
    params = {"tenant_id": args.tenant, "limit": str(args.limit)}
    for key, value in (("route", args.route), ("model", args.model), ("from", args.start), ("to", args.end)):
        if value:
            params[key] = value
    url = endpoint(args.url, "/v1/metrics")
    try:
        response = httpx.get(url, params=params, headers=auth_headers(args), timeout=30.0)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200 or not isinstance(data, dict):
        message = data.get("error") if isinstance(data, dict) else response.text[:200]
        raise CliError(f"{url} answered {response.status_code}: {message}")
    # piped output is not squeezed to 80 columns: it is read by people and tools alike
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    rows = [r for r in data.get("metrics", []) if isinstance(r, dict)]
    if not rows:
        console.print(f"no windows for tenant {args.tenant!r}")
        return 0
    console.print(table(rows, f"{args.tenant}: {len(rows)} most recent windows"))
    return 0
