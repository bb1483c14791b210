"""What happens to a decision's work when applying it fails, and the review app's guards on
what it is sent.

The reel is the one tests/test_review.py analyses (a real pass, `--approve queue`); each test
works on its own copy of the home. The failures are real: a delivery folder on a file system
that is full (a 64 kB tmpfs mounted over it in a mount namespace of the `foley review apply`
process alone, so nothing outside that process sees it), a delivery folder that is a file, an
envelope whose category the library does not have, a database that refuses a write (an SQLite
trigger).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from db import api, review
from db.schema import ReviewJob
from tasks import ingest, runtime
from tests.test_review import (  # noqa: F401  (fixtures)
    REEL,
    SHOT,
    analysed,
    app,
    client_for,
    clients,
    csrf,
    foley,
    home,
    login,
)


def jobs() -> list[tuple[str, str | None]]:
    """(status, error) of every job, oldest first."""
    with runtime.db().session() as s:
        return [(j.status, j.error) for j in s.scalars(select(ReviewJob).order_by(ReviewJob.id))]


def decide(*decisions: tuple[str, int, str]) -> None:
    """anna's decisions (shot, version, decision), each leaving its job, as the app's would."""
    with runtime.db().session() as s:
        for shot, version, decision in decisions:
            review.take_decision(s, api.get_shot(s, REEL, shot), version=version,
                                 decision=decision, user=review.get_user(s, "anna"),
                                 comment="decided")


def manifest_shots(home: Path) -> list[tuple[str, str, int | None]]:
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    return [(sh["name"], sh["status"], (sh.get("envelope") or {}).get("version"))
            for sh in manifest["shots"]]


def on_a_full_disk(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`foley ARGS` with `folder` on a full file system: a 64 kB tmpfs mounted over it in a
    mount namespace of that process alone (it vanishes with the process)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to give one process a full file system")
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                            'mount -t tmpfs -o size=64k full "$0"', str(folder)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {probe.stderr.strip()}")
    return subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c",
         'mount -t tmpfs -o size=64k full "$0" && exec "$@"', str(folder),
         sys.executable, "-m", "flows.cli", *args],
        capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- failures of an apply run


def test_a_reconform_that_failed_on_a_full_disk_is_retried_and_delivered(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's case: the re-conform after two decisions fails on a full disk. The jobs
    go back to the queue with the error and the attempt counted, the failure is said by
    /healthz, `foley review list` and the queue page, and once the disk has room the app's
    worker retries them after their backoff and the approved shot is delivered."""
    from review.app import create_app

    (home / "delivery").mkdir(exist_ok=True)
    before = manifest_shots(home)
    decide(("SH010", 1, "approved"), ("SH020", 1, "omitted"))
    out = on_a_full_disk(home / "delivery", "review", "apply", REEL)
    assert out.returncode == 1, (out.stdout, out.stderr)
    full = f"DeliveryDiskError: delivery folder {home / 'delivery'}: no space left on device"
    assert out.stderr.startswith(f"error: {REEL}: {full}"), out.stderr  # one line: no Prefect
    # traceback above
    assert "Traceback" not in out.stderr
    assert f"{REEL}: delivery behind 2 decisions: applying failed (attempt 1 of " in out.stderr
    [(s1, e1), (s2, e2)] = jobs()
    assert (s1, s2) == ("queued", "queued")
    assert e1 == e2 and e1.startswith(full)
    assert manifest_shots(home) == before  # outside that process the folder was untouched

    with runtime.db().session() as s:  # not due before its backoff has passed …
        assert review.reels_to_apply(s) == {}
        [job] = review.pending_jobs(s)[:1]
        due = review.retry_at(job)
        assert due == job.finished_at.replace(tzinfo=dt.timezone.utc) + dt.timedelta(
            seconds=review.RETRY_BACKOFF_S)
        assert review.reels_to_apply(s, now=due) == {REEL: True}   # … then it is
        assert review.reels_to_apply(s, retry_failed=True) == {REEL: True}  # apply: at once

    listed = foley("review", "list", "--reel", REEL)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{REEL}: delivery behind 2 decisions: applying failed \(attempt 1 of "
                     r"\d+\): DeliveryDiskError: delivery folder .*: no space left on device.*; "
                     r"the review "
                     r"app's worker retries at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, or run "
                     rf"`foley review apply {REEL}`$", listed.stderr, re.M), listed.stderr

    monkeypatch.setattr(review, "RETRY_BACKOFF_S", 3600.0)
    waiting = create_app()  # its worker starts, and leaves the jobs to their backoff
    with TestClient(waiting) as c:
        login(c, "vi")
        health = c.get("/healthz").json()
        assert (health["pending_jobs"], health["failed_jobs"]) == (2, 0), health
        [behind] = health["deliveries_behind"]
        assert (behind["reel"], behind["status"], behind["attempts"], behind["decisions"]) == (
            REEL, "retrying", 1, 2)
        assert behind["error"].startswith(full)
        page = c.get("/", params={"status": "all"})
        assert f'data-reel="{REEL}" data-status="retrying"' in page.text
        assert "no space left on device" in page.text
        assert c.get("/api/queue").json()["deliveries_behind"] == [behind]
    assert [st for st, _ in jobs()] == ["queued", "queued"]  # not retried before its time

    monkeypatch.setattr(review, "RETRY_BACKOFF_S", 0.2)  # the disk has room again
    retrying = create_app()
    with TestClient(retrying) as c:
        assert retrying.state.applier.idle(timeout=300), retrying.state.applier.last_error
        login(c, "vi")
        health = c.get("/healthz").json()
    assert (health["pending_jobs"], health["failed_jobs"], health["deliveries_behind"]) == (
        0, 0, []), health
    assert [st for st, _ in jobs()] == ["done", "done"]
    assert manifest_shots(home) == [("SH010", "delivered", 1), ("SH020", "omitted", None)]


