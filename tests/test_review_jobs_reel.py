"""A decision's job among the others of its reel: its outcome is its shot's, the run checks the
delivery folder holding the reel's lock, a refusal counts no attempt, a re-conform writes only
what changed, the outbox keeps the database's time, the app's worker neither blocks nor spins
on a reel a pass holds, and a failure is one line — in the jobs and on the command line,
without Prefect's traceback.

The reel is the one tests/test_review.py analyses (a real pass, `--approve queue`); each test
works on its own copy of the home. The failures are real: an envelope whose category the
library does not have, a delivery folder that is a file while a "pass" holds the reel's lock
(the test takes it, as a pass does), a database that refuses a write (an SQLite trigger).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from db import api, review
from db.schema import ReviewJob
from tasks import runtime
from tests.test_review import REEL, analysed, foley, home  # noqa: F401  (fixtures)
from tests.test_review_jobs import decide, jobs, manifest_shots


def attempts() -> list[int]:
    with runtime.db().session() as s:
        return [j.attempts for j in s.scalars(select(ReviewJob).order_by(ReviewJob.id))]


def bad_version(shot: str = "SH010") -> int:
    """Save a version of `shot` whose category the library has no sound of (by ed)."""
    from tasks.decisions import load_envelope, save_version

    with runtime.db().session() as s:
        v1 = api.latest_envelope(s, api.get_shot(s, REEL, shot).id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), v1.shot_id
    base = {k: doc[k] for k in ("shot", "rate_hz", "duration_s", "curve", "events", "prompt")}
    return save_version(sid, {**base, "category": "no such category"}, source="edit",
                        derived_from=ref, created_by="user:ed", base_version=1)[0]


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def apply_fails(code: int) -> tuple[Any, str, str]:
    """`foley review apply REEL` failing as a person sees it: exit `code`, no Prefect
    traceback, and its two error lines (the run's error, the delivery behind)."""
    out = foley("review", "apply", REEL)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Finished in state" not in out.stderr, out.stderr
    said, behind = error_lines(out.stderr)
    return out, said, behind


# ---------------------------------------------------------------- 1. a job's outcome is its shot's


def test_a_shot_that_cannot_be_synthesized_fails_only_its_own_jobs(home: Path) -> None:
    """SH010's approved version cannot be synthesized; SH020 is omitted, later approved. The
    run delivers the reel and fails SH010's job alone, with its reason (no retry); SH020's
    jobs are done, each run, and its stems are delivered — a later decision on the reel is not
    failed by the bad shot, whose job stays failed until it is fixed."""
    from flows.review import drain

    assert bad_version() == 2
    decide(("SH010", 2, "approved"), ("SH020", 1, "omitted"))
    [report] = drain()
    assert report.conformed and [n for n, _ in report.failed] == ["SH010"]
    [(s1, e1), (s2, e2)] = jobs()
    assert (s1, s2) == ("failed", "done"), jobs()
    assert e1.startswith("SH010: synth: no sounds of category 'no such category' in sound "
                         "library ") and e2 is None
    assert manifest_shots(home) == [("SH010", "failed", None), ("SH020", "omitted", None)]
    with runtime.db().session() as s:
        [behind] = review.deliveries_behind(s)
    assert (behind.decisions, behind.status) == (1, "failed") and "SH010" in behind.error

    decide(("SH020", 1, "approved"))  # a change of mind on the other shot
    [report] = drain()                # the worker's run: SH020's job is queued
    assert report.conformed and report.synthesized == ["SH020"]
    assert [st for st, _ in jobs()] == ["failed", "done", "done"], jobs()
    assert jobs()[0][1] == e1  # still SH010's own reason
    assert manifest_shots(home) == [("SH010", "failed", None), ("SH020", "delivered", 1)]
    assert drain() == []  # the worker leaves the failed job


# ---------------------------------------------------------------- 2. only what changed is written


def test_a_second_identical_delivery_writes_only_the_manifest(home: Path) -> None:
    """The reel delivered, then applied again with nothing changed (a retry, a run a decision
    on another reel set off): every delivered file keeps its inode — it was not written again
    — but the manifest, which lands last; the delivery is whole (every file as the manifest
    lists it), and no set-aside manifest is left."""
    from flows.review import apply_decisions

    decide(("SH010", 1, "approved"), ("SH020", 1, "approved"))
    assert apply_decisions(REEL, reason="first").conformed
    out = home / "delivery"

    def nodes() -> dict[str, tuple[int, int]]:
        return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in sorted(out.rglob("*")) if p.is_file()}

    before = nodes()
    assert apply_decisions(REEL, reason="again").conformed
    after = nodes()
    assert set(after) == set(before)
    written = sorted(rel for rel in after if after[rel] != before[rel])
    print(f"\na second identical delivery wrote {len(written)} of {len(after)} files: {written}")
    assert written == ["manifest.json"], written
    man = json.loads((out / "manifest.json").read_text())
    assert {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest()
            for rel in man["files"]} == man["files"]
    assert not (out / ".manifest.json.previous").exists()


