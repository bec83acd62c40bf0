"""``python -m llmpulse.cli``: the same as the ``llmpulse`` command."""

from __future__ import annotations

from llmpulse.cli import main

raise SystemExit(main())
