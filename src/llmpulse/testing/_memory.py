"""`InMemoryExporter`: a faithful, thread-safe sink that keeps every exported item for tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["InMemoryExporter"]


class InMemoryExporter:
    """Keeps the dict form of every exported item in `items`, in export order.

    Thread-safe; never fails; `export` does not block beyond a short lock. `batches` records the size
    of each batch received and `is_shutdown` whether `shutdown` was called.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.items: list[dict[str, Any]] = []
        self.batches: list[int] = []
        self.is_shutdown = False
        self._lock = threading.Lock()

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        """Append the batch to `items`."""
        with self._lock:
            self.items.extend(items)
            self.batches.append(len(items))

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered; True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Mark the exporter shut down (it keeps its items); does not block."""
        self.is_shutdown = True

    def clear(self) -> None:
        """Forget the items and batches received so far."""
        with self._lock:
            self.items.clear()
            self.batches.clear()