# ---------------------------------------------------------------- 3. the folder, under the lock


def _reel_lock_file() -> Path:
    """The flock file of the reel's lock (db.locks: beside the SQLite database)."""
    db = Path(runtime.db().url.removeprefix("sqlite:///"))
    digest = hashlib.sha256(f"foleyflow:reel:{REEL}".encode()).hexdigest()[:16]
    return db.with_name(f"{db.name}.{digest}.lock")


def _waiting_on(lock_file: Path) -> bool:
    """Whether some process waits for an flock on `lock_file` (/proc/locks: '->' lines)."""
    inode = lock_file.stat().st_ino
    return any("->" in ln and ln.split()[-3].endswith(f":{inode}")
               for ln in Path("/proc/locks").read_text().splitlines())


def test_the_folder_is_checked_under_the_reels_lock(home: Path) -> None:
    """While a pass holds the reel (the test takes its lock) the delivery folder is, for a
    moment, not one (a file in its place): `foley review apply` waits for the lock and checks
    the folder then — whole again — and delivers, instead of refusing what it would take."""
    delivery = home / "delivery"
    decide(("SH010", 1, "approved"), ("SH020", 1, "omitted"))
    with api.reel_lock(runtime.db(), REEL):
        delivery.rename(home / "delivery.moving")
        delivery.write_text("half-way through a pass")
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "review", "apply", REEL],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not _waiting_on(_reel_lock_file()):
            assert time.monotonic() < deadline, "the apply never reached the reel's lock"
            time.sleep(0.1)
        delivery.unlink()
        (home / "delivery.moving").rename(delivery)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    assert f"re-conformed {REEL} into {delivery}" in stdout
    assert [st for st, _ in jobs()] == ["done", "done"], jobs()
    assert manifest_shots(home) == [("SH010", "delivered", 1), ("SH020", "omitted", None)]


# ---------------------------------------------------------------- 4. a refusal is no attempt


def test_a_refused_folder_fails_the_jobs_in_one_line_without_counting_an_attempt(
        home: Path) -> None:
    """The delivery folder is a file: `foley review apply` says so in one line (exit 2, no
    traceback) and fails the jobs with the reason, not retried — and counts no attempt, since
    nothing was tried; applied once the folder is back, they are done."""
    delivery = home / "delivery"
    decide(("SH010", 1, "approved"), ("SH020", 1, "omitted"))
    delivery.rename(home / "delivery.away")
    delivery.write_text("not a folder")
    out, said, behind = apply_fails(2)
    assert said.startswith(f"error: {REEL}: delivery folder {delivery} is a file, not a "
                           "folder"), out.stderr
    assert behind.startswith(f"{REEL}: delivery behind 2 decisions: applying failed and is "
                             "not retried: DeliveryFolderError: "), out.stderr
    assert [st for st, _ in jobs()] == ["failed", "failed"]
    assert attempts() == [0, 0]
    delivery.unlink()
    (home / "delivery.away").rename(delivery)
    out = foley("review", "apply", REEL)
    assert out.returncode == 0, out.stderr
    assert [st for st, _ in jobs()] == ["done", "done"] and attempts() == [0, 0]


# ---------------------------------------------------------------- 5. the database's clock


def test_the_outbox_keeps_the_databases_time(db_url: str) -> None:
    """`claimed_at` and `finished_at` are the database's time — on Postgres the transaction's
    `now()` itself, not the client's clock (hosts sharing a Postgres may disagree) — and a
    retry falls due by that clock (`reels_to_apply`, `retries`), on SQLite and Postgres."""
    db = api.connect(db_url)
    try:
        with db.session() as s:
            reel = api.upsert_reel(s, name="R1", timeline_path="/edit/R1.otio", rate_num=24,
                                   rate_den=1, drop_frame=False, start_frame=0,
                                   start_timecode="00:00:00:00")
            s.add(ReviewJob(reel_id=reel.id, reason="SH010 v1 approved by anna"))
            s.flush()
            reel_id = reel.id
        postgres = db.engine.dialect.name == "postgresql"
        clock = func.now() if postgres else func.strftime("%Y-%m-%d %H:%M:%f", "now")

        def server_time(s: Any) -> dt.datetime:
            t = s.scalar(select(clock))
            return t if postgres else dt.datetime.fromisoformat(t)

        with db.session() as s:
            first = server_time(s)
            ids = review.claim_jobs(s, reel_id)
            review.finish_jobs(s, ids, error="OSError: [Errno 28] No space left on device")
            job = s.get(ReviewJob, ids[0])
            claimed, finished = job.claimed_at, job.finished_at
            last = server_time(s)
        if postgres:  # the transaction's now(), to the microsecond: the server's clock
            assert claimed == finished == first == last, (claimed, finished, first)
        else:  # SQLite keeps no zone, and its clock is the host's
            assert claimed.tzinfo is None and finished.tzinfo is None
            assert first <= claimed <= finished <= last
        with db.session() as s:
            job = s.get(ReviewJob, ids[0])
            due = review.retry_at(job)
            assert due == review._aware(job.finished_at) + dt.timedelta(
                seconds=review.RETRY_BACKOFF_S)
            assert review.retries(s) == {"R1": due}
            assert review.reels_to_apply(s) == {}  # not due yet, by the database's clock
            assert review.reels_to_apply(s, now=due) == {"R1": True}
            job.finished_at = due - dt.timedelta(days=1)  # failed a day ago: due now
        with db.session() as s:
            assert review.reels_to_apply(s) == {"R1": True}
    finally:
        db.dispose()


