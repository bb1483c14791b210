"""The approval queue: rules in the data layer, the review app over HTTP, the CLI.

A two-shot reel is analysed once per module with `--approve queue` (real pass, real media);
each test works on its own copy of the resulting home, so decisions never leak between tests.
The app is the real FastAPI app (Starlette's TestClient drives it in-process over ASGI).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sqlalchemy import select

from db import api, review
from db.schema import ReviewJob
from flows.demo import DEMO_SHOTS, make_demo_reel
from flows.settings import get_settings
from models import motion_baseline
from review import auth
from tasks import runtime

REEL = "review_reel"
SHOTS = (DEMO_SHOTS[0], DEMO_SHOTS[3])  # SH010 bounces (wood), SH020 bounces under a pan
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Path:
    """A home where the pass analysed the reel and left both shots pending review."""
    from flows.foley_pass import foley_pass

    root = tmp_path_factory.mktemp("review-reel")
    edit = make_demo_reel(root / "edit", name=REEL, shots=SHOTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOLEY_HOME", str(root / "home"))
        mp.delenv("FOLEY_DB_URL", raising=False)
        mp.delenv("FOLEY_STORE_URL", raising=False)
        report = foley_pass(str(edit), str(root / "delivery"), approve="queue")
    assert [sh.status for sh in report.shots] == ["pending_review", "pending_review"]
    return root


@pytest.fixture
def home(analysed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the analysed home (database, store, delivery) with three users."""
    root = tmp_path / "reel"
    shutil.copytree(analysed, root, symlinks=True)
    db_path = root / "home" / "foley.db"
    monkeypatch.setenv("FOLEY_HOME", str(root / "home"))
    monkeypatch.delenv("FOLEY_DB_URL", raising=False)
    monkeypatch.delenv("FOLEY_STORE_URL", raising=False)
    monkeypatch.setenv("FOLEY_REVIEW_LOGIN_LIMIT", "3")
    get_settings().configure_runtime()
    assert runtime.db().url.endswith(str(db_path))
    with runtime.db().session() as s:
        reel = api.get_reel(s, REEL)
        reel.delivery_dir = str(root / "delivery")  # the copy delivers into its own folder
        for name, role in (("anna", "supervisor"), ("bo", "supervisor"), ("ed", "editor"),
                           ("vi", "viewer")):
            review.create_user(s, name, role, auth.hash_password(PASSWORD))
    return root


def client_for(app: Any, user: str | None) -> TestClient:
    c = TestClient(app, base_url="http://testserver")
    c.__enter__()
    if user is not None:
        login(c, user)
    return c


def login(c: TestClient, user: str, password: str = PASSWORD) -> Any:
    page = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return c.post("/login", data={"username": user, "password": password, "csrf_token": token,
                                  "next": "/"}, follow_redirects=False)


def csrf(c: TestClient) -> dict[str, str]:
    page = c.get("/")
    return {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)}


@pytest.fixture
def app(home: Path) -> Iterator[Any]:
    from review.app import create_app

    yield create_app(applier=False)


@pytest.fixture
def clients(app: Any) -> Iterator[dict[str, TestClient]]:
    made = {name: client_for(app, name) for name in ("anna", "bo", "ed", "vi")}
    made["anon"] = client_for(app, None)
    yield made
    for c in made.values():
        c.__exit__(None, None, None)


SHOT = f"/api/reels/{REEL}/shots/SH010"


# ---------------------------------------------------------------- the data layer


def test_synthesis_refuses_a_version_that_is_not_approved(home: Path) -> None:
    from tasks import synth

    with runtime.db().session() as s:
        sid = api.get_shot(s, REEL, "SH010").id
    with pytest.raises(api.NotApproved, match="SH010: latest envelope v1 is pending_review"):
        synth.synthesize.fn(sid, library="kit")


def test_a_decision_writes_its_audit_event_and_job_in_one_transaction(home: Path) -> None:
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        sid = sh.id
        review.take_decision(s, sh, version=1, decision="approved",
                             user=review.get_user(s, "anna"), comment="ok")
        s.rollback()  # the caller's transaction fails after the call: nothing of it remains
    with runtime.db().session() as s:
        assert api.latest_envelope(s, sid).state == "pending_review"
        assert not review.pending_jobs(s) and not review.audit_trail(s, shot="SH010")
        d, job = review.take_decision(s, api.get_shot(s, REEL, "SH010"), version=1,
                                      decision="approved", user=review.get_user(s, "anna"))
    with runtime.db().session() as s:
        assert [j.decision_id for j in review.pending_jobs(s)] == [d.id]
        assert [a.action for a in review.audit_trail(s, shot="SH010")] == ["decision:approved"]


def test_only_supervisors_decide_and_a_retake_needs_a_comment(home: Path) -> None:
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        with pytest.raises(review.Forbidden, match="ed is an editor; this needs a supervisor"):
            review.take_decision(s, sh, version=1, decision="approved",
                                 user=review.get_user(s, "ed"))
        with pytest.raises(review.ReviewError, match="needs a comment"):
            review.take_decision(s, sh, version=1, decision="retake_requested",
                                 user=review.get_user(s, "anna"), comment="  ")