def test_a_refused_delivery_folder_fails_the_jobs_until_apply_is_run(home: Path) -> None:
    """Bad input a retry would meet again — the delivery folder is a file now — fails the
    decisions' jobs at once with the reason, and the worker leaves them (no retry loop); once
    the folder is back, `foley review apply REEL` applies them."""
    from review.app import create_app

    delivery = home / "delivery"
    delivery.mkdir(exist_ok=True)
    delivery.rename(home / "delivery.away")
    delivery.write_text("not a folder")
    app = create_app()
    with TestClient(app) as c:
        login(c, "anna")
        for shot, decision in (("SH010", "approved"), ("SH020", "omitted")):
            r = c.post(f"/api/reels/{REEL}/shots/{shot}/decision", headers=csrf(c),
                       json={"version": 1, "decision": decision})
            assert r.status_code == 200, r.text
        assert app.state.applier.idle(timeout=60), app.state.applier.last_error
        assert [st for st, _ in jobs()] == ["failed", "failed"], jobs()
        why = jobs()[0][1]
        assert why.startswith(f"DeliveryFolderError: delivery folder {delivery} "
                              "is a file, not a folder"), why
        app.state.applier.poke()  # another tick: nothing is retried
        assert app.state.applier.idle(timeout=60)
        assert [j for j in jobs()] == [("failed", why), ("failed", why)]
        health = c.get("/healthz").json()
        assert (health["pending_jobs"], health["failed_jobs"]) == (0, 2), health
        [behind] = health["deliveries_behind"]
        assert behind["status"] == "failed" and "is a file, not a folder" in behind["error"]
        assert behind["message"].endswith(f"once that is fixed, run `foley review apply {REEL}`")
        page = c.get("/", params={"status": "all"})
        assert f'data-reel="{REEL}" data-status="failed"' in page.text

    listed = foley("review", "list")
    assert f"{REEL}: delivery behind 2 decisions: applying failed and is not retried: " \
           f"DeliveryFolderError: delivery folder {delivery} is a file" in listed.stderr, \
        listed.stderr
    delivery.unlink()
    (home / "delivery.away").rename(delivery)
    applied = foley("review", "apply", REEL)
    assert applied.returncode == 0, applied.stderr
    assert f"re-conformed {REEL} into {delivery}" in applied.stdout
    assert [st for st, _ in jobs()] == ["done", "done"]
    assert manifest_shots(home) == [("SH010", "delivered", 1), ("SH020", "omitted", None)]
    assert foley("review", "apply", REEL).stdout.strip() == "no decisions waiting to be applied"


