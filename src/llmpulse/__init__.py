"""llmpulse: LLM telemetry end to end.

The SDK's public names arrive in `llmpulse` itself; the wire schema is `llmpulse.events`, the server
`llmpulse.server`, the stream processor `llmpulse.pipeline` and the store `llmpulse.store`.
"""

from __future__ import annotations

from llmpulse._version import __version__

__all__ = ["__version__"]