def test_a_rerun_of_the_pass_never_buries_an_edit(home: Path) -> None:
    """The pass re-predicts the same envelope on a rerun: an edit made since stays latest. A
    different prediction (another estimator, a recut) goes over it, and says so, naming the
    edit; the edit stays in the history."""
    from tasks.decisions import Superseded, load_envelope, save_version, unreported

    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        v1 = api.latest_envelope(s, sh.id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), sh.id
    edited = {**doc, "events": doc["events"][1:]}
    assert save_version(sid, edited, source="edit", derived_from=ref, created_by="user:ed",
                        base_version=1)[0] == 2
    version, _ref, created = save_version(sid, doc, source="baseline", derived_from=ref,
                                          prediction=True)
    assert (version, created) == (2, False)  # the prediction the edit started from
    with runtime.db().session() as s:
        assert unreported(s, [sid]).notes == {}
    other = {**doc, "curve": [min(1.0, v * 2) for v in doc["curve"]]}
    version, _ref, created = save_version(sid, other, source="model", prediction=True)
    assert (version, created) == (3, True)
    with runtime.db().session() as s:
        over = unreported(s, [sid])
    assert over.notes == {sid: Superseded(REEL, "SH010", 2, "user:ed", "an edit", 3)}
    assert "v3 went over v2, an edit by user:ed" in over.notes[sid].message()
    with pytest.raises(review.StaleReview, match="v3 was saved .*after v1"):
        save_version(sid, {**doc, "prompt": "glass"}, source="edit", base_version=1)


# ---------------------------------------------------------------- reruns of the pass

BASELINE, MODEL = motion_baseline.SOURCE, "rms-mapper:tiny"


def rerun(home: Path, **options: Any) -> Any:
    """The pass again on the home's reel (its copy of the edit, into its delivery folder)."""
    from flows.foley_pass import foley_pass

    return foley_pass(str(home / "edit" / f"{REEL}.otio"), str(home / "delivery"), **options)


def versions_of(shot: str) -> list[tuple[int, str, str | None, str]]:
    """(version, source, the person who made it or None for the pass, state) of each version."""
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, shot)
        return [(e.version, e.source, s.get(api.Agent, e.created_by).name if e.created_by
                 else None, e.state) for e in review.versions(s, sh.id)]


def delivered_sources(home: Path) -> list[tuple[str, str, int]]:
    """(shot, source of its delivered envelope, its version) in the delivery's manifest."""
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    return [(sh["name"], json.loads((home / "delivery" / sh["envelope"]["uri"]).read_text())[
        "source"], sh["envelope"]["version"]) for sh in manifest["shots"]]


