"""A throwaway PostgreSQL server for studio-mode tests.

`pg_server` (session-scoped) initdb's a cluster in a temporary folder, starts it on a free
loopback port with password (SCRAM) authentication on TCP, and removes it at the end.
`stop()` / `start()` reuse the same data folder and port, so a test can take the database
away mid-pass and bring it back. `pg_url` gives each test a fresh, empty database; `db_url`
runs a test once on an embedded SQLite file and once on Postgres. `run_in_processes` runs
functions in separate processes that start together (for concurrency tests).

initdb and pg_ctl refuse to run as root: as root they run as the `postgres` OS user
(`runuser -u postgres`), in folders that user owns.
"""
from __future__ import annotations

import glob
import multiprocessing
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

SUPERUSER = "foley_test"
PG_BIN_CANDIDATES = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin")


def find_pg_bin() -> Path | None:
    """The folder holding initdb / pg_ctl / psql: $FOLEY_TEST_PG_BIN, PATH, or Debian's layout."""
    explicit = os.environ.get("FOLEY_TEST_PG_BIN")
    candidates = [explicit] if explicit else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))  # symlinks into the real bin dir
    for pattern in PG_BIN_CANDIDATES:
        candidates += sorted(glob.glob(pattern), reverse=True)  # newest major version first
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:`port`, superuser `user` / `password`."""

    bin_dir: Path
    root: Path
    port: int
    user: str = SUPERUSER
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    running: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program, as the `postgres` OS user when we are root."""
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if proc.returncode != 0:
            log = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}"
            )
        return proc

    def init(self) -> None:
        """initdb a fresh cluster: trust on the private socket, SCRAM passwords on TCP."""
        self.socket_dir.mkdir(mode=0o1777)
        self.socket_dir.chmod(0o1777)  # mkdir's mode is masked by the umask
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# foleyflow test server\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 100\n"
                # Durability is not what these tests are about; speed is.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> None:
        """Start (or restart after `stop()`) on the same port and data folder."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                  "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server at once (connections are cut), keeping its data."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        self.running = False

    def url(self, dbname: str = "postgres", *, user: str | None = None,
            password: str | None = None) -> str:
        """A plain `postgresql://` URL (as a studio sets FOLEY_DB_URL) for `dbname`."""
        user = user or self.user
        password = self.password if password is None and user == self.user else password
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser outside a transaction (CREATE DATABASE etc.)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname=dbname)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, *args: str, dbname: str = "postgres") -> str:
        """Run psql as the superuser over TCP (how an operator applies db/grants.sql)."""
        env = {**os.environ, "PGPASSWORD": self.password}
        proc = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", self.user, "-d", dbname, *args],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout


def _cannot_run_postgres() -> str | None:
    """Why a private PostgreSQL cannot be started here, or None if it can."""
    if find_pg_bin() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found in $FOLEY_TEST_PG_BIN, "
                f"PATH or {', '.join(PG_BIN_CANDIDATES)}: install postgresql (apt-get install "
                "postgresql) to run the studio-mode database tests")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and `runuser` is missing: cannot start PostgreSQL as `postgres`"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole test session."""
    reason = _cannot_run_postgres()
    if reason:
        pytest.skip("!!! STUDIO-MODE POSTGRES TESTS SKIPPED !!! " + reason)
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="foley-pg-"))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running:
            try:
                server.stop()
            except RuntimeError:
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server (dropped afterwards); its plain URL."""
    name = f"foley_{secrets.token_hex(6)}"
    url = pg_server.create_database(name)
    yield url
    if not pg_server.running:  # a test that stopped the server must not break the others
        pg_server.start()
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both backends: an embedded SQLite file, then a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'foley.db'}"
    return str(request.getfixturevalue("pg_url"))


# ---------------------------------------------------------------- processes starting together

R = TypeVar("R")
_barrier: Any = None


def _set_barrier(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def wait_for_others() -> None:
    """In a `run_in_processes` worker: block until every worker has reached this line."""
    assert _barrier is not None, "wait_for_others() outside run_in_processes"
    _barrier.wait()


def run_in_processes(fn: Callable[..., R], calls: Sequence[tuple[Any, ...]],
                     timeout: float = 120.0) -> list[R]:
    """`fn(*args)` for each args in `calls`, each in its own fresh (spawned) process.

    `fn` must be a module-level function; it calls `wait_for_others()` where the processes
    should line up. Results come back in order; a worker's exception is raised here."""
    ctx = multiprocessing.get_context("spawn")  # no inherited connections or locks
    barrier = ctx.Barrier(len(calls), timeout=timeout)
    with ProcessPoolExecutor(len(calls), mp_context=ctx, initializer=_set_barrier,
                             initargs=(barrier,)) as pool:
        futures = [pool.submit(_call, fn, args) for args in calls]
        return [f.result(timeout=timeout) for f in futures]


def _call(fn: Callable[..., R], args: tuple[Any, ...]) -> R:
    try:
        return fn(*args)
    except BaseException:
        if _barrier is not None:
            _barrier.abort()  # the others fail at once instead of waiting for the timeout
        raise
