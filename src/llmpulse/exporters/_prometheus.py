"""`PrometheusExporter`: LLM calls as Prometheus counters and histograms (prometheus-client).

Every exported ``llm.call`` item updates, labelled ``provider, model, route, status``:

- ``llm_requests_total``, ``llm_errors_total`` (calls whose status is ``error``);
- ``llm_tokens_total{type}`` with ``type`` one of ``input``, ``output``, ``cached_input``,
  ``cache_write``, ``reasoning`` (OpenTelemetry GenAI convention: ``input`` counts the whole prompt,
  cached reads and writes included; ``output`` includes reasoning);
- ``llm_cost_usd_total`` for calls whose cost is known, ``llm_cost_unknown_total`` for the others;
- ``llm_latency_seconds`` and ``llm_ttft_seconds`` histograms.

Other kinds of items are ignored (delivered, not counted). The number of label sets is capped
(`max_label_sets`): calls past the cap are counted under ``provider, model, route = "__other__"``
and in ``llm_label_overflow_total``, so one runaway label cannot exhaust Prometheus's memory.

`prometheus_client` is imported in the constructor only, so ``import llmpulse.exporters`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmpulse.sdk._exporter import ExportResult

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["DEFAULT_LATENCY_BUCKETS", "DEFAULT_TTFT_BUCKETS", "OVERFLOW_LABEL", "PrometheusExporter"]

#: Buckets (seconds) of ``llm_latency_seconds``: whole calls, from a cached hit to a long generation.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
#: Buckets (seconds) of ``llm_ttft_seconds``: time to the first streamed token.
DEFAULT_TTFT_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
#: The value of ``provider``, ``model`` and ``route`` for calls beyond `max_label_sets`.
OVERFLOW_LABEL = "__other__"

_LABELS = ("provider", "model", "route", "status")
_TOKEN_FIELDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def _label(value: object) -> str:
    return "" if value is None else str(value)


def _number(value: object) -> float | None:
    """A finite, non-negative number from an item's field, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if number != number or number < 0 or number == float("inf"):
        return None
    return number


class _Group:
    """What one batch adds to one label set: sums for the counters, values for the histograms."""

    __slots__ = ("cost", "cost_known", "cost_unknown", "errors", "latencies", "requests", "tokens", "ttfts")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.tokens = [0.0] * len(_TOKEN_FIELDS)
        self.cost = 0.0
        self.cost_known = False
        self.cost_unknown = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []


class PrometheusExporter:
    """Keeps Prometheus metrics of the LLM calls it exports, in `registry` or in its own.

    `registry=None` creates a private `prometheus_client.CollectorRegistry` (see `.registry`); pass
    yours (for example ``prometheus_client.REGISTRY``) to serve the metrics from your own endpoint.
    `port` given: serves ``/metrics`` (any path, in fact) on ``addr:port`` from a daemon thread
    (``port=0`` picks a free port, read it from `.port`); the server stops on `shutdown`. `namespace`
    prefixes every metric name (``myapp_llm_requests_total``). Raises `ImportError` without
    prometheus-client, `OSError` when the port cannot be bound, and `ValueError` when the registry
    already holds these metrics or `max_label_sets` is below 1. `export` does not block (in-memory
    updates only).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        port: int | None = None,
        addr: str = "127.0.0.1",
        namespace: str = "",
        *,
        latency_buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        ttft_buckets: Sequence[float] = DEFAULT_TTFT_BUCKETS,
        max_label_sets: int = 1000,
        name: str = "prometheus",
    ) -> None:
        import prometheus_client as prom

        if max_label_sets < 1:
            raise ValueError(f"max_label_sets must be at least 1, got {max_label_sets}")
        self.name = name
        self.registry: CollectorRegistry = registry if registry is not None else prom.CollectorRegistry()
        self.max_label_sets = max_label_sets
        self._label_sets: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

        def counter(metric: str, doc: str, labels: Sequence[str] = _LABELS) -> Counter:
            return prom.Counter(metric, doc, labels, namespace=namespace, registry=self.registry)

        self._requests = counter("llm_requests_total", "LLM calls exported.")
        self._errors = counter("llm_errors_total", "LLM calls whose status is error.")
        self._tokens = counter(
            "llm_tokens_total",
            "Tokens of LLM calls by type (input includes cached_input and cache_write; "
            "output includes reasoning).",
            (*_LABELS, "type"),
        )
        self._cost = counter("llm_cost_usd_total", "Cost of LLM calls whose cost is known, in USD.")
        self._cost_unknown = counter("llm_cost_unknown_total", "LLM calls whose cost is unknown.")
        self._overflow = counter(
            "llm_label_overflow_total",
            f"LLM calls counted under {OVERFLOW_LABEL} labels because max_label_sets was reached.",
            (),
        )
        self._latency: Histogram = prom.Histogram(
            "llm_latency_seconds",
            "Latency of LLM calls, in seconds.",
            _LABELS,
            namespace=namespace,
            registry=self.registry,
            buckets=tuple(latency_buckets),
        )
        self._ttft: Histogram = prom.Histogram(
            "llm_ttft_seconds",
            "Time to the first token of streamed LLM calls, in seconds.",
            _LABELS,
            namespace=namespace,
            registry=self.registry,
            buckets=tuple(ttft_buckets),
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        if port is not None:
            # prometheus-client >= 0.20 returns the server and its thread, so `shutdown` can stop it.
            self._server, self._thread = prom.start_http_server(port, addr, self.registry)
            self.port = int(self._server.server_address[1])

    def _labels(self, item: dict[str, Any]) -> tuple[str, str, str, str]:
        key = (_label(item.get("provider")), _label(item.get("model")), _label(item.get("route")))
        if key not in self._label_sets:
            with self._lock:
                if len(self._label_sets) >= self.max_label_sets and key not in self._label_sets:
                    self._overflow.inc()
                    key = (OVERFLOW_LABEL, OVERFLOW_LABEL, OVERFLOW_LABEL)
                else:
                    self._label_sets.add(key)
        return (*key, _label(item.get("status")))

    def _add(self, item: dict[str, Any], groups: dict[tuple[str, ...], _Group]) -> None:
        """Add one call to its label set's group of this batch."""
        labels = self._labels(item)
        group = groups.get(labels)
        if group is None:
            group = groups[labels] = _Group()
        group.requests += 1
        if item.get("status") == "error":
            group.errors += 1
        tokens = group.tokens
        for i, (_, field) in enumerate(_TOKEN_FIELDS):
            tokens[i] += _number(item.get(field)) or 0
        cost = _number(item.get("cost"))
        if cost is None:
            group.cost_unknown += 1
        else:
            group.cost += cost
            group.cost_known = True
        latency_ms = _number(item.get("latency_ms"))
        if latency_ms is not None:
            group.latencies.append(latency_ms / 1000.0)
        ttft_ms = _number(item.get("ttft_ms"))
        if ttft_ms is not None:
            group.ttfts.append(ttft_ms / 1000.0)

    def _apply(self, labels: tuple[str, ...], group: _Group) -> None:
        """One update per counter for a label set's calls; each latency observed on its own."""
        self._requests.labels(*labels).inc(group.requests)
        if group.errors:
            self._errors.labels(*labels).inc(group.errors)
        for (kind, _), value in zip(_TOKEN_FIELDS, group.tokens, strict=True):
            self._tokens.labels(*labels, kind).inc(value)
        if group.cost_unknown:
            self._cost_unknown.labels(*labels).inc(group.cost_unknown)
        if group.cost_known:
            self._cost.labels(*labels).inc(group.cost)
        if group.latencies:
            observe = self._latency.labels(*labels).observe
            for value in group.latencies:
                observe(value)
        if group.ttfts:
            observe = self._ttft.labels(*labels).observe
            for value in group.ttfts:
                observe(value)

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Update the metrics from the batch's ``llm.call`` items; does not block.

        Counters are summed per label set over the batch and updated once each (a scrape sees a
        batch whole or not at all); histograms observe every call. Other kinds are skipped and
        count as delivered. An item that cannot be recorded is reported as dropped (reason
        ``"invalid_item"``) without costing the rest of the batch.
        """
        failed = 0
        errors: list[str] = []
        groups: dict[tuple[str, ...], _Group] = {}
        for item in items:
            if item.get("type") != "llm.call":
                continue
            try:
                self._add(item, groups)
            except Exception as exc:  # one malformed item must not cost the rest of the batch
                failed += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}")
        for labels, group in groups.items():
            self._apply(labels, group)
        return ExportResult({"invalid_item": failed}, tuple(errors)) if failed else None

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered (Prometheus pulls); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Stop the HTTP server, if this exporter started one; blocks up to `timeout` seconds.

        The metrics stay in the registry.
        """
        server, self._server = self._server, None
        if server is None:
            return
        done = threading.Thread(target=server.shutdown, daemon=True)
        done.start()
        done.join(timeout)
        server.server_close()
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0))

    def __repr__(self) -> str:
        where = f" on port {self.port}" if self.port is not None else ""
        return f"<exporter {self.name!r} (prometheus{where})>"