async def latest_artifact(key: str) -> Any:
    """The newest Prefect artifact under `key`, or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return found[0] if found else None


def test_switching_the_estimator_delivers_the_one_asked_for(home: Path) -> None:
    """baseline (v1) → model → baseline: each switch is a new version of its estimator's
    envelope, pending review as any new prediction, and the delivery sounds the estimator
    asked for last — although v1 had the same content. A rerun with the same estimator adds
    nothing."""
    rerun(home, approve="queue", envelope_estimator="model")
    for shot in ("SH010", "SH020"):
        assert versions_of(shot) == [(1, BASELINE, None, "pending_review"),
                                     (2, MODEL, None, "pending_review")]
    report = rerun(home, approve="auto", envelope_estimator="baseline")
    for shot in ("SH010", "SH020"):
        assert versions_of(shot)[-1] == (3, BASELINE, None, "approved")
    assert report.exit_code == 0 and not any(sh.note for sh in report.shots)
    assert delivered_sources(home) == [("SH010", BASELINE, 3), ("SH020", BASELINE, 3)]
    with runtime.db().session() as s:
        rows = review.versions(s, api.get_shot(s, REEL, "SH010").id)
        assert rows[2].content_sha256 == rows[0].content_sha256 and rows[2].parent_version == 2
        decisions = s.query(api.Decision).count()
    again = rerun(home, approve="auto", envelope_estimator="baseline")
    assert again.exit_code == 0
    assert [len(versions_of(shot)) for shot in ("SH010", "SH020")] == [3, 3]
    with runtime.db().session() as s:
        assert s.query(api.Decision).count() == decisions
    assert delivered_sources(home) == [("SH010", BASELINE, 3), ("SH020", BASELINE, 3)]


def test_a_new_prediction_over_a_persons_work_waits_for_a_supervisor(home: Path) -> None:
    """ed edits SH010. Reruns with --approve auto leave the edit latest and waiting for a
    supervisor (policy:auto decides only on predictions). The model's prediction goes over
    the edit, and over anna's approval of SH020's model version when the baseline is asked
    for again: each is said once for its shot, naming the work, and waits for a supervisor —
    the policy never decides on a shot a person has worked on (ed's SH010 stays a
    supervisor's after the pass's own v3 too); it approves over its own."""
    import asyncio

    from tasks.decisions import load_envelope, save_version

    with runtime.db().session() as s:
        v1 = api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), v1.shot_id
    save_version(sid, {**doc, "events": doc["events"][:1]}, source="edit", derived_from=ref,
                 created_by="user:ed", base_version=1)
    report = rerun(home, approve="auto")  # the same prediction as v1: nothing new to say
    assert versions_of("SH010") == [(1, BASELINE, None, "pending_review"),
                                    (2, "edit", "user:ed", "pending_review")]
    assert [(sh.name, sh.status, sh.note) for sh in report.shots] == [
        ("SH010", "pending_review", None), ("SH020", "pending", None)]  # SH020 delivered
    report = rerun(home, approve="auto", envelope_estimator="model")
    assert versions_of("SH010") == [(1, BASELINE, None, "pending_review"),
                                    (2, "edit", "user:ed", "pending_review"),
                                    (3, MODEL, None, "pending_review")]   # not the policy's
    assert versions_of("SH020")[-1] == (2, MODEL, None, "approved")     # over its own: yes
    [note] = [sh.note for sh in report.shots if sh.note]
    assert note.startswith("SH010: ") and "v3 went over v2, an edit by user:ed" in note
    assert f"foley review show {REEL} SH010" in note
    summary = asyncio.run(latest_artifact("review-reel-delivery")).data
    assert f"## New predictions over a person's work\n\n- {note}" in summary
    with runtime.db().session() as s:
        policy = [d.envelope.version for d in s.query(api.Decision)
                  if d.agent.name == "policy:auto" and d.envelope.shot_id == sid]
        assert policy == []
        review.take_decision(s, api.get_shot(s, REEL, "SH020"), version=2,
                             decision="approved", user=review.get_user(s, "anna"),
                             comment="the model's hits, good")
    report = rerun(home, approve="auto")   # the baseline again: over anna's approval
    assert versions_of("SH020")[-1] == (3, BASELINE, None, "pending_review")
    notes = {sh.name: sh.note for sh in report.shots if sh.note}
    assert "v3 went over v2, approved by user:anna" in notes["SH020"]
    assert "SH010" not in notes                       # v4 went over the pass's own v3 …
    assert versions_of("SH010")[-1] == (4, BASELINE, None, "pending_review")  # … ed's shot
    again = rerun(home, approve="auto")   # a rerun: nothing new, nothing said
    assert not any(sh.note for sh in again.shots)
    assert [versions_of(shot)[-1][0] for shot in ("SH010", "SH020")] == [4, 3]


def test_a_prediction_no_pass_reported_is_said_by_the_next(home: Path) -> None:
    """The model's prediction is saved over ed's edit by the envelope stage alone — as a shot
    run (scale-out) that finished after its pass stopped waiting leaves it, or a pass that
    aborted after its envelope wave: no pass said it. The next pass — a rerun that saves
    nothing new — says it, once; the one after says nothing."""
    from tasks.decisions import load_envelope, save_version
    from tasks.envelope import predict_envelope

    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        v1 = api.latest_envelope(s, sh.id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), v1.shot_id
        features = api.shot_outputs(s, "features", sid)["features"]
        duration, hint = sh.duration_s, sh.foley_hint
    save_version(sid, {**doc, "events": doc["events"][:1]}, source="edit", derived_from=ref,
                 created_by="user:ed", base_version=1)
    saved = predict_envelope.fn(sid, features, shot="SH010", duration_s=duration, prompt=hint,
                                estimator="model")
    assert (saved["version"], saved["created"]) == (3, True)              # saved, unsaid
    report = rerun(home, approve="auto", envelope_estimator="model")
    assert versions_of("SH010")[-1] == (3, MODEL, None, "pending_review")  # nothing new …
    notes = {sh.name: sh.note for sh in report.shots if sh.note}
    assert list(notes) == ["SH010"], notes                                 # … and it is said
    assert "v3 went over v2, an edit by user:ed" in notes["SH010"]
    again = rerun(home, approve="auto", envelope_estimator="model")
    assert not any(sh.note for sh in again.shots)


def test_the_threshold_doubts_a_model_envelope_that_dropped_every_candidate(
        home: Path, tmp_path: Path) -> None:
    """A checkpoint whose scorer keeps nothing: the envelopes have no events to fall under the
    threshold, but their doubt (the best score dropped) says how near the scorer came to
    keeping one — with --approve-threshold 0.9 they wait for a supervisor; the policy
    approves once the threshold allows that doubt, recording both."""
    from models import rms_mapper
    from tasks.decisions import auto_approve, load_envelope
    from tasks.envelope import CHECKPOINT

    model, config, meta = rms_mapper.load_checkpoint(CHECKPOINT)
    strict = {**meta["selection"], "thresholds": [[1.0, 1.01]] * len(
        meta["selection"]["thresholds"])}
    ckpt = tmp_path / "strict.safetensors"
    rms_mapper.save_checkpoint(model, config, ckpt, {**meta, "selection": strict})
    report = rerun(home, approve="auto", approve_threshold=0.9, envelope_estimator="model",
                   envelope_checkpoint=str(ckpt))
    assert [sh.status for sh in report.shots] == ["pending_review", "pending_review"]
    with runtime.db().session() as s:
        sid = api.get_shot(s, REEL, "SH010").id
        doc = load_envelope(api.latest_envelope(s, sid).artifact.ref())
        assert s.query(api.Decision).count() == 0
    assert doc["source"] == MODEL and doc["events"] == [] and doc["doubt"] > 0.1, doc
    assert auto_approve.fn(sid, threshold=0.9) == "pending_review"
    assert auto_approve.fn(sid, threshold=round(1 - doc["doubt"], 3)) == "approved"
    with runtime.db().session() as s:
        [decision] = s.query(api.Decision).all()
        assert decision.params == {"threshold": round(1 - doc["doubt"], 3), "events": 0,
                                   "lowest_confidence": None, "doubt": doc["doubt"]}


# ---------------------------------------------------------------- people and requests


def test_unauthenticated_requests_are_refused(clients: dict[str, TestClient]) -> None:
    anon = clients["anon"]
    assert anon.get(SHOT).status_code == 401
    assert anon.get(f"/media/{REEL}/SH010/proxy.mp4").status_code == 401
    assert anon.post(f"{SHOT}/decision", json={"version": 1, "decision": "approved"}
                     ).status_code == 401
    page = anon.get(f"/reels/{REEL}/shots/SH010", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/reels/")


def test_wrong_roles_are_refused_and_audited(clients: dict[str, TestClient]) -> None:
    body = {"version": 1, "decision": "approved"}
    for user in ("vi", "ed"):
        r = clients[user].post(f"{SHOT}/decision", json=body, headers=csrf(clients[user]))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    shot = clients["vi"].get(SHOT).json()
    r = clients["vi"].post(f"{SHOT}/versions", headers=csrf(clients["vi"]),
                           json={"base_version": 1, "envelope": shot["envelope"]})
    assert r.status_code == 403
    with runtime.db().session() as s:
        refused = [a for a in review.audit_trail(s) if a.action == "refused:role"]
        assert {a.actor for a in refused} == {"user:vi", "user:ed"}
        assert api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id).state == "pending_review"


def test_a_post_without_the_csrf_token_is_refused(clients: dict[str, TestClient]) -> None:
    anna = clients["anna"]
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        r = anna.post(f"{SHOT}/decision", json={"version": 1, "decision": "approved"},
                      headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "csrf"
    r = anna.post("/logout", data={"csrf_token": "forged"})
    assert r.status_code == 403
    with runtime.db().session() as s:
        assert api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id).state == "pending_review"
    # the sign-in form has its own token: a cross-site login attempt without it is refused
    anon = clients["anon"]
    r = anon.post("/login", data={"username": "anna", "password": PASSWORD, "csrf_token": "x"})
    assert r.status_code == 403


@pytest.mark.parametrize("path", [
    "/media/../../../etc/passwd",
    "/media/%2e%2e/%2e%2e/etc/passwd",
    f"/media/{REEL}/..%2F..%2F..%2Fetc%2Fpasswd/proxy.mp4",
    f"/media/{REEL}/SH010/..%2f..%2f..%2fetc%2fpasswd",
    "/media/..%2F..%2Fhome/SH010/proxy.mp4",
    "/static/../../etc/passwd",
    "/static/..%2F..%2F..%2Fetc%2Fpasswd",
])
def test_dot_dot_in_a_media_url_is_refused(clients: dict[str, TestClient], path: str) -> None:
    r = clients["anna"].get(path, follow_redirects=False)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "root:" not in r.text


def test_media_is_served_with_range_requests(clients: dict[str, TestClient]) -> None:
    anna = clients["anna"]
    whole = anna.get(f"/media/{REEL}/SH010/proxy.mp4")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers.get("accept-ranges") == "bytes"
    part = anna.get(f"/media/{REEL}/SH010/proxy.mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    bad = anna.get(f"/media/{REEL}/SH010/proxy.mp4",
                   headers={"Range": f"bytes={len(whole.content) + 10}-"})
    assert bad.status_code == 416
    plot = anna.get(f"/reels/{REEL}/shots/SH010/plot.png?v=1")  # what Prefect's image links
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_login_is_rate_limited_and_cookies_are_httponly(app: Any) -> None:
    c = client_for(app, None)
    ok = login(c, "anna")
    cookie = ok.headers["set-cookie"]
    assert ok.status_code == 303 and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace(
        "SameSite=Lax", "SameSite=lax")
    statuses = [login(client_for(app, None), "bo", "wrong password").status_code
                for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429, statuses  # limit 3
    # even the right password waits out the window now
    assert login(client_for(app, None), "bo").status_code == 429
    with runtime.db().session() as s:
        actions = [a.action for a in review.audit_trail(s)]
        assert actions.count("login:failed") == 3 and "login:limited" in actions


# ---------------------------------------------------------------- editing and deciding


def _moved(shot: dict[str, Any], dt_s: float) -> dict[str, Any]:
    """The envelope with its first event moved by dt_s, its bump of the curve moving with it
    as the shot page's editor moves it (review/static/shot.js `moveBump`: from 50 ms before the
    hit to 350 ms after, or 20 ms short of the next event; the old window bridged linearly)."""
    env = shot["envelope"]
    events = [dict(e) for e in env["events"]]
    curve = list(env["curve"])
    rate, t0 = env["rate_hz"], events[0]["t"]
    events[0]["t"] = round(t0 + dt_s, 3)
    post = min(0.35, events[1]["t"] - t0 - 0.02) if len(events) > 1 else 0.35
    pre_n, post_n = round(0.05 * rate), round(post * rate)
    i0, i1 = round(t0 * rate), round((t0 + dt_s) * rate)
    bump = {k: curve[i0 + k] for k in range(-pre_n, post_n + 1) if 0 <= i0 + k < len(curve)}
    lo, hi = max(i0 - pre_n - 1, 0), min(i0 + post_n + 1, len(curve) - 1)
    for i in range(lo + 1, hi):
        curve[i] = curve[lo] + (curve[hi] - curve[lo]) * (i - lo) / (hi - lo)
    for k, v in bump.items():
        if 0 <= i1 + k < len(curve):
            curve[i1 + k] = max(curve[i1 + k], v)
    return {"curve": curve, "events": events, "prompt": env["prompt"],
            "category": env.get("category")}


def test_two_supervisors_on_one_shot_the_second_gets_a_conflict(
        clients: dict[str, TestClient]) -> None:
    anna, bo = clients["anna"], clients["bo"]
    seen_by_anna, seen_by_bo = anna.get(SHOT).json(), bo.get(SHOT).json()
    r = anna.post(f"{SHOT}/versions", headers=csrf(anna),
                  json={"base_version": 1, "envelope": _moved(seen_by_anna, 0.2),
                        "comment": "first bounce later"})
    assert r.status_code == 201 and r.json()["latest_version"] == 2
    r = bo.post(f"{SHOT}/versions", headers=csrf(bo),
                json={"base_version": 1, "envelope": _moved(seen_by_bo, -0.1)})
    assert r.status_code == 409, r.text
    assert r.json()["latest_version"] == 2 and r.json()["latest_by"] == "user:anna"
    r = bo.post(f"{SHOT}/decision", headers=csrf(bo), json={"version": 1, "decision": "approved"})
    assert r.status_code == 409 and "v2" in r.json()["detail"]
    # both approve v2 having seen it pending: one wins, the other is told who decided
    r1 = anna.post(f"{SHOT}/decision", headers=csrf(anna),
                   json={"version": 2, "decision": "approved", "expect_state": "pending_review"})
    r2 = bo.post(f"{SHOT}/decision", headers=csrf(bo),
                 json={"version": 2, "decision": "omitted", "expect_state": "pending_review"})
    assert r1.status_code == 200 and r2.status_code == 409
    assert "approved now (by user:anna)" in r2.json()["detail"]
    with runtime.db().session() as s:
        sh = api.get_shot(s, REEL, "SH010")
        envs = review.versions(s, sh.id)
        assert [(e.version, e.state) for e in envs] == [(1, "pending_review"), (2, "approved")]
        assert [d.agent.name for e in envs for d in e.decisions] == ["user:anna"]
    # bo's edit was never lost on the client: saving it on top of v2 works
    r = bo.post(f"{SHOT}/versions", headers=csrf(bo),
                json={"base_version": 2, "envelope": _moved(seen_by_bo, -0.1)})
    assert r.status_code == 201 and r.json()["latest_version"] == 3
    assert r.json()["state"] == "pending_review"


def test_an_invalid_edit_names_the_field(clients: dict[str, TestClient]) -> None:
    ed = clients["ed"]
    shot = ed.get(SHOT).json()
    env = _moved(shot, 0.0)
    env["events"][0]["t"] = 99.0
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed), json={"base_version": 1, "envelope": env})
    assert r.status_code == 422 and "at t=99.0 lies outside the shot" in r.json()["detail"]
    env = _moved(shot, 0.0)
    env["curve"] = env["curve"][:-3]
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed), json={"base_version": 1, "envelope": env})
    assert r.status_code == 422 and "curve has" in r.json()["detail"]


def test_a_position_set_in_review_is_where_the_delivered_foa_puts_the_sound(
        clients: dict[str, TestClient], home: Path) -> None:
    """An editor fixes SH010's azimuth and distance (a new version, like any edit), a bad value is
    refused naming the field; once decided, the re-conformed FOA carries the sound from there."""
    from flows.eval_spatial import evaluate_delivery
    from flows.review import apply_decisions

    ed, anna = clients["ed"], clients["anna"]
    env = ed.get(SHOT).json()["envelope"]
    assert env["position"] is None
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed),
                json={"base_version": 1, "envelope": {**env, "position": {"azimuth_deg": 200}}})
    assert r.status_code == 422 and "position azimuth_deg=200 outside" in r.json()["detail"]
    r = ed.post(f"{SHOT}/versions", headers=csrf(ed), json={
        "base_version": 1, "envelope": {**env, "position": {"azimuth_deg": -25, "distance_m": 4}}})
    assert r.status_code == 201 and r.json()["latest_version"] == 2
    assert r.json()["envelope"]["position"] == {"azimuth_deg": -25.0, "distance_m": 4.0}
    for shot, decision, version in (("SH010", "approved", 2), ("SH020", "omitted", 1)):
        r = anna.post(f"/api/reels/{REEL}/shots/{shot}/decision", headers=csrf(anna),
                      json={"version": version, "decision": decision, "comment": "placed"})
        assert r.status_code == 200, r.text
    assert apply_decisions(REEL, reason="placed").conformed
    report = evaluate_delivery(home / "delivery")
    events = [e for e in report["events"] if e["shot"] == "SH010"]
    assert events and all(e["intended_az"] == -25.0 for e in events)
    assert max(e["error_deg"] for e in events) < 2.0, events
    assert report["summary"]["w_vs_mono_ok"]


@pytest.mark.parametrize("backend", ["sampler", "diffusion"])
def test_preview_and_ab_audio_render_the_edit(clients: dict[str, TestClient],
                                              backend: str) -> None:
    """Preview and A/B audio come from the backend the reel was passed with (the diffusion
    one through its envelope follow stage, as delivered), and a moved event moves the hit."""
    import io

    import numpy as np
    import soundfile as sf

    from models.audio_env import detect_onsets

    with runtime.db().session() as s:  # as if the pass had run with --backend diffusion
        reel = api.get_reel(s, REEL)
        reel.pass_params = {**(reel.pass_params or {}), "backend": backend}
    ed = clients["ed"]
    shot = ed.get(SHOT).json()
    env = _moved(shot, 0.5)
    r = ed.post(f"{SHOT}/preview", headers=csrf(ed), json={"envelope": env})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    edit, sr = sf.read(io.BytesIO(r.content))
    v1, _ = sf.read(io.BytesIO(ed.get(f"{SHOT}/versions/1/audio").content))
    assert sr == 48000 and edit.shape == v1.shape and edit.shape[1] == 2
    t0 = shot["envelope"]["events"][0]["t"]

    def near(x: np.ndarray, t: float) -> bool:
        return bool(np.any(np.abs(detect_onsets(x[:, 0], sr) - t) < 0.015))

    assert near(v1, t0) and not near(v1, t0 + 0.5)
    assert near(edit, t0 + 0.5) and not near(edit, t0)  # the hit moved with the event
    from tasks import synth

    with runtime.db().session() as s:
        sh = next(x for x in api.get_reel(s, REEL).shots if x.name == "SH010")
        library, shot_id = (sh.reel.pass_params or {}).get("library"), sh.id
    other = "diffusion" if backend == "sampler" else "sampler"
    assert not np.allclose(v1[:, 0], synth.preview(shot_id, shot["envelope"], library=library
                                                   or get_settings().library, backend=other),
                           atol=1e-3)  # the backend is not ignored


def test_decisions_survive_a_restart_of_the_app_and_the_flow(home: Path) -> None:
    """A decision taken just before the app dies is not lost: its job waits in the database and
    the next app's worker applies it (synthesis + re-conform) when it starts."""
    from review.app import create_app

    first = create_app(applier=False)  # this app dies before it applies anything
    with TestClient(first) as c:
        login(c, "anna")
        cookie = c.cookies.get(auth.SESSION_COOKIE)
        for shot in ("SH010", "SH020"):
            r = c.post(f"/api/reels/{REEL}/shots/{shot}/decision", headers=csrf(c),
                       json={"version": 1, "decision": "approved"})
            assert r.status_code == 200
    with runtime.db().session() as s:
        assert len(review.pending_jobs(s)) == 2
    second = create_app()
    with TestClient(second) as c:
        c.cookies.set(auth.SESSION_COOKIE, cookie)  # the session survived too
        assert c.get(SHOT).json()["state"] == "approved"
        assert second.state.applier.idle(timeout=300), second.state.applier.last_error
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["shots"]] == ["delivered", "delivered"]
    with runtime.db().session() as s:
        assert not review.pending_jobs(s)