# ---------------------------------------------------------------- 7. the worker and a held reel


def test_the_worker_neither_blocks_nor_spins_on_a_reel_a_pass_holds(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed job's retry is due while a long pass holds its reel: the app's worker leaves
    the reel — it is free for other reels and pokes, not stuck waiting for the lock — and
    waits its interval (or a poke), not one second at a time; once the pass is over, a poke
    applies the job."""
    from flows.review import Applier

    monkeypatch.setattr(review, "RETRY_BACKOFF_S", 0.05)
    decide(("SH010", 1, "approved"), ("SH020", 1, "omitted"))
    with runtime.db().session() as s:
        reel_id = api.get_reel(s, REEL).id
    with runtime.db().session() as s:
        review.finish_jobs(s, review.claim_jobs(s, reel_id),
                           error="OSError: [Errno 28] No space left on device")
    time.sleep(0.1)  # the retry is due
    worker = Applier(interval=60.0)
    held = api.reel_lock(runtime.db(), REEL)
    held.__enter__()
    try:
        try:
            worker.start()
            deadline = time.monotonic() + 120
            while getattr(worker, "ticks", 0) < 1 and not worker.busy.locked():
                assert time.monotonic() < deadline, "the worker never ran"
                time.sleep(0.05)
            assert worker.busy.acquire(timeout=30), "the worker is stuck waiting for the reel"
            worker.busy.release()
            ticks = worker.ticks
            time.sleep(3.0)
            assert worker.ticks == ticks, f"the worker woke {worker.ticks - ticks} times in 3 s"
            assert worker._until_next() == 60.0
            assert [st for st, _ in jobs()] == ["queued", "queued"]
        finally:
            held.__exit__(None, None, None)  # the pass is over
        assert worker.idle(timeout=300), worker.last_error
        assert [st for st, _ in jobs()] == ["done", "done"]
        assert manifest_shots(home) == [("SH010", "delivered", 1), ("SH020", "omitted", None)]
    finally:
        worker.stop(timeout=300)


# ---------------------------------------------------------------- 8, 9. one line, no traceback


def test_a_failure_is_one_line_in_the_jobs_and_on_the_command_line(home: Path) -> None:
    """The re-conform fails with an error of many lines (the database refuses the conform's
    record: SQLAlchemy's message carries the statement and its parameters). Every job of the
    run fails with it — the reel's own work failed — folded into one bounded line, and
    `foley review apply` prints that line (exit 1) and the reel's, without Prefect's traceback
    of the failed run."""
    decide(("SH010", 1, "approved"), ("SH020", 1, "omitted"))
    with runtime.db().session() as s:
        s.execute(text("CREATE TRIGGER refuse_conform BEFORE INSERT ON activities WHEN "
                       "NEW.task = 'conform' BEGIN SELECT RAISE(ABORT, 'refused'); END"))
    out, said, behind = apply_fails(1)
    assert said.startswith(f"error: {REEL}: IntegrityError: (sqlite3.IntegrityError) refused "
                           "/ [SQL: INSERT INTO activities"), out.stderr
    assert behind.startswith(f"{REEL}: delivery behind 2 decisions: applying failed (attempt 1 "
                             "of "), out.stderr
    [(s1, e1), (s2, e2)] = jobs()
    assert (s1, s2) == ("queued", "queued") and e1 == e2, jobs()
    assert "\n" not in e1 and len(e1) <= 500, e1  # flows.review.ERROR_CHARS
    assert e1.startswith("IntegrityError: (sqlite3.IntegrityError) refused / [SQL: "), e1
