"""Database URLs and engines: one place that knows SQLite from Postgres.

Embedded mode is a SQLite file (WAL, foreign keys on, a long busy timeout so concurrent
writers wait instead of failing). Studio mode is Postgres: a plain `postgresql://` URL (as
`FOLEY_DB_URL` is usually written) gets an installed driver, and the pool pings connections
before use so a restarted server costs a reconnect, not a failed task.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

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
    """A database URL safe to print or store: the password is removed."""
    return make_url(url).render_as_string(hide_password=True)


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


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()