def test_an_envelope_that_cannot_be_synthesized_fails_its_jobs_for_good(home: Path) -> None:
    """An approved version whose category the library has no sound of: the run delivers the
    rest and fails the job of the decision on that shot, not to be retried by the worker,
    naming the shot and why (the other shot's job is done); a fixed version, approved,
    delivers and finishes it."""
    from flows.review import drain
    from tasks.decisions import load_envelope, save_version

    with runtime.db().session() as s:
        v1 = api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), v1.shot_id
    base = {k: doc[k] for k in ("shot", "rate_hz", "duration_s", "curve", "events", "prompt")}
    assert save_version(sid, {**base, "category": "no such category"}, source="edit",
                        derived_from=ref, created_by="user:ed", base_version=1)[0] == 2
    decide(("SH010", 2, "approved"), ("SH020", 1, "omitted"))
    [report] = drain()
    assert [name for name, _ in report.failed] == ["SH010"]
    assert [st for st, _ in jobs()] == ["failed", "done"]
    assert not report.retry
    assert jobs()[0][1].startswith("SH010: synth: no sounds of category 'no such "
                                   "category' in sound library ")
    with runtime.db().session() as s:
        assert review.reels_to_apply(s) == {}  # the worker leaves them
        [behind] = review.deliveries_behind(s)
    assert behind.status == "failed" and "no sounds of category" in behind.message()
    assert behind.decisions == 1
    assert drain() == []

    assert save_version(sid, base, source="edit", derived_from=ref, created_by="user:ed",
                        base_version=2)[0] == 3
    decide(("SH010", 3, "approved"))
    [report] = drain()
    assert report.conformed and not report.failed
    assert [st for st, _ in jobs()] == ["done", "done", "done"]
    assert manifest_shots(home) == [("SH010", "delivered", 3), ("SH020", "omitted", None)]


