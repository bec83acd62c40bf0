"""Recent calls for the dashboard, read from the store's call records (the same records ``/v1/calls``
pages through), in the embedded and in the Kafka mode alike.

`recent_calls` asks `llmpulse.store.calls_page` for the newest `limit` records of a scope (one tenant,
or every tenant: each tenant's newest through its (tenant_id, started_at) index, merged), whose
``started_at`` lies in ``[start, end)`` exactly (not rounded to the minute: the dashboard shows the
calls of the range it names), and shapes them as the dashboard's rows.

What the records allow, compared with the event-log tail this endpoint used to read: a call is shown
once the processor has counted it (within a checkpoint interval of its arrival): a pair once joined,
a call event at once, a request without a response once ``orphan_timeout_s`` has passed, as a
``timeout`` (and as the joined call if its response comes later). A request still waiting for its
response is not shown (there is no ``pending`` status), and a response whose request never came is
not either. Nothing bounds how far back a quiet tenant's last calls are found (the log tail read at
most 20 000 events of all tenants), and the answer is the same with a SQLite or a Kafka event log.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from llmpulse.store import CallFilter, Store, calls_page, rfc3339

#: Longest error text shown for a call.
MAX_ERROR_CHARS: Final = 200


def _error_text(record: Mapping[str, Any]) -> str | None:
    """The short error of a record: its message, else its type (a timeout's type is its status)."""
    text = record["error_message"]
    if text is None and record["status"] != "timeout":
        text = record["error_type"]
    return None if text is None else str(text)[:MAX_ERROR_CHARS]


def recent_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A call record (as `calls_page` returns it) as a recent-calls row: ``request_id, tenant_id,
    route, model, timestamp`` (the call's start, RFC 3339), ``status`` (``ok | error | timeout |
    cancelled``), ``latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd`` (the call's own
    cost, else llmpulse's; None when unknown) and ``error`` (a short text or None). Pure."""
    return {
        "request_id": record["request_id"],
        "tenant_id": record["tenant_id"],
        "route": record["route"],
        "model": record["model"],
        "timestamp": rfc3339(datetime.fromtimestamp(record["started_at"], UTC)),
        "status": record["status"],
        "latency_ms": record["latency_ms"],
        "ttft_ms": record["ttft_ms"],
        "input_tokens": record["input_tokens"],
        "output_tokens": record["output_tokens"],
        "cost_usd": record["cost_usd"],
        "error": _error_text(record),
    }


def recent_calls(
    store: Store,
    *,
    tenant_id: str | None,
    route: str | None,
    model: str | None,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """The newest `limit` calls of the tenant (None: every tenant), route and model whose start is in
    ``[start, end)``, newest first (ties by request id, then tenant), as `recent_row` rows. Blocks.

    Raises:
        ValueError: a naive bound, or `limit` < 1.
        StoreError: the store could not be read.
    """
    flt = CallFilter(tenant_id, start=start, end=end, route=route, model=model)
    records, _ = calls_page(store, flt, order="time", limit=limit)
    return [recent_row(r) for r in records]
