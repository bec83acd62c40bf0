"""The `EventLog` interface: an append-only, durable, offset-addressed log of validated events.

The embedded implementation is `SQLiteEventLog` (`_sqlite_log.py`); a Kafka one satisfies the same
interface in scaled-out mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from llmpulse.events import Event


class LogRecord(NamedTuple):
    """One appended batch: its partition, its offset, and the events it holds (in order)."""

    partition: int
    offset: int
    events: list[Event]


class EventLog(Protocol):
    """An append-only durable log.

    `append` returns only once the events are durable (an acknowledgement may follow); it raises
    `LogBackpressure` when the log cannot keep up and `LogClosed` after `close`.
    """

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        """Append events durably. Awaits the write; never blocks the event loop.

        `payload`, when given, is an encoding of exactly `events` that `decode_log` reads (a JSON
        array body as it came); a log may store it instead of encoding the events again.
        """
        ...

    def partitions(self) -> list[int]:
        """The partitions this log has (one for SQLite)."""
        ...

    def read(self, partition: int, offset: int, max_records: int) -> list[LogRecord]:
        """Records of `partition` at offsets ≥ `offset`, oldest first, at most `max_records`. Blocks."""
        ...

    def end_offset(self, partition: int) -> int:
        """The offset the next appended record of `partition` will get. Blocks."""
        ...

    def close(self) -> None:
        """Stop accepting appends, finish those in flight, release resources. Blocks."""
        ...


def end_offsets(log: EventLog, partitions: Sequence[int] | None = None) -> dict[int, int]:
    """The end offset of each of `partitions` (every partition by default): in one call when the log
    can (the Kafka log reads every partition's end at once), else one `end_offset` call each. Blocks."""
    wanted = log.partitions() if partitions is None else list(partitions)
    batch = getattr(log, "end_offsets", None)
    if batch is not None:
        found: dict[int, int] = batch(wanted)
        return found
    return {p: log.end_offset(p) for p in wanted}