# ---------------------------------------------------------------- the command line


def foley(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, input=stdin, timeout=600)


def test_cli_lists_shows_and_decides_with_the_same_rules(home: Path) -> None:
    listed = foley("review", "list", "--reel", REEL, "--status", "pending_review", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["shot"], r["state"], r["version"]) for r in rows] == [
        ("SH010", "pending_review", 1), ("SH020", "pending_review", 1)]
    assert rows[0]["record_in"] == "01:00:00:00"
    shown = foley("review", "show", REEL, "SH010")
    assert shown.returncode == 0 and "v1 pending_review" in shown.stdout
    assert re.search(r"01:00:0\d:\d\d  impact", shown.stdout), shown.stdout
    refused = foley("review", "approve", REEL, "SH010", "--by", "ed")
    assert refused.returncode == 2 and "ed is an editor; this needs a supervisor" in refused.stderr
    unknown = foley("review", "approve", REEL, "SH404", "--by", "anna")
    assert unknown.returncode == 2 and "no shot 'SH404'" in unknown.stderr
    retake = foley("review", "retake", REEL, "SH020", "--by", "anna")
    assert retake.returncode == 2 and "needs a comment" in retake.stderr
    ok = foley("review", "approve", REEL, "SH010", "--by", "anna", "-m", "good")
    assert ok.returncode == 0, ok.stderr
    assert "waiting for review: SH020 (pending_review)" in ok.stdout
    ok = foley("review", "omit", REEL, "SH020", "--by", "anna", "-m", "no Foley here")
    assert ok.returncode == 0, ok.stderr
    assert f"re-conformed {REEL} into {home / 'delivery'}" in ok.stdout
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    assert [(s["name"], s["status"]) for s in manifest["shots"]] == [
        ("SH010", "delivered"), ("SH020", "omitted")]
    # a change of mind: SH020 approved after all, then omitted again — the re-conform takes
    # its stems out of the delivery (no stale file is left to be imported by mistake)
    ok = foley("review", "approve", REEL, "SH020", "--by", "bo")
    assert ok.returncode == 0 and "re-conformed" in ok.stdout, ok.stderr
    stems = sorted((home / "delivery" / "shots" / "SH020").glob("*.wav"))
    assert len(stems) == 5  # mono, stereo, FOA, 5.1, binaural
    ok = foley("review", "omit", REEL, "SH020", "--by", "anna", "-m", "cut in the mix")
    assert ok.returncode == 0 and "re-conformed" in ok.stdout, ok.stderr
    assert not any(p.exists() for p in stems)
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    assert all(not f.startswith("shots/SH020/") for f in manifest["files"])
    assert all((home / "delivery" / f).is_file() for f in manifest["files"])
    with runtime.db().session() as s:
        decided = [(a.actor, a.action, a.details["via"]) for a in review.audit_trail(s)
                   if a.action.startswith("decision:")]
    assert decided == [("user:anna", "decision:omitted", "cli"),
                       ("user:bo", "decision:approved", "cli"),
                       ("user:anna", "decision:omitted", "cli"),
                       ("user:anna", "decision:approved", "cli")]


