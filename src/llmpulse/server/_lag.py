"""How far ``llmpulse process`` workers are behind, for ingest's admission (``--no-processor``).

With the processor in the server, admission asks the `ProcessorRunner` how many events it has not read
(`ProcessorRunner.lag_events`). Without it, the events are aggregated by workers of a consumer group
that commit each unit's offsets to the store under ``group:<group>/<p>`` (`llmpulse.pipeline._workers`);
their lag is the sum over the event topic-partitions of end offset minus committed offset (0 for a
partition no worker has committed yet: the workers will read it from the beginning).

`GroupLag.lag_events` does not block, since ingest asks on every batch: the committed offsets come
from a snapshot that a background thread reads from the store every `REFRESH_S` (one small query),
and the end offsets from `KafkaEventLog.events_after` (itself a snapshot refreshed every second plus
this node's acknowledged appends since). While either snapshot is missing or stale (the store or the
broker does not answer) the lag is unknown (None) and admission lets batches through, as with a log
that cannot say.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from llmpulse.pipeline._runner import GROUP_CONSUMER_PREFIX
from llmpulse.store import Store

_log = logging.getLogger("llmpulse.server")

#: Seconds between reads of the workers' committed offsets.
REFRESH_S: Final = 1.0
#: Committed offsets older than this are not used (the lag is unknown).
STALE_S: Final = 5.0


class LagLog(Protocol):
    """What `GroupLag` needs of the event log (`KafkaEventLog` has it)."""

    def partitions(self) -> list[int]:
        """Every protocol partition."""
        ...

    def events_after(self, partition: int, offset: int) -> int | None:
        """Events of `partition` at or after `offset`; None while unknown. Does not block."""
        ...


def group_offsets(store: Store, group: str) -> dict[int, int]:
    """The offsets (protocol partition → next offset) committed by the units of consumer group `group`.
    Blocks (one query)."""
    offsets: dict[int, int] = {}
    for unit in store.committed_offsets(f"{GROUP_CONSUMER_PREFIX}{group}/").values():
        offsets.update(unit)  # each unit holds its own partitions: no two units share one
    return offsets


class GroupLag:
    """The lag of consumer group `group`'s workers over `log` (see the module docstring).

    `start` reads the offsets once (blocks briefly) and starts the refresher thread; `stop` ends it.
    `read_offsets` is how the committed offsets are read (`group_offsets` on `store` by default).
    """

    def __init__(
        self,
        log: LagLog,
        store: Store,
        group: str,
        *,
        read_offsets: Callable[[], Mapping[int, int]] | None = None,
    ) -> None:
        self._log = log
        self._group = group
        self._read = read_offsets or (lambda: group_offsets(store, group))
        self._offsets: Mapping[int, int] | None = None
        self._read_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def group(self) -> str:
        """The consumer group whose lag this is."""
        return self._group

    def refresh(self) -> None:
        """Read the committed offsets now. Blocks (one query); a failure is logged and kept in
        `last_error`, and the previous offsets stay until they are stale."""
        started = time.monotonic()
        try:
            offsets = dict(self._read())
        except Exception as exc:  # the store is down: the lag is unknown until it answers
            self.last_error = f"{type(exc).__name__}: {exc}"
            _log.debug("could not read the offsets of consumer group %s: %s", self._group, self.last_error)
            return
        self._offsets, self._read_at, self.last_error = offsets, started, None

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def start(self) -> None:
        """Read the offsets once and start refreshing them every `REFRESH_S`. Blocks briefly."""
        if self._thread is not None:
            raise RuntimeError("the group lag is already started")
        self.refresh()
        self.lag_events()  # starts the log's end-offset refresher
        self._thread = threading.Thread(target=self._run, name="llmpulse-group-lag", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop refreshing. Blocks up to `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def lag_events(self) -> int | None:
        """Events in the log that the group's workers have not committed; None while unknown. Does
        not block."""
        offsets = self._offsets
        if offsets is None or time.monotonic() - self._read_at > STALE_S:
            return None
        total = 0
        for partition in self._log.partitions():
            lag = self._log.events_after(partition, offsets.get(partition, 0))
            if lag is None:
                return None
            total += lag
        return total
