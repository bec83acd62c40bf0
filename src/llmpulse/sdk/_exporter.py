"""The `Exporter` protocol every destination implements, and what an export may answer.

An exporter receives batches of JSON-ready dicts (each item's `to_dict` form, cost already filled in)
from its `ExportPipeline` worker thread, never from the application's thread. It only says what
happened to a batch; batching, retries, backoff and drop accounting live in the pipeline.

Errors (raised by `Exporter.export`, never into the application):

- `ExportError` is the base of this module's errors.
- `RetryableError(message, retry_after_s=None)`: a transient failure (a timeout, a refused
  connection, HTTP 408/429/5xx); the pipeline retries the whole batch with backoff, waiting at least
  `retry_after_s` when the destination said so.
- Any other exception is a permanent failure of that batch: its items are dropped (reason
  ``"permanent_error"``) without a retry.

An exporter that writes JSON may also define ``export_encoded(batch: EncodedBatch)``: the pipeline
then hands it the batch encoded once from the items themselves (JSON lines, the same bytes as
encoding each item's dict form) instead of building dicts, which costs about half as much CPU. It
answers and raises exactly as `export`.

A partial success is not an exception: `export` returns an `ExportResult` naming how many items of
the batch were not delivered and why (for example ``{"rejected_by_server": 2}``); returning ``None``
means every item was delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmpulse.events import TelemetryItem

__all__ = [
    "EncodedBatch",
    "ExportError",
    "ExportResult",
    "Exporter",
    "RetryableError",
    "as_exporter",
]

#: A plain exporter function, telemetry-bootstrap style: `(kind, item)` where `kind` is the item's `type`.
ExportCallable = Callable[[str, dict[str, Any]], object]


class ExportError(Exception):
    """Base of the errors an exporter raises to describe a failed batch."""


class RetryableError(ExportError):
    """A transient failure: the pipeline retries the batch, after `retry_after_s` when it is given."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What became of a batch that was delivered only in part.

    `dropped` maps a reason (``"rejected_by_server"``, ``"unsupported_kind"``, ...) to the number of
    the batch's items not delivered for it; every other item counts as exported. `errors` holds a few
    human-readable reasons for the log and `stats()["last_error"]`.
    """

    dropped: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    @property
    def dropped_count(self) -> int:
        """How many items of the batch were not delivered."""
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One batch, encoded once by the pipeline, for exporters that define `export_encoded`.

    `items` are the batch's items as exported (costs and call ids filled in, on copies: never the
    application's objects); `lines` their JSON encodings, one line each, in order, each ending in
    ``\\n`` (byte-identical to encoding each item's `to_dict` form). JSON as msgspec writes it never
    holds a raw newline, so the lines split on ``\\n`` safely. Immutable; does not block.
    """

    items: Sequence[TelemetryItem]
    lines: bytes

    def __len__(self) -> int:
        return len(self.items)

    def json_array(self) -> bytes:
        """The batch as one JSON array (the lines joined by commas), without re-encoding."""
        if not self.lines:
            return b"[]"
        return b"[" + self.lines[:-1].replace(b"\n", b",") + b"]"

    def split_lines(self) -> list[bytes]:
        """Each item's line, newline included, in order."""
        return self.lines.splitlines(keepends=True)

    def dicts(self) -> list[dict[str, Any]]:
        """The items' dict forms (what `export` would get); costs a few µs per item."""
        from llmpulse.events import items_to_dicts

        return items_to_dicts(self.items)


@runtime_checkable
class Exporter(Protocol):
    """A destination for batches of telemetry items (console, file, the llmpulse server, ...).

    Every method is called from a background thread (the pipeline's worker, or the thread calling
    `flush`/`shutdown`), never concurrently with another `export` of the same exporter.
    """

    name: str

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Deliver one batch; may block (I/O). Raise `RetryableError` or any exception as above."""
        ...

    def force_flush(self, timeout: float) -> bool:
        """Push out anything the exporter buffers itself; True when done within `timeout` seconds."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Release connections and files, within `timeout` seconds. Called once, after the last export."""
        ...


class _CallableExporter:
    """Adapts a `(kind, item)` function to the `Exporter` protocol, one call per item."""

    def __init__(self, fn: ExportCallable, name: str | None = None) -> None:
        self._fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        failed = 0
        errors: list[str] = []
        for item in items:
            try:
                self._fn(str(item.get("type", "")), item)
            except Exception as exc:  # one failing item must not cost the rest of the batch
                failed += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}")
        if failed:
            return ExportResult({"permanent_error": failed}, tuple(errors))
        return None

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        return None

    def __repr__(self) -> str:
        return f"<exporter {self.name!r} (callable)>"


class _CompletedExporter:
    """Supplies no-op `force_flush`/`shutdown` (and a `name`) to an object that only has `export`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name: str = getattr(inner, "name", None) or type(inner).__name__

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        result = self._inner.export(items)
        return result if isinstance(result, ExportResult) else None

    def force_flush(self, timeout: float) -> bool:
        flush = getattr(self._inner, "force_flush", None)
        return bool(flush(timeout)) if flush is not None else True

    def shutdown(self, timeout: float) -> None:
        shutdown = getattr(self._inner, "shutdown", None)
        if shutdown is not None:
            shutdown(timeout)


def as_exporter(obj: Exporter | ExportCallable | Any) -> Exporter:
    """Return `obj` as an `Exporter`; does not block.

    An object with `export`, `force_flush`, `shutdown` and `name` is returned unchanged; one with only
    `export` gets no-op defaults for the rest; a plain callable `(kind, item)` is called once per item,
    where `kind` is the item's `type` (``"llm.call"``, ``"span"``, ...) and `item` its dict form (a
    call that raises drops that item, reason ``"permanent_error"``). Raises `TypeError` otherwise.
    """
    if callable(getattr(obj, "export", None)):
        if isinstance(obj, Exporter) and isinstance(getattr(obj, "name", None), str):
            return obj
        return _CompletedExporter(obj)
    if callable(obj):
        return _CallableExporter(obj)
    raise TypeError(
        f"an exporter must have an `export(items)` method or be a callable `(kind, item)`, got {obj!r}"
    )