def test_confidence_and_doubt_are_listed_shown_and_published(home: Path) -> None:
    """`foley review list` (text and --json) gives each shot's lowest event confidence and the
    model's doubt (– / null for an envelope without one), `foley review show` each event's
    confidence, and the Prefect queue artifact both."""
    import asyncio

    from flows.review import apply_decisions
    from tasks.decisions import load_envelope, save_version

    docs = {}
    with runtime.db().session() as s:
        for shot in ("SH010", "SH020"):
            env = api.latest_envelope(s, api.get_shot(s, REEL, shot).id)
            docs[shot] = (load_envelope(env.artifact.ref()), env.shot_id)
    doc, sid = docs["SH020"]
    weighed = {**doc, "events": doc["events"][1:], "doubt": 0.25}  # as the model's carry it
    assert save_version(sid, weighed, source=MODEL)[0] == 2

    def lowest(env: dict[str, Any]) -> float:
        return round(min(e["confidence"] for e in env["events"]), 3)

    listed = foley("review", "list", "--reel", REEL, "--json")
    assert listed.returncode == 0, listed.stderr
    n = {"SH010": len(docs["SH010"][0]["events"]), "SH020": len(weighed["events"])}
    assert [(r["shot"], r["version"], r["events"], r["confidence"], r["doubt"]) for r in
            json.loads(listed.stdout)] == [
        ("SH010", 1, n["SH010"], lowest(docs["SH010"][0]), None),
        ("SH020", 2, n["SH020"], lowest(weighed), 0.25)]
    text = foley("review", "list", "--reel", REEL).stdout.splitlines()
    assert text[0].endswith(f"\t{n['SH010']} events\tconfidence "
                            f"{lowest(docs['SH010'][0]):.2f}\tdoubt –"), text
    assert text[1].endswith(f"\t{n['SH020']} events\tconfidence {lowest(weighed):.2f}"
                            "\tdoubt 0.25"), text
    shown = foley("review", "show", REEL, "SH020")
    assert "doubt 0.25" in shown.stdout, shown.stdout
    lines = [ln for ln in shown.stdout.splitlines() if " strength " in ln]
    assert len(lines) == len(weighed["events"]) and all(
        ln.endswith(f"  confidence {e['confidence']:.2f}")
        for ln, e in zip(lines, weighed["events"])), shown.stdout

    apply_decisions(REEL, reason="the queue, published")  # nothing to apply: publishes it
    queue_md = asyncio.run(latest_artifact("review-reel-review")).data
    assert "| version | lowest confidence | doubt |" in queue_md
    assert f"| v1 | {lowest(docs['SH010'][0]):.2f} | – |" in queue_md, queue_md
    assert f"| v2 | {lowest(weighed):.2f} | 0.25 |" in queue_md, queue_md