def test_retries_are_bounded_and_back_off(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's rules on the real database: a job that failed is queued again with its
    attempt counted and a doubling backoff until RETRY_ATTEMPTS runs failed; then, as after bad
    input, it is failed — left by the worker, taken by `foley review apply` (and by any run of
    its reel: one run serves every unfinished job of the reel)."""
    monkeypatch.setattr(review, "RETRY_ATTEMPTS", 3)
    decide(("SH010", 1, "approved"))
    with runtime.db().session() as s:
        reel_id = api.get_reel(s, REEL).id
    delays = []
    for attempt in (1, 2, 3):
        with runtime.db().session() as s:
            ids = review.claim_jobs(s, reel_id)
            assert ids and review.deliveries_behind(s)[0].status == "running"
            review.finish_jobs(s, ids, error="OSError: [Errno 28] No space left on device")
        with runtime.db().session() as s:
            [job] = s.scalars(select(ReviewJob)).all()
            assert job.error == "OSError: [Errno 28] No space left on device"
            assert review.job_attempts(job) == attempt
            if attempt < 3:
                assert job.status == "queued" and review.pending_jobs(s) == [job]
                delays.append((review.retry_at(job) - job.finished_at.replace(
                    tzinfo=dt.timezone.utc)).total_seconds())
            else:
                assert job.status == "failed" and review.retry_at(job) is None
                assert review.pending_jobs(s) == [] and review.failed_jobs(s) == [job]
                far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
                assert review.reels_to_apply(s, now=far) == {}
                assert review.reels_to_apply(s, retry_failed=True) == {REEL: True}
                [behind] = review.deliveries_behind(s)
                assert behind.message() == (
                    f"{REEL}: delivery behind 1 decision: applying failed after 3 attempts "
                    "and is not retried: OSError: [Errno 28] No space left on device — once "
                    f"that is fixed, run `foley review apply {REEL}`")
    assert delays == [review.RETRY_BACKOFF_S, 2 * review.RETRY_BACKOFF_S]
    with runtime.db().session() as s:  # bad input: failed at the first attempt
        d, job = review.take_decision(s, api.get_shot(s, REEL, "SH020"), version=1,
                                      decision="omitted", user=review.get_user(s, "anna"))
        new_id = job.id
    with runtime.db().session() as s:
        ids = review.claim_jobs(s, reel_id)
        assert len(ids) == 2  # the failed job too: this run serves it
        review.finish_jobs(s, ids, error="DeliveryFolderError: nope", retry=False)
    with runtime.db().session() as s:
        assert s.get(ReviewJob, new_id).status == "failed"
        assert s.get(ReviewJob, new_id).error == "DeliveryFolderError: nope"
        assert s.get(ReviewJob, new_id).attempts == 1
        review.finish_jobs(s, review.claim_jobs(s, reel_id))
    assert [st for st, _ in jobs()] == ["done", "done"]


# ---------------------------------------------------------------- what the app is sent


def test_a_request_body_over_the_limit_is_refused_unread(clients: dict[str, TestClient],
                                                          app: Any) -> None:
    """Every POST — edits, decisions, previews, the sign-in form — over 2 MB is refused with
    413 and a one-line JSON error, whether it says its length or not (chunked), and nothing of
    it is written."""
    ed, anna = clients["ed"], clients["anna"]
    shot = ed.get(SHOT).json()
    events = [{"t": 0.5, "strength": 0.5, "kind": "impact"}] * 60_000
    big = json.dumps({"base_version": 1, "envelope": {**shot["envelope"], "events": events},
                      "version": 1, "decision": "approved"}).encode()
    assert len(big) > 2 << 20  # the limit: 2 MB (review.app.MAX_BODY_BYTES)
    for who, path in ((ed, f"{SHOT}/versions"), (ed, f"{SHOT}/preview"),
                      (anna, f"{SHOT}/decision")):
        headers = {**csrf(who), "Content-Type": "application/json"}
        for body in (big, iter([big[i:i + 65536] for i in range(0, len(big), 65536)])):
            r = who.post(path, content=body, headers=headers)
            assert r.status_code == 413, (path, r.status_code, r.text[:200])
            assert ("content-length" in r.request.headers) == isinstance(body, bytes)
            assert r.json()["error"] == "too_large" and "\n" not in r.text, r.text
    form = b"username=anna&password=" + b"x" * (3 << 20)
    for body in (form, iter([form[i:i + 65536] for i in range(0, len(form), 65536)])):
        r = clients["anon"].post("/login", content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text[:200]
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        assert [(e.version, e.state) for e in review.versions(s, sh.id)] == [
            (1, "pending_review")]
        assert not review.pending_jobs(s)
    small = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                    json={"base_version": 1, "envelope": shot["envelope"]})
    assert small.status_code in (200, 201), small.text  # a body under the limit is taken


def test_a_comment_that_is_not_text_is_refused_before_anything_is_written(
        clients: dict[str, TestClient]) -> None:
    """An edit or a decision whose comment is not text (or is too long) is a 422 naming
    'comment', and leaves no version, decision, job or audit event; a text comment is the
    version's note."""
    ed, anna = clients["ed"], clients["anna"]
    env = ed.get(SHOT).json()["envelope"]
    moved = {**env, "events": [{**e, "strength": round(e["strength"] * 0.5, 3)}
                               for e in env["events"]]}
    for comment in (123, ["x"], {"a": 1}, True, "x" * 4001):  # db.review.COMMENT_MAX
        r = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                    json={"base_version": 1, "envelope": moved, "comment": comment})
        assert r.status_code == 422 and r.json()["field"] == "comment", r.text
        assert r.json()["detail"].startswith("'comment' "), r.text
        r = anna.post(f"{SHOT}/decision", headers=csrf(anna),
                      json={"version": 1, "decision": "retake_requested", "comment": comment})
        assert r.status_code == 422 and r.json()["field"] == "comment", r.text
    r = anna.post(f"{SHOT}/decision", headers=csrf(anna),
                  json={"version": 1, "decision": "approved", "expect_state": ["x"]})
    assert r.status_code == 422 and r.json()["field"] == "expect_state", r.text
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        assert [(e.version, e.state) for e in review.versions(s, sh.id)] == [
            (1, "pending_review")]
        assert not review.pending_jobs(s) and not review.failed_jobs(s)
        assert not [a for a in review.audit_trail(s) if a.action in ("edit",)
                    or a.action.startswith("decision:")]
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                json={"base_version": 1, "envelope": moved, "comment": "  softer hits  "})
    assert r.status_code == 201, r.text
    assert [v["comment"] for v in r.json()["versions"]] == [None, "softer hits"]


