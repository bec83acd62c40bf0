"""Child processes that test helpers start in sessions of their own (brokers, S3 servers), which
would outlive a test run that dies: each helper adds its process to `running` while it runs, and
whatever is still there is killed when the test process exits."""

from __future__ import annotations

import atexit
import contextlib
import subprocess

running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(running):
        with contextlib.suppress(OSError):
            proc.kill()
