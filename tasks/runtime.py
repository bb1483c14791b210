"""Process-wide handles to the provenance database and artifact store.

Flows call `configure()` once with the resolved settings; tasks call `db()` and `store()`.
Keeping the handles here (not in task parameters) keeps credentials out of Prefect's run
parameters and out of cache keys.
"""
from __future__ import annotations

import threading

from db.api import Database, connect
from tasks.store import S3Config, Store, open_store

_lock = threading.Lock()
_db: Database | None = None
_store: Store | None = None
_store_key: tuple[str, S3Config | None] | None = None


def configure(db_url: str, store_url: str, s3: S3Config | None = None) -> None:
    """Point this process at a database and a store (idempotent for the same settings).

    `s3` carries the endpoint and keys of an `s3://` store; it stays in this module, never in
    flow or task parameters.
    """
    global _db, _store, _store_key
    with _lock:
        if _db is None or _db.url != db_url:
            if _db is not None:
                _db.dispose()
            _db = connect(db_url)
        if _store is None or _store_key != (store_url, s3):
            _store, _store_key = open_store(store_url, s3=s3), (store_url, s3)


def db() -> Database:
    if _db is None:
        raise RuntimeError("foleyflow runtime not configured: call tasks.runtime.configure() first")
    return _db


def db_url() -> str:
    """The database this process uses: the one it connected to, else (not connected yet) the
    one the settings name — what an error about the database names. ValueError if the
    settings themselves are broken."""
    if _db is not None:
        return _db.url
    from flows.settings import get_settings

    return get_settings().resolved_db_url()


def store() -> Store:
    if _store is None:
        raise RuntimeError("foleyflow runtime not configured: call tasks.runtime.configure() first")
    return _store