def test_an_edit_and_its_audit_event_are_written_together(app: Any, home: Path) -> None:
    """The edit's audit event (with its note) is written in the version's transaction: when
    the database refuses the event (as a crash between two transactions would lose it),
    there is no version either; when it takes it, both are there, the event naming the
    version."""
    ed = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    ed.__enter__()
    login(ed, "ed")
    env = ed.get(SHOT).json()["envelope"]
    moved = {**env, "events": env["events"][1:]}
    with runtime.db().session() as s:
        s.execute(text("CREATE TRIGGER refuse_edits BEFORE INSERT ON audit_events "
                       "WHEN NEW.action = 'edit' BEGIN SELECT RAISE(ABORT, 'refused'); END"))
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                json={"base_version": 1, "envelope": moved, "comment": "fewer hits"})
    assert r.status_code == 500
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        assert [e.version for e in review.versions(s, sh.id)] == [1]  # no version without it
        s.execute(text("DROP TRIGGER refuse_edits"))
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                json={"base_version": 1, "envelope": moved, "comment": "fewer hits"})
    assert r.status_code == 201 and r.json()["latest_version"] == 2, r.text
    assert r.json()["versions"][1]["comment"] == "fewer hits"
    with runtime.db().session() as s:
        [edit] = [a for a in review.audit_trail(s) if a.action == "edit"]
        assert (edit.actor, edit.reel, edit.shot, edit.version, edit.client) == (
            "user:ed", REEL, "SH010", 2, "testclient")
        assert edit.details == {"base_version": 1, "comment": "fewer hits",
                                "events": len(moved["events"])}
    ed.__exit__(None, None, None)


def test_a_plot_of_a_version_that_does_not_exist_is_404(clients: dict[str, TestClient]) -> None:
    vi = clients["vi"]
    plot = f"/reels/{REEL}/shots/SH010/plot.png"
    for query in ("?v=1", ""):
        r = vi.get(plot + query)
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    for query, status in (("?v=999", 404), ("?v=0", 404), ("?v=abc", 422), ("?v=1.5", 422),
                          ("?v=-1", 422)):
        r = vi.get(plot + query)
        assert r.status_code == status and r.headers["content-type"] == "application/json", (
            query, r.status_code, r.text[:200])


# ---------------------------------------------------------------- the shot page's timecode


def test_the_shot_page_timecode_is_the_queues(tmp_path: Path) -> None:
    """review/static/shot.js computes record timecodes in the browser with the arithmetic of
    tasks.ingest.timecode (which the queue and the command line use): run in Chromium, it gives
    the same text for frames across midnight (hours wrap at 24), drop-frame minutes and
    negative counts."""
    from tests.test_review_browser import CHROMIUM, CHROMIUM_ARGS, _browser_missing

    why = _browser_missing()
    if why:
        pytest.fail(f"cannot run the browser test: {why}")
    from playwright.sync_api import sync_playwright

    source = (Path(__file__).resolve().parents[1] / "review/static/shot.js").read_text()
    functions = [re.search(rf"\n  function {name}\(.*?\n  }}\n", source, re.S)
                 for name in ("timecode",)]
    pad = re.search(r"\n  function pad\(n\) \{.*?\}\n", source)
    assert all(functions) and pad, "timecode() or pad() not found in shot.js"
    js = "".join(m.group(0) for m in functions) + pad.group(0)
    cases = []
    for num, den, drop in ((24, 1, False), (25, 1, False), (24000, 1001, False),
                           (30000, 1001, True), (60000, 1001, True), (30, 1, False)):
        nominal = -(-num // den)
        day = nominal * 86400
        for frames in (0, 1, 1799, 1800, 17982, day - 1, day, day + 1, day + 10 * nominal,
                       2 * day + 123, -1, -nominal * 3601):
            cases.append([frames, num, den, drop])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            got = page.evaluate(f"(cases) => {{ {js}; return cases.map(c => timecode(...c)); }}",
                                cases)
        finally:
            browser.close()
    want = [ingest.timecode(*c) for c in cases]
    assert got == want, [(c, g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert "00:00:10:00" in got  # 23:59:50:00 + 20 s at 24 fps, as the queue shows it
