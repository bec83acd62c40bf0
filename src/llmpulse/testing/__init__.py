"""Test helpers that ship with llmpulse (as structlog ships `structlog.testing`).

`llmpulse.testing.traffic` generates deterministic, realistic traffic (request/response pairs, call
events, errors, duplicates, orphans, out-of-order delivery) for tests, `llmpulse demo` and the
benchmarks. This package raises no errors of its own beyond `ValueError` for bad arguments.
"""

from __future__ import annotations

from llmpulse.testing._memory import InMemoryExporter
from llmpulse.testing.traffic import (
    DEFAULT_MODELS,
    ROUTES,
    UNKNOWN_MODEL,
    encode_batch_json,
    generate_events,
    iter_batches,
)

__all__ = [
    "DEFAULT_MODELS",
    "ROUTES",
    "UNKNOWN_MODEL",
    "InMemoryExporter",
    "encode_batch_json",
    "generate_events",
    "iter_batches",
]
