"""Cross-process locks: two passes over the same reel take turns instead of interleaving.

On Postgres a lock is a session-level advisory lock (`pg_advisory_lock`) keyed by a 64-bit
hash of its name, held on one pooled connection for as long as the block runs; the server
drops it if that connection dies, so a crashed pass never leaves a reel locked. In embedded
mode it is an exclusive `flock` on a small file next to the SQLite database (released by the
kernel when the process dies). An in-memory SQLite database gets a lock within the process.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db.engine import sqlite_path

POLL_S = 0.05
KEEPALIVE_S = 2.0  # how often a held Postgres lock checks that its connection is alive
log = logging.getLogger(__name__)
_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockTimeout(TimeoutError):
    """A lock was not free within the caller's timeout (another pass holds it)."""


class HasEngine(Protocol):
    """Anything with the provenance database's engine (`db.api.Database`)."""

    engine: Engine


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock` derived from `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def reel_lock(db: HasEngine, reel_name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the reel's lock for the block: a second pass of the same reel waits here.

    `timeout` (seconds) raises LockTimeout instead of waiting forever."""
    with named_lock(db.engine, f"foleyflow:reel:{reel_name}", timeout=timeout,
                    what=f"reel {reel_name!r}"):
        yield


@contextlib.contextmanager
def named_lock(engine: Engine, name: str, *, timeout: float | None = None,
               what: str | None = None) -> Iterator[None]:
    """An exclusive, cross-process lock called `name` in the database behind `engine`."""
    what = what or repr(name)
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, advisory_key(name), timeout, what):
            yield
        return
    path = sqlite_path(engine.url)
    if path is None:
        with _local_lock(name, timeout, what):
            yield
        return
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    with _file_lock(path.with_name(f"{path.name}.{digest}.lock"), timeout, what):
        yield


def _deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _timeout_error(what: str, timeout: float | None) -> LockTimeout:
    return LockTimeout(
        f"{what} is locked by another pass (waited {timeout:g} s): let that pass finish "
        "(or stop it), then run again"
    )


@contextlib.contextmanager
def _pg_lock(engine: Engine, key: int, timeout: float | None, what: str) -> Iterator[None]:
    conn = engine.connect()
    try:
        _pg_acquire(conn, key, timeout, what)
    except BaseException:
        conn.close()
        raise
    keeper = _LockKeeper(engine, conn, key, what)
    keeper.start()
    try:
        yield
    finally:
        keeper.release()


class _LockKeeper(threading.Thread):
    """Watches the connection that holds an advisory lock and takes the lock again when the
    server restarts under a running pass (which drops every session lock).

    Every KEEPALIVE_S it pings the holding connection; if that connection is gone it connects
    again (waiting out the outage as long as the block runs) and re-takes the lock with
    `pg_try_advisory_lock`. If another pass took the reel in between, it says so in the log
    and keeps trying: the database's unique constraints keep the rows consistent either way,
    the lock only makes the passes take turns."""

    def __init__(self, engine: Engine, conn: Connection, key: int, what: str) -> None:
        super().__init__(name=f"lock-keeper {what}", daemon=True)
        self.engine, self.conn, self.key, self.what = engine, conn, key, what
        self.stopping = threading.Event()
        self.held = True
        self.retakes = 0

    def run(self) -> None:
        while not self.stopping.wait(KEEPALIVE_S):
            # Only this thread touches the connection until release() has joined it.
            if self.held:
                try:
                    self.conn.execute(select(1)).scalar_one()
                    self.conn.commit()
                    continue
                except DBAPIError:
                    self._drop_connection()
            self._retake()

    def _drop_connection(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.invalidate()
        with contextlib.suppress(Exception):
            self.conn.close()
        self.held = False
        log.info("%s: the database connection holding its lock died (server restart?); "
                    "taking the lock again", self.what)

    def _retake(self) -> None:
        try:
            conn = self.engine.connect()
        except DBAPIError:
            return  # still away; try again on the next tick
        try:
            got = conn.execute(select(func.pg_try_advisory_lock(self.key))).scalar_one()
            conn.commit()
        except DBAPIError:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()
            return
        if not got:
            conn.close()
            log.warning("%s: another pass took the lock while the database was away; "
                        "waiting for it", self.what)
            return
        self.conn, self.held = conn, True
        self.retakes += 1
        log.info("%s: lock taken again after the database came back", self.what)

    def release(self) -> None:
        self.stopping.set()
        self.join()
        if not self.held:
            with contextlib.suppress(Exception):
                self.conn.close()
            return
        try:
            self.conn.execute(select(func.pg_advisory_unlock(self.key)))
            self.conn.commit()
            self.conn.close()
        except DBAPIError:
            # The connection died (server restart): the lock died with it. Never hand the
            # connection back to the pool in an unknown state.
            self.conn.invalidate()
            self.conn.close()


def _pg_acquire(conn: Connection, key: int, timeout: float | None, what: str) -> None:
    if timeout is None:
        conn.execute(select(func.pg_advisory_lock(key)))
    else:
        deadline = time.monotonic() + timeout
        while not conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one():
            conn.commit()  # do not sit "idle in transaction" while polling
            if _deadline_passed(deadline):
                raise _timeout_error(what, timeout)
            time.sleep(POLL_S)
    # The lock belongs to the session, not the transaction: end the transaction so a long pass
    # does not hold a snapshot open on the server.
    conn.commit()


@contextlib.contextmanager
def _file_lock(path: os.PathLike[str] | str, timeout: float | None, what: str) -> Iterator[None]:
    # flock locks belong to the open file, so two opens in one process also exclude each other.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if _deadline_passed(deadline):
                        raise _timeout_error(what, timeout) from None
                    time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _local_lock(name: str, timeout: float | None, what: str) -> Iterator[None]:
    with _local_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=-1 if timeout is None else timeout):
        raise _timeout_error(what, timeout)
    try:
        yield
    finally:
        lock.release()
