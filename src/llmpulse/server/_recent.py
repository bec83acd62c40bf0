"""Recent calls for the dashboard, read from the tail of the event log.

The store keeps one-minute windows, not calls, so the recent calls come from where every acknowledged
event already is: the event log. `recent_calls` reads the log backwards from its end, a chunk of records
at a time, and stops once it has `limit` calls of the scope or has looked at `max_scan_events` events
(whole records: it may look at one record's worth more). A request is joined with its response when the
response is among the events read; otherwise the call is ``pending`` (or ``timeout`` once
``orphan_timeout_s`` has passed since its timestamp, as the processor would count it). A response whose
request is not among the events read is not shown (it names no tenant). Duplicates (a resent request or
response) are shown once.

The Kafka log (scale-out mode) has no single order across its topic-partitions, so
`recent_calls_kafka` reads the newest ``max_scan_events / (3 × partitions)`` records of every
partition of ``llm.requests``, ``llm.responses`` and ``llm.calls`` (`KafkaEventLog.newest_events`: an
assigned consumer that seeks to end − N, commits nothing and gives up after a timeout), then keeps the
`limit` calls of the scope with the newest timestamps. The differences from the embedded path: the
events looked at are the newest of each partition rather than the newest of the whole log (a busy
partition's older calls are not seen while a quiet partition's are), a response is found only among
the newest records of its own partition (where its request is too, keyed by ``request_id``), and
among the calls read the newest by timestamp win instead of the newest appended.

Why the log and not a ring buffer in the ingest path: nothing is added to the hot path, nothing is lost
on restart, and the embedded log keeps its newest records in memory, so reading the tail costs no
decoding. The bound: a quiet tenant whose last call is older than the newest `max_scan_events` events of
all tenants shows no recent calls (its windows still count it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.pipeline import EventLog
from llmpulse.pricing import Pricer, PricingError
from llmpulse.store import rfc3339

#: Most events one `recent_calls` reads from the log.
DEFAULT_MAX_SCAN_EVENTS: Final = 20_000
#: Records read per step backwards.
_CHUNK_RECORDS: Final = 64
#: Longest error text shown for a call.
_MAX_ERROR_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls to show: tenant (None: all), route, model, and timestamps in ``[start, end)``."""

    tenant_id: str | None
    route: str | None
    model: str | None
    start: datetime
    end: datetime

    def matches(self, tenant_id: str, route: str, model: str, ts: datetime) -> bool:
        """True when a call with these names and timestamp is in the filter."""
        return (
            (self.tenant_id is None or tenant_id == self.tenant_id)
            and (self.route is None or route == self.route)
            and (self.model is None or model == self.model)
            and self.start <= ts < self.end
        )


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        text = str(error.get("message") or error.get("type") or error.get("code") or error)
    else:
        text = str(error)
    return text[:_MAX_ERROR_CHARS]


def _price(pricer: Pricer, model: str, input_tokens: int, output_tokens: int, **kw: Any) -> float | None:
    try:
        return pricer.cost(model, input_tokens=input_tokens, output_tokens=output_tokens, **kw)
    except PricingError:
        return None


def _call_row(call: LLMCall, pricer: Pricer) -> dict[str, Any]:
    cost = call.cost
    if cost is None:
        cost = _price(
            pricer,
            call.model,
            call.input_tokens,
            call.output_tokens,
            provider=call.provider,
            cached_input_tokens=call.cached_input_tokens,
            cache_write_tokens=call.cache_write_tokens,
            reasoning_tokens=call.reasoning_tokens,
            at=call.timestamp,
        )
    return {
        "request_id": call.request_id,
        "tenant_id": call.tenant_id,
        "route": call.route,
        "model": call.model,
        "timestamp": rfc3339(call.timestamp),
        "status": "error" if call.is_error else (call.status or "ok"),
        "latency_ms": call.latency_ms,
        "ttft_ms": call.ttft_ms,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": cost,
        "error": _error_text(call.error),
    }


def _pair_row(
    req: LLMRequest, resp: LLMResponse | None, pricer: Pricer, *, now: float, timeout_s: float
) -> dict[str, Any]:
    if resp is None:
        status = "timeout" if req.timestamp.timestamp() + timeout_s <= now else "pending"
    else:
        status = "error" if resp.error is not None else "ok"
    output = resp.completion_tokens if resp is not None else 0
    return {
        "request_id": req.request_id,
        "tenant_id": req.tenant_id,
        "route": req.route,
        "model": req.model,
        "timestamp": rfc3339(req.timestamp),
        "status": status,
        "latency_ms": resp.latency_ms if resp is not None else None,
        "ttft_ms": resp.ttft_ms if resp is not None else None,
        "input_tokens": req.prompt_tokens,
        "output_tokens": output,
        "cost_usd": _price(pricer, req.model, req.prompt_tokens, output, at=req.timestamp),
        "error": _error_text(resp.error) if resp is not None else None,
    }


