"""A private rsyslogd for the syslog exporter's tests: loopback UDP, TCP and TLS inputs, every message
written as one JSON line holding the raw message and the properties rsyslog parsed from it.

It runs in the foreground (``-n``) with its own configuration, pid file, work directory and output
file under a temporary directory: no ``imuxsock``/``imklog`` (so neither ``/dev/log`` nor the kernel
log is touched), no system configuration read, and it listens on free loopback ports only, so it
can run as root beside (or instead of) the machine's own syslog daemon.

`make test` installs rsyslog and its TLS driver (rsyslog-gnutls) when missing; without them the
tests fail naming the program, they do not skip.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.exporters.certs import make_cert, require

#: rsyslog properties written for each message (output name → property name).
PROPERTIES = {
    "rawmsg": "rawmsg",
    "pri": "pri",
    "version": "protocol-version",
    "hostname": "hostname",
    "app_name": "app-name",
    "procid": "procid",
    "msgid": "msgid",
    "sd": "structured-data",
    "msg": "msg",
    "input": "inputname",
}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for `kind` (TCP or UDP) right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(proto: str, port: int) -> bool:
    """True when something listens on (TCP) or is bound to (UDP) 127.0.0.1:`port` (Linux /proc)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    except OSError:  # no /proc: fall back to connecting (TCP) or to a short wait (UDP)
        if proto == "udp":
            time.sleep(0.5)
            return True
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False
    for line in lines:
        fields = line.split()
        if fields[1] == wanted and (proto == "udp" or fields[3] == "0A"):  # 0A: LISTEN
            return True
    return False


class Rsyslog:
    """One rsyslogd under `directory` with the inputs asked for; `start`, `stop`, `records`.

    Ports are chosen once (free loopback ports) and kept across a restart.
    """

    def __init__(self, directory: Path, *, udp: bool = True, tcp: bool = True, tls: bool = True) -> None:
        self.program = require("rsyslogd", "rsyslog")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        self.output = directory / "messages.jsonl"
        self.udp_port = free_port(socket.SOCK_DGRAM) if udp else None
        self.tcp_port = free_port() if tcp else None
        self.tls_port = free_port() if tls else None
        self.key, self.cert = make_cert(directory) if tls else (None, None)
        self.config = directory / "rsyslog.conf"
        self.config.write_text(self._config())
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        d = self.directory
        props = "\n".join(
            f'  property(outname="{out}" name="{name}" format="jsonf")' for out, name in PROPERTIES.items()
        )
        lines = [f'global(workDirectory="{d / "work"}" maxMessageSize="64k"']
        if self.cert is not None:
            lines.append(
                f'       defaultNetstreamDriverCAFile="{self.cert}"'
                f' defaultNetstreamDriverCertFile="{self.cert}"'
                f' defaultNetstreamDriverKeyFile="{self.key}"'
            )
        lines[-1] += ")"
        if self.udp_port:
            lines.append('module(load="imudp")')
        if self.tcp_port or self.tls_port:
            lines.append('module(load="imtcp")')
        lines += [
            'template(name="fields" type="list" option.jsonf="on") {',
            props,
            '  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")',
            "}",
            'ruleset(name="received") {',
            f'  action(type="omfile" file="{self.output}" template="fields")',
            "}",
        ]
        at = 'address="127.0.0.1" ruleset="received"'
        if self.udp_port:
            lines.append(f'input(type="imudp" name="udp" port="{self.udp_port}" {at})')
        if self.tcp_port:
            lines.append(f'input(type="imtcp" name="tcp" port="{self.tcp_port}" {at})')
        if self.tls_port:
            lines.append(
                f'input(type="imtcp" name="tls" port="{self.tls_port}" {at}'
                ' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")'
            )
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start rsyslogd and wait until every input listens; fails with its stderr if it does not."""
        stderr = (self.directory / "rsyslogd.stderr").open("ab")
        self._proc = subprocess.Popen(
            [self.program, "-n", "-f", str(self.config), "-i", str(self.directory / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
        stderr.close()
        wanted = [("udp", self.udp_port), ("tcp", self.tcp_port), ("tcp", self.tls_port)]
        deadline = time.monotonic() + timeout
        while not all(_listening(proto, port) for proto, port in wanted if port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.directory / "rsyslogd.stderr").read_text(errors="replace")
                pytest.fail(
                    f"rsyslogd did not start listening (config {self.config}; the TLS input needs"
                    f" rsyslog-gnutls):\n{log}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop rsyslogd (SIGTERM, then SIGKILL after 5 s); its output file is complete afterwards."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def records(self, app_name: str | None = None) -> list[dict[str, Any]]:
        """Every message written so far (complete lines only), or those with this APP-NAME."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")[:-1]  # the last piece is empty or a line still being written
        found = [json.loads(line) for line in lines]
        return [r for r in found if app_name is None or r["app_name"] == app_name]

    def wait_for(self, app_name: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The messages with this APP-NAME once there are at least `count` (returns what came at the
        deadline otherwise), after a short wait for any beyond `count`."""
        deadline = time.monotonic() + timeout
        found = self.records(app_name)
        while len(found) < count and time.monotonic() < deadline:
            time.sleep(0.01)
            found = self.records(app_name)
        time.sleep(0.05)  # anything more than expected would show up now
        return self.records(app_name)
