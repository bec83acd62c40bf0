"""A private Postgres server for tests that stop, crash or restart the database.

The machine's shared Postgres (127.0.0.1:5432) is used by other tests and CI and must never be
restarted; `PostgresServer` runs its own cluster instead: ``initdb`` into a temporary directory and
``pg_ctl`` on a free loopback port (trust authentication, superuser ``postgres``). It can be stopped
(``fast`` or ``immediate``, the latter being a crash: no shutdown checkpoint, recovery from the WAL
on the next start), started again on the same port and data directory, and removed.

    with PostgresServer() as pg:                    # or PostgresServer().start() ... .remove()
        url = pg.create_database("llmpulse")        # postgresql://postgres@127.0.0.1:PORT/llmpulse
        pg.restart(mode="immediate")                # the same data, a crash in between

The binaries come from ``$PG_BIN`` when set, else the newest ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package), else ``initdb`` on PATH. `PostgresNotFound` (a `RuntimeError`) names what is
missing, so a test using it fails, never skips. ``initdb`` refuses to run as root: as root the
cluster belongs to the ``postgres`` user (the data directory is chowned to it and every command runs
under ``runuser -u postgres --``). Every wait is bounded; `PostgresError` quotes the server's log.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

__all__ = [
    "PostgresError",
    "PostgresNotFound",
    "PostgresServer",
    "fresh_databases",
    "postgres_bin_dir",
    "suite_dsn",
]

#: Environment variable naming a Postgres database URL for the test suite (its server must let the
#: user create databases).
ENV_TEST_DSN = "POSTGRES_TEST_DSN"
#: The machine's own Postgres, used when it answers and ``POSTGRES_TEST_DSN`` is not set.
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: Environment variable naming the directory that holds initdb, pg_ctl and postgres.
ENV_PG_BIN = "PG_BIN"
_OWNER = "postgres"

#: Servers started in this process: stopped at exit, so a test run that dies leaves none behind.
_running: set[PostgresServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop(mode="immediate")


class PostgresNotFound(RuntimeError):
    """No Postgres server binaries (initdb, pg_ctl) were found."""


class PostgresError(RuntimeError):
    """A Postgres command failed or the server did not start; the message quotes its log."""


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; raises `PostgresNotFound`. Does not block."""
    explicit = os.environ.get(ENV_PG_BIN, "").strip()
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    else:
        versions = glob.glob("/usr/lib/postgresql/*/bin")
        candidates.extend(sorted(versions, key=_major_version, reverse=True))
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(str(Path(on_path).parent))
    for directory in candidates:
        if all(os.access(Path(directory) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(directory)
    where = f"${ENV_PG_BIN}={explicit!r}" if explicit else "/usr/lib/postgresql/*/bin or PATH"
    raise PostgresNotFound(
        f"no Postgres server binaries (initdb, pg_ctl) in {where}: install Debian's postgresql package "
        f"(`apt-get install postgresql`) or set ${ENV_PG_BIN} to the directory holding them"
    )


def _major_version(bin_dir: str) -> int:
    name = Path(bin_dir).parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One private Postgres cluster on 127.0.0.1:`port` (a free port when None), user ``postgres``.

    `start`, `stop` and `restart` may alternate any number of times; the data survives them
    (`remove` deletes it). Not thread-safe. Use it as a context manager, or call `remove` yourself.
    """

    def __init__(self, port: int | None = None) -> None:
        self.bin = postgres_bin_dir()
        self.host = "127.0.0.1"
        self.port = port if port is not None else _free_port()
        self._root = Path(tempfile.mkdtemp(prefix="llmpulse-pg-"))
        self.data = self._root / "data"
        self._log = self._root / "server.log"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            if shutil.which("runuser") is None:
                raise PostgresNotFound("running as root needs `runuser` (util-linux) to start Postgres")
            try:
                owner = pwd.getpwnam(_OWNER)
            except KeyError as exc:
                raise PostgresNotFound(f"running as root needs a {_OWNER!r} user to own the cluster") from exc
            os.chown(self._root, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", _OWNER, "--"]
        self._initialized = False
        self.starts = 0

    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql://{_OWNER}@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """True while the server answers pg_ctl status. Blocks briefly."""
        if not self._initialized or not self.data.is_dir():
            return False
        done = self._run("pg_ctl", "status", "-D", str(self.data), check=False, timeout=10)
        return done.returncode == 0

    def log_tail(self, chars: int = 2_000) -> str:
        """The end of the server's log (every start appends to it). Does not block."""
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _run(
        self, tool: str, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as_owner, str(self.bin / tool), *args]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self._root
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(
                f"{tool} {' '.join(args)} timed out after {timeout:g} s:\n{self.log_tail()}"
            ) from exc
        if check and done.returncode != 0:
            said = f"{done.stdout}{done.stderr}".strip()
            raise PostgresError(
                f"{tool} {' '.join(args)} failed ({done.returncode}): {said}\n{self.log_tail()}"
            )
        return done

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Create the cluster (first call), start the server and wait until it accepts connections."""
        if not self._initialized:
            self._run("initdb", "-D", str(self.data), "-U", _OWNER, "--auth=trust", "-E", "UTF8", "--no-sync")
            self._initialized = True
        options = f"-p {self.port} -k {self._root} -c listen_addresses={self.host} -c fsync=off"
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self._log), "-o", options,
            "-w", "-t", str(int(timeout)), timeout=timeout + 5,
        )  # fmt: skip
        _running.add(self)
        self.starts += 1
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server: ``fast`` (clean shutdown), ``immediate`` (a crash: recovery on the next
        start) or ``smart``. Idempotent."""
        _running.discard(self)
        if not self._initialized or not self.data.is_dir():
            return
        if self._run("pg_ctl", "status", "-D", str(self.data), check=False, timeout=10).returncode != 0:
            return
        wait = str(int(timeout))
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", wait, timeout=timeout + 5)

    def restart(self, mode: str = "immediate", down_s: float = 0.0) -> PostgresServer:
        """`stop` (`mode`), stay down `down_s` seconds, `start` again on the same port and data."""
        self.stop(mode=mode)
        if down_s:
            time.sleep(down_s)
        return self.start()

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its URL. Blocks briefly."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server (immediately) and delete its data. Idempotent."""
        with contextlib.suppress(PostgresError):
            self.stop(mode="immediate")
        shutil.rmtree(self._root, ignore_errors=True)
        self._initialized = False

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} data={self.data}>"


_suite: dict[str, str] = {}
_suite_server: list[PostgresServer] = []


def _answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def suite_dsn() -> str:
    """The Postgres database URL the test suite uses, decided once per process. Blocks.

    ``$POSTGRES_TEST_DSN`` when set (it must answer); else the machine's own Postgres
    (`LOCAL_DSN`) when it answers; else a private `PostgresServer` started now, holding a database
    ``test`` and stopped when the process exits. So a machine without Postgres still runs every
    Postgres test (needing only Debian's ``postgresql`` package, which ``make test`` installs);
    `PostgresNotFound` or `PostgresError` otherwise, naming what is missing: tests fail, never skip.
    """
    if "dsn" in _suite:
        return _suite["dsn"]
    configured = os.environ.get(ENV_TEST_DSN)
    if configured:
        if not _answers(configured):
            raise PostgresError(f"{ENV_TEST_DSN}={configured} does not answer")
        dsn = configured
    elif _answers(LOCAL_DSN):
        dsn = LOCAL_DSN
    else:
        server = PostgresServer().start()
        _suite_server.append(server)
        atexit.register(server.remove)
        dsn = server.create_database("test")
    _suite["dsn"] = dsn
    return dsn


@contextlib.contextmanager
def fresh_databases(prefix: str = "llmpulse_t") -> Iterator[Callable[[], str]]:
    """A function creating fresh, empty databases on `suite_dsn`'s server (it returns each one's
    URL); they are dropped on exit. Blocks."""
    import psycopg

    admin_dsn = suite_dsn()
    base = admin_dsn.rpartition("/")[0]
    names: list[str] = []

    def create() -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return f"{base}/{name}"

    try:
        yield create
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
