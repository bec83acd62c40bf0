"""The store: SQLAlchemy Core tables and migrations, window upserts, processor checkpoints, queries.

Errors: `StoreError` is the base of this package's errors.
"""

from __future__ import annotations

from llmpulse.store._histogram import Histogram, bucket_of, merged, quantile, value_of
from llmpulse.store._model import (
    WINDOW_SECONDS,
    Checkpoint,
    PendingEntry,
    PendingKind,
    ProcessorState,
    WindowDelta,
    WindowKey,
)

__all__ = [
    "WINDOW_SECONDS",
    "Checkpoint",
    "Histogram",
    "PendingEntry",
    "PendingKind",
    "ProcessorState",
    "WindowDelta",
    "WindowKey",
    "bucket_of",
    "merged",
    "quantile",
    "value_of",
]
