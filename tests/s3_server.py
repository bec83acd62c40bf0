"""A local S3 server for tests: moto's (``moto[server]``, a test dependency), on a loopback port.

Its use here is a persistent storage for the tansu broker (`tests.kafka_broker.TansuBroker` with
``storage=server.storage, env=server.env``): tansu's memory storage forgets everything when the broker
restarts, its ``postgres://`` engine is not compiled into the build the tests get, but its ``s3://``
storage keeps topics, records and offsets in the S3 server, which outlives any number of broker
restarts (everything is lost when the S3 server itself stops).

    with S3Server() as s3:                          # or S3Server().start() ... .stop()
        broker = TansuBroker(storage=s3.storage, env=s3.env).start()

`S3Server` runs moto's server app as ``moto_server`` does (threaded werkzeug), from this module
(``python -m tests.s3_server HOST PORT``, see `_serve`), in a subprocess of this interpreter on
127.0.0.1, a free port, and creates the bucket. A subprocess, not moto's `ThreadedMotoServer`: moto is
CPU-bound (threads do not help under the GIL), and apart it neither competes with the test for this
process's GIL nor sees pytest's warning filters. Nothing listens beyond loopback and no credential is
real (``AWS_*`` are dummies). `S3ServerNotFound` (a
`RuntimeError`) names the missing package, so a test using it fails, never skips; `S3ServerError`
quotes the server's log. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests import children
from tests.kafka_broker import free_port

__all__ = ["S3Server", "S3ServerError", "S3ServerNotFound"]

#: The repository's root, so the server process can run this module (``python -m tests.s3_server``).
_ROOT = Path(__file__).resolve().parents[1]

#: Processes running now: killed at exit (`tests.children`).
_running = children.running


class S3ServerNotFound(RuntimeError):
    """moto's server (the ``moto[server]`` test dependency) is not installed."""


class S3ServerError(RuntimeError):
    """The S3 server did not start or refused a request; the message quotes its log."""


def _check_installed() -> None:
    missing = [name for name in ("moto", "flask", "flask_cors") if importlib.util.find_spec(name) is None]
    if missing:
        raise S3ServerNotFound(
            f"the local S3 server needs moto's server extra ({', '.join(missing)} missing): install the "
            "test dependency `moto[server]` (`pip install 'moto[server]'`, done by `make test`)"
        )


class S3Server:
    """moto's S3 server on 127.0.0.1:`port` (a free port when None) holding one bucket, `bucket`.

    Data lives in the server's memory: it survives every client's restart and is gone after `stop`.
    Not thread-safe. Use it as a context manager, or call `stop` yourself.
    """

    def __init__(self, port: int | None = None, *, bucket: str = "tansu", region: str = "us-east-1") -> None:
        _check_installed()
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.bucket = bucket
        self.region = region
        self._proc: subprocess.Popen[bytes] | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix="s3-"))
        self._log = self._logdir / "moto.log"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def storage(self) -> str:
        """``s3://bucket/``, as tansu's ``--storage-engine`` names it."""
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables an S3 client (tansu's object_store) needs to use this server: a dummy
        key pair, the region, the endpoint and plain HTTP allowed."""
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def running(self) -> bool:
        """True while the process runs. Does not block."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = 2_000) -> str:
        """The end of the server's output. Does not block."""
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _call(self, method: str, path: str, timeout: float = 2.0) -> int:
        request = urllib.request.Request(f"{self.endpoint}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def start(self, timeout: float = 30.0) -> S3Server:
        """Start the server, wait (at most `timeout` s) until it answers and create the bucket; returns
        self. Raises `S3ServerError` (quoting the log) when it exits, stays silent or refuses the bucket."""
        if self.running:
            return self
        args = [sys.executable, "-m", "tests.s3_server", self.host, str(self.port)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        _running.add(self._proc)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise S3ServerError(f"moto's server exited with {code}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._call("GET", "/", timeout=1.0) == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"moto's server did not answer within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)
        status = self._call("PUT", f"/{self.bucket}")
        if status != 200:
            self.stop()
            raise S3ServerError(f"creating bucket {self.bucket!r} answered {status}:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); every object is gone. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _running.discard(proc)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._logdir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint} bucket={self.bucket} {'running' if self.running else 'stopped'}>"


def _serve(host: str, port: int) -> None:
    """Run moto's server app (as ``moto_server`` does: threaded werkzeug) until killed. Blocks.

    moto answers every request in one Python process, so its CPU time bounds tansu's speed. Two costs
    are cut: moto lists its own package directory on every request to find the service (about half a
    request's time: ``backends.list_of_moto_modules``, cached here, its answer never changes), and
    werkzeug logs every request line.
    """
    import logging

    from moto import backends
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