def test_the_queue_is_read_from_the_database_alone(app: Any, home: Path) -> None:
    """Each version's summary (events, lowest confidence, doubt) is stored with its row when
    it is saved, so the queue is one query and answers with the envelope files gone: `foley
    review list`, the queue page, `/api/queue` and the Prefect queue artifact. A version saved
    before migration 0005 (no summary) is read from its file once, on the first queue, and its
    row filled; with its file gone that is one line naming the store, exit 1."""
    import asyncio

    from sqlalchemy import event, update

    from flows.review import apply_decisions
    from tasks.decisions import load_envelope, summary_of

    with runtime.db().session() as s:
        envs = {sh: api.latest_envelope(s, api.get_shot(s, REEL, sh).id)
                for sh in ("SH010", "SH020")}
        want = {sh: summary_of(load_envelope(e.artifact.ref())) for sh, e in envs.items()}
        assert all((e.events, e.confidence, e.doubt) == tuple(want[sh].values())
                   for sh, e in envs.items())
        old_id = envs["SH010"].id
        s.execute(update(api.Envelope).where(api.Envelope.id == old_id)
                  .values(events=None, confidence=None, doubt=None))   # as saved before 0005
    files = [runtime.store().local_path(e.artifact.ref()) for e in envs.values()]

    def hide() -> None:   # the envelope files gone from the store, as with a store away
        for f in files:
            f.rename(f.with_name(f.name + ".away"))

    def restore() -> None:
        for f in files:
            f.with_name(f.name + ".away").rename(f)

    def listed() -> dict[str, tuple[Any, ...]]:
        out = foley("review", "list", "--reel", REEL, "--json")
        assert out.returncode == 0, out.stderr
        return {r["shot"]: (r["events"], r["confidence"], r["doubt"])
                for r in json.loads(out.stdout)}

    def rounded(sh: str) -> tuple[Any, ...]:
        w = want[sh]
        return (w["events"], round(w["confidence"], 3), w["doubt"])

    hide()
    try:  # the old version needs its file: one clear error, exit 1, no traceback
        failed = foley("review", "list", "--reel", REEL)
        lines = [ln for ln in failed.stderr.splitlines() if ln.strip()]
        assert failed.returncode == 1 and len(lines) == 1, failed.stderr
        assert lines[0].startswith("error: artifact store: artifact "), failed.stderr
    finally:
        restore()
    assert listed() == {sh: rounded(sh) for sh in envs}        # read once, row filled
    with runtime.db().session() as s:
        e = s.get(api.Envelope, old_id)
        assert (e.events, e.confidence, e.doubt) == tuple(want["SH010"].values())
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            statements.append(statement)

        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(review.queue(s, reel=REEL)) == 2
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements                     # one query, whatever the shots
    hide()
    try:   # no store needed now: the command line, the app's page and API, the artifact
        assert listed() == {sh: rounded(sh) for sh in envs}
        c = client_for(app, "vi")
        rows = c.get("/api/queue", params={"reel": REEL}).json()["rows"]
        assert {r["shot"]: (r["events"], r["confidence"], r["doubt"]) for r in rows} == \
            {sh: rounded(sh) for sh in envs}
        page = c.get("/", params={"reel": REEL, "status": "all"})
        assert page.status_code == 200 and ">Doubt</th>" in page.text
        assert page.text.count(f'{rounded("SH010")[1]:.2f}</td>') >= 1
        apply_decisions(REEL, reason="the queue, published")  # nothing to apply: publishes
        queue_md = asyncio.run(latest_artifact("review-reel-review")).data
        assert f"| v1 | {rounded('SH010')[1]:.2f} | – |" in queue_md, queue_md
    finally:
        restore()


