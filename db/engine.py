"""Database URLs and engines: one place that knows SQLite from Postgres.

Embedded mode is a SQLite file (WAL, foreign keys on, a long busy timeout so concurrent
writers wait instead of failing). Studio mode is Postgres: a plain `postgresql://` URL (as
`FOLEY_DB_URL` is usually written) gets an installed driver, and the pool pings connections
before use so a restarted server costs a reconnect, not a failed task.

A server that is down or restarting is waited for, not failed on: `retry_db` runs a unit of
work (one transaction) again with bounded exponential backoff while the error is a lost or
refused connection, and then raises `DatabaseUnavailable` with one message that names the
server and says what to do. The budget (`RetryPolicy`, ~15 s by default) is process-wide and
can be shortened with `set_retry_policy`.
"""
from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

T = TypeVar("T")

# Drivers we can talk to Postgres with, in order of preference (psycopg2 is the pinned one).
PG_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"))


def normalize_url(url: str | URL) -> URL:
    """`url` with an installed Postgres driver spelled out (`postgres://`, `postgresql://`)."""
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql"):
        driver = next((d for d, module in PG_DRIVERS if importlib.util.find_spec(module)), None)
        if driver is None:
            raise RuntimeError(
                "FOLEY_DB_URL names Postgres but no driver is installed: "
                "pip install psycopg2-binary (see requirements/base.txt)"
            )
        u = u.set(drivername=f"postgresql+{driver}")
    return u


def redact_url(url: str | URL) -> str:
    """A database URL safe to print or store: the password is removed, from the user part
    and from a `?password=` query parameter (libpq takes either)."""
    u = make_url(url)
    if "password" not in u.query:
        return u.render_as_string(hide_password=True)
    return (u.update_query_dict({"password": "***"}).render_as_string(hide_password=True)
            .replace("password=%2A%2A%2A", "password=***"))  # as the user part shows it


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for in-memory databases and other backends."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str | URL, *, pooled: bool = True) -> Engine:
    """An engine for the provenance database; `pooled=False` for one-off work (migrations)."""
    u = normalize_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(u)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
    elif u.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True  # survive a server restart between tasks
        kwargs["pool_recycle"] = 1800  # under typical proxy / firewall idle timeouts
        if u.get_driver_name() in ("psycopg2", "psycopg"):
            kwargs["connect_args"] = {"connect_timeout": 15, "application_name": "foleyflow"}
    if not pooled:
        kwargs["poolclass"] = NullPool
    engine = create_engine(u, **kwargs)
    if u.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


SQLITE_WAL_WAIT_S = 60.0


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    """Foreign keys on, WAL journal (kept in the file: set once, by whichever process gets
    there first), 60 s busy timeout. Switching a new file to WAL needs it alone: processes
    opening one fresh database at once can be refused that switch at once, with no busy
    wait ("database is locked"), so it is retried until one of them made it."""
    import sqlite3

    cur = conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    deadline = time.monotonic() + SQLITE_WAL_WAIT_S
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    cur.close()


# ---------------------------------------------------------------- waiting out an outage


@dataclass(frozen=True)
class RetryPolicy:
    """How long a unit of database work waits for a server that went away.

    `attempts` tries, waiting `base_s`, 2·`base_s`, 4·`base_s`, … (each at most `max_delay_s`)
    in between: the default waits 0.5 + 1 + 2 + 4 + 8 = 15.5 s in all."""

    attempts: int = 6
    base_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (1-based)."""
        return min(self.max_delay_s, self.base_s * 2 ** (attempt - 1))

    @property
    def budget_s(self) -> float:
        return sum(self.delay(a) for a in range(1, self.attempts))


_policy = RetryPolicy()
_policy_lock = threading.Lock()


def retry_policy() -> RetryPolicy:
    return _policy


def set_retry_policy(policy: RetryPolicy) -> RetryPolicy:
    """Make `policy` this process's budget for `retry_db`; returns the previous one."""
    global _policy
    if policy.attempts < 1:
        raise ValueError(f"a retry policy needs at least one attempt, got {policy.attempts}")
    with _policy_lock:
        old, _policy = _policy, policy
    return old


class DatabaseUnavailable(ConnectionError):
    """The provenance database did not answer within the retry budget. Rerunning later is safe:
    completed work is kept and reused."""

    def __init__(self, message: str, *, url: str = "", reason: str = "") -> None:
        super().__init__(message)  # one argument: OSError reads two as (errno, strerror)
        self.url = url
        self.reason = reason or message


# Refusals no amount of waiting fixes: a person has to change the settings.
_PERMANENT = ("authentication failed", "no pg_hba.conf entry", "does not exist",
              "permission denied", "invalid dsn", "sslmode")


def is_transient(exc: BaseException) -> bool:
    """Is `exc` a lost or refused database connection (worth another try once it is back)?

    True for connections the dialect recognised as dropped (a server restart cuts them), and
    for a Postgres server refusing, shutting down or starting up; false for SQL errors, for
    SQLite (whose waits are its busy timeout) and for bad credentials or a missing database."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    orig = exc.orig
    if type(orig).__module__.split(".")[0] not in ("psycopg2", "psycopg"):
        return False
    text = str(orig).lower()
    return not any(p in text for p in _PERMANENT)


def reason_of(exc: BaseException) -> str:
    """The first line of a DBAPI error, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__


def unavailable(url: str | URL, attempts: int, elapsed_s: float,
                reason: str) -> DatabaseUnavailable:
    """The error (and the one message a user sees) for a database that stayed away."""
    shown = redact_url(url)
    return DatabaseUnavailable(
        f"the provenance database {shown} did not answer ({attempts} attempt"
        f"{'s' if attempts != 1 else ''} over "
        f"{elapsed_s:.1f} s; last: {reason}). Check that the database server is running and "
        "reachable, then rerun the pass — completed work is kept and reused.",
        url=shown, reason=reason)


def retry_db(fn: Callable[[], T], *, url: str | URL, policy: RetryPolicy | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()` — one unit of database work, e.g. a whole transaction — retried while the
    database is unreachable (see `is_transient`), with `policy`'s bounded exponential backoff.

    `fn` must be safe to run again after a failure: a failed transaction was rolled back, and a
    lost commit is found again by the get-or-create writes of db.api. Other errors pass
    through at once; an outage outlasting the budget raises DatabaseUnavailable. Once one unit
    of work has waited out a whole budget, others in this process stop waiting for the same
    server (one more try each) until any of them reaches it again."""
    policy = policy or _policy
    server = redact_url(url)
    start = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            result = fn()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            last = exc
            gave_up = _down.get(server)
            if gave_up is not None and time.monotonic() - gave_up < policy.budget_s:
                break  # other work just waited a whole budget for this server: do not wait again
            if attempt < policy.attempts:
                sleep(policy.delay(attempt))
        else:
            _down.pop(server, None)
            return result
    _down[server] = time.monotonic()
    raise unavailable(url, attempt, time.monotonic() - start, reason_of(last)) from last


# Databases (redacted URLs) that stayed away for a whole budget, until something reaches them.
_down: dict[str, float] = {}