@runtime_checkable
class TailLog(Protocol):
    """A log that reads the newest events of each of its partitions (`KafkaEventLog`)."""

    def partitions(self) -> list[int]:
        """Every partition of the log."""
        ...

    def newest_events(self, per_partition: int) -> tuple[list[Event], int]:
        """At least the newest `per_partition` events of every partition and the number read. Blocks."""
        ...


class _Scan:
    """The state of one backwards scan: what was kept, and the responses seen so far."""

    def __init__(self, flt: CallFilter, limit: int) -> None:
        self.flt = flt
        self.limit = limit
        self.calls: list[LLMCall | LLMRequest] = []
        self.responses: dict[str, LLMResponse] = {}
        self.seen: set[tuple[str, str]] = set()
        self.scanned = 0

    def take(self, events: Sequence[Event]) -> None:
        """Look at a record's events, newest first."""
        for event in reversed(events):
            self.scanned += 1
            if isinstance(event, LLMResponse):
                if ("response", event.request_id) not in self.seen:
                    self.seen.add(("response", event.request_id))
                    self.responses[event.request_id] = event
                continue
            if event.request_id is not None:
                key = ("call" if isinstance(event, LLMCall) else "request", event.request_id)
                if key in self.seen:
                    continue
                self.seen.add(key)
            if len(self.calls) >= self.limit:
                continue
            if self.flt.matches(event.tenant_id, event.route, event.model, event.timestamp):
                self.calls.append(event)


def recent_calls(
    log: EventLog,
    flt: CallFilter,
    *,
    limit: int,
    pricer: Pricer,
    now: float,
    timeout_s: float,
    max_scan_events: int = DEFAULT_MAX_SCAN_EVENTS,
) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` calls of the filter in the log (newest timestamp first), and how many
    events were read. Blocks (reads the log).

    `now` (epoch seconds) and `timeout_s` decide when a request without a response is a ``timeout``
    rather than ``pending``. Each row: ``request_id, tenant_id, route, model, timestamp, status``
    (``ok | error | cancelled | pending | timeout``), ``latency_ms, ttft_ms, input_tokens,
    output_tokens, cost_usd`` (the event's own cost, else the server's estimate, None when unknown)
    and ``error`` (a short text or None).
    """
    scan = _Scan(flt, limit)
    for partition in log.partitions():
        end = log.end_offset(partition)
        while end > 0 and scan.scanned < max_scan_events and len(scan.calls) < limit:
            start = max(0, end - _CHUNK_RECORDS)
            # a pruned range answers with newer records: keep only those before `end`
            records = [r for r in log.read(partition, start, end - start) if r.offset < end]
            if not records:
                break
            for record in reversed(records):
                if scan.scanned >= max_scan_events or len(scan.calls) >= limit:
                    break
                scan.take(record.events)
            end = start
    return _rows(scan, pricer, now=now, timeout_s=timeout_s), scan.scanned


def _rows(scan: _Scan, pricer: Pricer, *, now: float, timeout_s: float) -> list[dict[str, Any]]:
    scan.calls.sort(key=lambda e: e.timestamp, reverse=True)
    rows = []
    for event in scan.calls:
        if isinstance(event, LLMCall):
            rows.append(_call_row(event, pricer))
        else:
            resp = scan.responses.get(event.request_id)
            rows.append(_pair_row(event, resp, pricer, now=now, timeout_s=timeout_s))
    return rows


def recent_calls_kafka(
    log: TailLog,
    flt: CallFilter,
    *,
    limit: int,
    pricer: Pricer,
    now: float,
    timeout_s: float,
    max_scan_events: int = DEFAULT_MAX_SCAN_EVENTS,
) -> tuple[list[dict[str, Any]], int]:
    """`recent_calls` over a Kafka log: the newest `limit` calls of the filter among the newest
    records of every partition (at most `max_scan_events` in all), and how many events were read.
    Blocks (reads the broker, bounded by the log's timeout). Rows as `recent_calls`."""
    per_partition = max(1, max_scan_events // max(1, len(log.partitions())))
    events, _ = log.newest_events(per_partition)
    responses = [e for e in events if isinstance(e, LLMResponse)]
    calls = sorted((e for e in events if not isinstance(e, LLMResponse)), key=lambda e: e.timestamp)
    scan = _Scan(flt, limit)
    scan.take([*responses, *calls])  # newest last: `take` looks at the newest first
    return _rows(scan, pricer, now=now, timeout_s=timeout_s), scan.scanned