def test_a_database_that_is_away_is_one_line_naming_it(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`foley review list / show / approve` with the database down: one line naming the
    database (password hidden) and what to do, exit 1, no traceback."""
    import socket

    with socket.socket() as sock:   # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FOLEY_DB_URL", f"postgresql://foley:s3cret@127.0.0.1:{port}/foley")
    for args in (("list",), ("show", REEL, "SH010"), ("approve", REEL, "SH010", "--by", "anna")):
        out = foley("review", *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(
            f"error: the provenance database postgresql://foley:***@127.0.0.1:{port}/foley "
            "cannot be used: ") and "server is running and reachable" in lines[0], (
            args, out.stderr)
        assert "s3cret" not in out.stderr + out.stdout


def test_only_a_service_in_trouble_is_one_line(tmp_path: Path) -> None:
    """`service_error` names the database or store when it is theirs — a file that cannot be
    opened, an artifact missing, a database that stayed away, whatever wraps it — and leaves a
    bug its traceback: SQL errors (SQLite calls a missing column an OperationalError),
    constraint violations, an error raised `from None` while handling a store error."""
    import sqlalchemy as sa

    from db.engine import DatabaseUnavailable
    from flows.cli import service_error
    from tasks.store import StoreError

    def raised(fn: Any) -> BaseException:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - what the command would see
            return exc
        raise AssertionError("nothing raised")

    ok = sa.create_engine(f"sqlite:///{tmp_path / 'ok.db'}")
    with ok.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    def run(sql: str, engine: Any = ok) -> Any:
        return lambda: engine.connect().exec_driver_sql(sql)

    gone = sa.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}")
    said = service_error(raised(run("SELECT 1", gone)), db_url=str(gone.url))
    assert said and said.startswith(f"the provenance database {gone.url} cannot be used: "
                                    "unable to open database file"), said

    def wrapped() -> None:
        try:
            raise StoreError("artifact 0123456789ab is missing from the store (/x)")
        except StoreError as exc:
            raise RuntimeError("the stage failed") from exc
    assert service_error(raised(wrapped)).startswith("artifact store: artifact 0123456789ab")
    away = _chained(DatabaseUnavailable("the provenance database x did not answer"))
    assert service_error(away) == "the provenance database x did not answer"

    def hidden() -> None:
        try:
            raise StoreError("gone")
        except StoreError:
            raise ValueError("bad argument") from None
    for bug in (raised(run("SELECT nosuch FROM t")), raised(run("SELEC 1")),
                raised(run("INSERT INTO t VALUES (1)")), raised(hidden), ValueError("x")):
        assert service_error(bug) is None, bug


def _chained(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("the flow run crashed") from exc
    except RuntimeError as outer:
        return outer


def test_an_apply_killed_mid_way_is_finished_by_the_app(home: Path) -> None:
    """`foley review approve` SIGKILLed while its apply run holds the job: the job stays
    claimed by a dead process; the review app's worker takes it over and delivers."""
    import os
    import signal
    import time

    from review.app import create_app

    foley("review", "omit", REEL, "SH020", "--by", "anna", "-m", "x", "--no-apply")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "review", "approve", REEL,
                             "SH010", "--by", "anna"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:  # until the apply run has claimed the jobs
        with runtime.db().session() as s:
            states = [j.status for j in review.pending_jobs(s)]
        if states and all(st == "running" for st in states):
            break
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the apply run never claimed its jobs"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its Prefect server, as a crash would
    proc.wait()
    with runtime.db().session() as s:
        assert [j.status for j in review.pending_jobs(s)] == ["running", "running"]
    app = create_app()
    with TestClient(app):
        assert app.state.applier.idle(timeout=300), app.state.applier.last_error
    manifest = json.loads((home / "delivery" / "manifest.json").read_text())
    assert [(s["name"], s["status"]) for s in manifest["shots"]] == [
        ("SH010", "delivered"), ("SH020", "omitted")]
    with runtime.db().session() as s:
        assert not review.pending_jobs(s)
        runs = {j.prefect_flow_run_id for j in s.scalars(select(ReviewJob))}
        assert len(runs) == 1 and None not in runs  # taken over, by one run, recorded


def test_the_queue_is_published_in_the_prefect_ui(home: Path) -> None:
    """The apply run leaves the reel's queue as a markdown artifact with review links, and each
    waiting shot's envelope plot as an image artifact pointing at the review app."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.review import apply_decisions

    with runtime.db().session() as s:
        review.take_decision(s, api.get_shot(s, REEL, "SH010"), version=1,
                             decision="approved", user=review.get_user(s, "anna"))
    report = apply_decisions(REEL, reason="SH010 v1 approved by anna")
    assert report.synthesized == ["SH010"] and not report.conformed
    assert report.waiting == [("SH020", "pending_review")]

    async def latest(key: str) -> Any:
        async with get_client() as client:
            found = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return found[0] if found else None

    queue_md = asyncio.run(latest("review-reel-review"))
    assert queue_md is not None and "| SH020 | 01:00:03:12 | pending review | v1 |" in (
        queue_md.data), queue_md
    assert "http://127.0.0.1:8765/reels/review_reel/shots/SH020" in queue_md.data
    plot = asyncio.run(latest("review-reel-sh020-envelope"))
    assert plot is not None and plot.type == "image"
    assert plot.data.endswith("/reels/review_reel/shots/SH020/plot.png?v=1")
