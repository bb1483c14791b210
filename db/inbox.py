"""Inbox bookkeeping: every version of a reel that lands in the inbox is processed once.

A version is (inbox, timeline path, content hash of the timeline and its media); it has one
`inbox_reels` row, whatever the number of workers or triggers. `claim()` takes the version's
named lock (`db.locks`: a Postgres advisory lock or a file lock beside the SQLite database)
without waiting and holds it while the caller processes the reel; under the lock it reads the
row:

| row | what `claim` does |
|---|---|
| none | inserts it `running` and hands it over |
| `done` / `rejected` | nothing (processed, or the edit cannot be read: a new version will be) |
| `failed` | takes it again (attempts + 1): the pass could not finish (a service was away) |
| `running` | takes it over (attempts + 1): its lock was free, so whoever ran it died |

A second trigger while the first is at work finds the lock held and skips the version. The
lock dies with its process (the server drops a dead session's advisory lock, the kernel a dead
process's flock), so a crash never leaves a version stuck. The unique constraint backs the lock
up: two inserts of one version cannot both succeed.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.api import Database
from db.locks import LockTimeout, named_lock
from db.schema import InboxReel, ShotRun

FINAL = ("done", "rejected")


@dataclass(frozen=True)
class Claim:
    """A version this process now processes."""

    id: int
    attempts: int
    taken_over: bool  # a previous attempt died or failed


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@contextlib.contextmanager
def claim(db: Database, *, inbox: str, path: str, content_sha256: str, worker: str,
          flow_run_id: str | None = None) -> Iterator[Claim | None]:
    """Hold the version for the block and yield its Claim, or yield None when it is processed
    already or another process is processing it right now (see the module docstring)."""
    held = contextlib.ExitStack()
    try:
        held.enter_context(named_lock(db.engine, f"foleyflow:inbox:{inbox}|{path}|{content_sha256}",
                                      timeout=0, what=f"inbox reel {path}"))
    except LockTimeout:
        yield None
        return
    with held:
        with db.session() as s:
            got = _take(s, inbox, path, content_sha256, worker, flow_run_id)
        yield got


def _take(s: Session, inbox: str, path: str, sha: str, worker: str,
          flow_run_id: str | None) -> Claim | None:
    row = s.scalars(select(InboxReel).where(InboxReel.inbox == inbox, InboxReel.path == path,
                                            InboxReel.content_sha256 == sha)).one_or_none()
    if row is None:
        row = InboxReel(inbox=inbox, path=path, content_sha256=sha, status="running",
                        attempts=1, worker=worker, prefect_flow_run_id=flow_run_id)
        s.add(row)
        s.flush()
        return Claim(row.id, 1, taken_over=False)
    if row.status in FINAL:
        return None
    row.attempts += 1
    row.status, row.worker, row.prefect_flow_run_id = "running", worker, flow_run_id
    row.started_at, row.finished_at, row.error = _now(), None, None
    return Claim(row.id, row.attempts, taken_over=True)


def finish(db: Database, claim_id: int, *, status: str, reel: str | None = None,
           delivery_dir: str | None = None, summary: dict[str, Any] | None = None,
           error: str | None = None) -> None:
    """Record how the claimed version ended: done, failed (taken again) or rejected."""
    if status not in ("done", "failed", "rejected"):
        raise ValueError(f"an inbox reel ends done, failed or rejected, not {status!r}")
    with db.session() as s:
        row = s.get(InboxReel, claim_id)
        assert row is not None, f"inbox reel {claim_id} vanished"
        row.status, row.error, row.finished_at = status, error, _now()
        row.reel = reel or row.reel
        row.delivery_dir = delivery_dir or row.delivery_dir
        row.summary = summary or {}


def history(db: Database, inbox: str) -> list[InboxReel]:
    """Every version ever taken from `inbox`, oldest first."""
    with db.session() as s:
        return list(s.scalars(select(InboxReel).where(InboxReel.inbox == inbox)
                              .order_by(InboxReel.id)))


def record_shot_runs(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of `shot_runs` (shot_id, worker, prefect_flow_run_id, status, seconds)."""
    with db.session() as s:
        s.add_all(ShotRun(**row) for row in rows)
