"""A private Prometheus Alertmanager for the alert tests: Debian's ``prometheus-alertmanager`` on a
free loopback port, clustering off, its storage and configuration in a temporary directory, one
route to a receiver that sends nothing.

`make test` installs it when missing (scripts/test-deps.sh); without it the tests fail naming the
program, they do not skip.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.exporters.certs import require
from tests.exporters.rsyslog import free_port

CONFIG = """\
route:
  receiver: "null"
  group_wait: 1h
receivers:
  - name: "null"
"""


class Alertmanager:
    """One Alertmanager under `directory`; `start`, `stop`, `alerts`."""

    def __init__(self, directory: Path) -> None:
        self.program = require("prometheus-alertmanager", "prometheus-alertmanager")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "alertmanager.yml"
        self.config.write_text(CONFIG)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until ``/-/ready`` answers 200; fails with its log if it does not."""
        log = (self.directory / "alertmanager.log").open("ab")
        self._proc = subprocess.Popen(
            [
                self.program,
                f"--config.file={self.config}",
                f"--storage.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.directory / "alertmanager.log").read_text(errors="replace")
                pytest.fail(f"alertmanager did not become ready on {self.url}:\n{text}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, unresolved alerts by default), with these query parameters."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5.0) as response:
            found: list[dict[str, Any]] = json.loads(response.read())
            return found
