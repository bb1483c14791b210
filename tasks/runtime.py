"""Process-wide handles to the provenance database and artifact store.

Flows call `configure()` once with the resolved settings; tasks call `db()` and `store()`.
Keeping the handles here (not in task parameters) keeps credentials out of Prefect's run
parameters and out of cache keys.
"""
from __future__ import annotations

import threading

from db.api import Database, connect
from tasks.store import Store, open_store

_lock = threading.Lock()
_db: Database | None = None
_store: Store | None = None
_store_url: str | None = None


def configure(db_url: str, store_url: str) -> None:
    """Point this process at a database and a store (idempotent for the same URLs)."""
    global _db, _store, _store_url
    with _lock:
        if _db is None or _db.url != db_url:
            if _db is not None:
                _db.dispose()
            _db = connect(db_url)
        if _store is None or _store_url != store_url:
            _store, _store_url = open_store(store_url), store_url


def db() -> Database:
    if _db is None:
        raise RuntimeError("foleyflow runtime not configured: call tasks.runtime.configure() first")
    return _db


def store() -> Store:
    if _store is None:
        raise RuntimeError("foleyflow runtime not configured: call tasks.runtime.configure() first")
    return _store
