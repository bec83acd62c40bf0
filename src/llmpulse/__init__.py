"""llmpulse: LLM telemetry end to end.

The SDK's public names are importable from here (`Collector`, `TelemetryConfig`, `instrument`,
`observe`, `StreamMeter`, `Budget`, `BudgetExceeded`); they load on first use, so `import llmpulse`
stays cheap. The wire schema is `llmpulse.events`, exporters `llmpulse.exporters`, the server
`llmpulse.server`, the stream processor `llmpulse.pipeline` and the store `llmpulse.store`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmpulse._version import __version__

if TYPE_CHECKING:
    from llmpulse.sdk import Collector, TelemetryConfig, observe
    from llmpulse.sdk._budget import Budget, BudgetExceeded
    from llmpulse.sdk._stream import StreamMeter
    from llmpulse.sdk.instrument import instrument

#: public name → the module that defines it
_LAZY: dict[str, str] = {
    "Budget": "llmpulse.sdk",
    "BudgetExceeded": "llmpulse.sdk",
    "Collector": "llmpulse.sdk",
    "StreamMeter": "llmpulse.sdk",
    "TelemetryConfig": "llmpulse.sdk",
    "instrument": "llmpulse.sdk.instrument",
    "observe": "llmpulse.sdk",
}

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Collector",
    "StreamMeter",
    "TelemetryConfig",
    "__version__",
    "instrument",
    "observe",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmpulse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
