"""The overnight pass in-process: inbox scan, once-per-version claims, the morning summary and
its webhook, a transient shot failure retried on its own.

The nightly flow runs against Prefect's test server (`prefect_harness`) on tiny real reels
(rendered scenes, real ffmpeg, real SQLite and artifact folder); the webhook is a real HTTP
server on loopback. The deployment + worker version is tests/test_nightly_worker.py.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from db import inbox as inbox_db
from flows import inbox
from flows.artifacts import artifact_key
from flows.demo import DemoShot, make_demo_reel
from models.scenes import SceneSpec
from tasks import runtime

SHOTS = (
    DemoShot("bounce_24.mp4", SceneSpec("bounce", fps=24, duration_s=1.4, seed=1), 0.2, 1.0,
             "impacts wood"),
    DemoShot("steps_25.mp4", SceneSpec("steps", fps=25, duration_s=1.4, seed=2), 0.2, 1.0,
             "footsteps gravel"),
)
DAY = 24 * 3600
B = "scène 12"  # the second reel: a name no artifact key or markdown may take as it is


def age(folder: Path, seconds: float) -> None:
    """Make every file under `folder` look `seconds` old (landed earlier in the day)."""
    stamp = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (stamp, stamp))


@pytest.fixture(scope="module")
def reels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two reels rendered once per module; tests copy them into their inbox."""
    root = tmp_path_factory.mktemp("nightly-reels")
    for name in ("reel_a", B):
        make_demo_reel(root / name, name=name, shots=SHOTS)
    return root


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver: keeps every JSON body POSTed to it."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token", Hook.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def night(tmp_path: Path, reels: Path, foley_home: Path,
          monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inbox with both reels (landed hours ago), a half-copied third and an unreadable edit."""
    box = tmp_path / "inbox"
    for name in ("reel_a", B):
        shutil.copytree(reels / name, box / name)
    (box / "broken").mkdir()
    (box / "broken" / "broken.otio").write_text("{ not an edit")
    age(box, 3600)
    shutil.copytree(reels / "reel_a", box / "reel_c_copying")  # still being copied: fresh
    monkeypatch.setenv("FOLEY_INBOX", str(box))
    monkeypatch.setenv("FOLEY_INBOX_SETTLE_S", "600")
    monkeypatch.setenv("FOLEY_DELIVERIES", str(tmp_path / "deliveries"))
    return box


def test_scan_versions_settling_and_unreadable(night: Path, foley_home: Path) -> None:
    found = inbox.scan(str(night), settle_s=600, home=foley_home)
    assert [a.path for a in found.ready] == ["reel_a/reel_a.otio", f"{B}/{B}.otio"]
    assert [p for p, _ in found.settling] == ["reel_c_copying/reel_a.otio"]
    assert [p for p, _ in found.unreadable] == ["broken/broken.otio"]
    a = found.ready[0]
    assert (a.reel, a.shots, a.media_files) == ("reel_a", 2, 2)
    again = inbox.scan(str(night), settle_s=600, home=foley_home)
    assert [x.content_sha256 for x in again.ready] == [x.content_sha256 for x in found.ready]
    # a re-rendered shot is a new version of the reel; the other reel is untouched
    media = night / "reel_a" / "media" / "steps_25.mp4"
    media.write_bytes(media.read_bytes() + b"\0")
    age(night / "reel_a", 3600)
    changed = inbox.scan(str(night), settle_s=600, home=foley_home)
    assert changed.ready[0].content_sha256 != a.content_sha256
    assert changed.ready[1].content_sha256 == found.ready[1].content_sha256


def test_a_version_is_claimed_once(foley_home: Path) -> None:
    db = runtime.db()
    key = {"inbox": "/in", "path": "r/r.otio", "content_sha256": "ab" * 32}
    with inbox_db.claim(db, worker="w1", **key) as first:
        assert first is not None and first.attempts == 1
        with inbox_db.claim(db, worker="w2", **key) as second:
            assert second is None  # held by the first: another trigger skips it
    # the first one died without finishing: the next claim takes it over
    with inbox_db.claim(db, worker="w2", **key) as again:
        assert again is not None and again.taken_over and again.attempts == 2
        inbox_db.finish(db, again.id, status="done", reel="r")
    with inbox_db.claim(db, worker="w3", **key) as done:
        assert done is None
    [row] = inbox_db.history(db, "/in")
    assert (row.status, row.attempts, row.worker) == ("done", 2, "w2")


def test_nightly_passes_new_reels_once_and_summarises(
        night: Path, tmp_path: Path, prefect_harness: None,
        webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from flows.nightly import SUMMARY_KEY, nightly

    url, received = webhook
    monkeypatch.setenv("FOLEY_WEBHOOK_URL", url)
    first = nightly()
    assert [(r["path"], r["status"]) for r in first["reels"]] == [
        ("broken/broken.otio", "rejected"), ("reel_a/reel_a.otio", "done"),
        (f"{B}/{B}.otio", "done")]
    for reel in ("reel_a", B):
        manifest = json.loads((tmp_path / "deliveries" / reel / "manifest.json").read_text())
        assert [s["status"] for s in manifest["shots"]] == ["pending_review"] * 2  # queue
    assert first["settling"][0][0] == "reel_c_copying/reel_a.otio"
    assert first["webhook"] == "HTTP 204"
    [hook] = received
    assert hook["totals"]["pending_review"] == 4 and hook["totals"]["shots"] == 4
    assert "reel_a" in hook["text"] and "waiting for review" in hook["text"]

    with get_client(sync_client=True) as client:
        summary = client.read_latest_artifacts(limit=50)
    [art] = [a for a in summary if a.key == SUMMARY_KEY]
    assert "**4 waiting for review**" in art.data and "broken/broken.otio" in art.data
    assert "/?reel=reel_a&status=all" in art.data
    assert f"[{B}](" in art.data and "/?reel=sc%C3%A8ne%2012&status=all" in art.data
    keys = {a.key for a in summary}  # the pass's and the queue's artifacts of scène 12 too
    assert {f"{artifact_key(B)}-{kind}" for kind in ("shots", "delivery", "review")} <= keys

    rows = inbox_db.history(runtime.db(), str(night))
    second = nightly()  # nothing new: nothing passed again, nothing claimed again
    assert second["reels"] == [] and second["unchanged"] == 3
    assert [(r.id, r.status, r.attempts) for r in inbox_db.history(runtime.db(), str(night))] \
        == [(r.id, r.status, r.attempts) for r in rows]
    assert len(received) == 2 and received[1]["totals"]["shots"] == 0


def test_a_webhook_that_fails_never_fails_the_night(
        night: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.nightly import nightly

    shutil.rmtree(night / B)
    shutil.rmtree(night / "broken")
    from tests.service_pg import free_port

    monkeypatch.setenv("FOLEY_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")  # nobody
    result = nightly()
    assert [r["status"] for r in result["reels"]] == ["done"]
    assert result["webhook"] == "failed: ConnectError"


def test_an_s3_inbox_is_mirrored_and_versioned_like_a_folder(
        reels: Path, tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from flows.settings import get_settings

    bucket = f"inbox-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    client.make_bucket(bucket)
    for p in sorted((reels / "reel_a").rglob("*")):
        if p.is_file():
            client.fput_object(bucket, f"landing/reel_a/{p.relative_to(reels / 'reel_a')}",
                               str(p))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    home = tmp_path / "home"
    s3 = get_settings().s3_connection()
    url = f"s3://{bucket}/landing"
    assert [p for p, _ in inbox.scan(url, settle_s=600, home=home, s3=s3).settling] == [
        "reel_a/reel_a.otio"]  # just uploaded: settling
    found = inbox.scan(url, settle_s=0, home=home, s3=s3)
    [a] = found.ready
    assert (a.path, a.reel, a.shots, a.media_files) == ("reel_a/reel_a.otio", "reel_a", 2, 2)
    local = inbox.scan(str(reels), settle_s=0, home=tmp_path / "h2")
    assert a.content_sha256 == next(x for x in local.ready if x.reel == "reel_a").content_sha256
    mirrored = a.timeline.parent / "media" / SHOTS[0].media
    stamp = mirrored.stat().st_mtime_ns
    inbox.scan(url, settle_s=0, home=home, s3=s3)  # unchanged objects are not fetched again
    assert mirrored.stat().st_mtime_ns == stamp
    client.remove_object(bucket, f"landing/reel_a/media/{SHOTS[0].media}")
    again = inbox.scan(url, settle_s=0, home=home, s3=s3)
    assert not mirrored.exists() and again.ready[0].media_files == 1
    assert again.ready[0].content_sha256 != a.content_sha256


def test_a_missing_model_checkpoint_stops_the_night_before_any_reel(
        night: Path, tmp_path: Path, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The model estimator with a checkpoint that is not there: one error naming it, before
    a reel is claimed or a shot worked (not a night of failed shots)."""
    from flows.nightly import nightly

    monkeypatch.setenv("FOLEY_NIGHTLY_ENVELOPE", "model")
    monkeypatch.setenv("FOLEY_ENVELOPE_CHECKPOINT", str(tmp_path / "gone.safetensors"))
    with pytest.raises(ValueError, match="no envelope model checkpoint at .*gone.safetensors"):
        nightly()
    assert inbox_db.history(runtime.db(), str(night)) == []
    assert not (tmp_path / "deliveries").exists()


def test_the_nightly_policy_takes_its_threshold_from_the_settings(
        night: Path, tmp_path: Path, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FOLEY_NIGHTLY_APPROVE_THRESHOLD is the nightly pass's --approve-threshold: with
    FOLEY_NIGHTLY_APPROVE=auto the shot whose events all reach it is approved and delivered,
    the other waits for review. Set with the queue, or outside [0, 1], it stops the night
    before any reel is claimed."""
    from db import api
    from flows.nightly import nightly

    shutil.rmtree(night / B)
    shutil.rmtree(night / "broken")
    monkeypatch.setenv("FOLEY_NIGHTLY_APPROVE_THRESHOLD", "0.8")
    with pytest.raises(ValueError, match="FOLEY_NIGHTLY_APPROVE_THRESHOLD=0.8 is the threshold "
                       "of FOLEY_NIGHTLY_APPROVE=auto; with FOLEY_NIGHTLY_APPROVE=queue"):
        nightly()  # the default approval is the queue
    monkeypatch.setenv("FOLEY_NIGHTLY_APPROVE", "auto")
    monkeypatch.setenv("FOLEY_NIGHTLY_APPROVE_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="nightly_approve_threshold"):
        nightly()
    assert inbox_db.history(runtime.db(), str(night)) == []
    monkeypatch.setenv("FOLEY_NIGHTLY_APPROVE_THRESHOLD", "0.8")
    [reel] = nightly()["reels"]
    assert reel["status"] == "done" and (reel["shots"]["delivered"],
                                         reel["shots"]["pending_review"]) == (1, 1), reel
    with runtime.db().session() as s:
        [decision] = s.query(api.Decision).all()
        assert decision.agent.name == "policy:auto" and decision.params["threshold"] == 0.8
        assert decision.params["lowest_confidence"] >= 0.8


def test_a_new_prediction_over_a_persons_edit_is_in_the_morning_summary(
        night: Path, tmp_path: Path, prefect_harness: None,
        webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """anna edits SH020 after the first night; the editor then changes its Foley note and
    sends the reel again. The second night's prediction goes over her edit: the night's
    report, the summary artifact (reel, shot, record in, the pass's note) and the webhook
    (`superseded`, and its text) say so, for a supervisor to re-review in the morning."""
    from prefect.client.orchestration import get_client

    from db import api
    from flows.nightly import SUMMARY_KEY, nightly
    from tasks.decisions import load_envelope, save_version

    url, received = webhook
    monkeypatch.setenv("FOLEY_WEBHOOK_URL", url)
    monkeypatch.setenv("FOLEY_REVIEW_URL", "https://review.example")
    shutil.rmtree(night / B)
    shutil.rmtree(night / "broken")
    [first] = nightly()["reels"]
    assert first["status"] == "done" and first["superseded"] == []
    assert received[0]["superseded"] == [] and "person's work" not in received[0]["text"]
    with runtime.db().session() as s:
        v1 = api.latest_envelope(s, api.get_shot(s, "reel_a", "SH020").id)
        doc, ref, sid = load_envelope(v1.artifact.ref()), v1.artifact.ref(), v1.shot_id
    assert save_version(sid, {**doc, "events": doc["events"][:-1]}, source="edit",
                        derived_from=ref, created_by="user:anna", base_version=1)[0] == 2
    edit = night / "reel_a" / "reel_a.otio"
    edit.write_text(edit.read_text().replace("FOLEY: footsteps gravel",
                                             "FOLEY: footsteps concrete"))
    age(night / "reel_a", 3600)

    [reel] = nightly()["reels"]
    manifest = json.loads((tmp_path / "deliveries" / "reel_a" / "manifest.json").read_text())
    record_in = next(s["record_in"] for s in manifest["shots"] if s["name"] == "SH020")
    [over] = reel["superseded"]
    assert (over["shot"], over["record_in"]) == ("SH020", record_in)
    assert over["note"].startswith("SH020: the new prediction v3 went over v2, an edit by "
                                   "user:anna")
    hook = received[1]
    assert hook["superseded"] == [{"reel": "reel_a", **over}]
    assert hook["totals"]["superseded"] == 1
    with get_client(sync_client=True) as client:
        [art] = [a for a in client.read_latest_artifacts(limit=50) if a.key == SUMMARY_KEY]
    assert art.data == hook["text"]
    assert "waiting for review** (1 over a person's work)" in art.data
    assert ("## Re-review: new predictions over a person's work" in art.data
            and "- **reel_a** (1 shot(s))\n"
            f"  - `{record_in}` [SH020](https://review.example/reels/reel_a/shots/SH020): "
            "the new prediction v3 went over v2, an edit by user:anna" in art.data), art.data


def test_the_summary_groups_notes_per_reel_and_caps_them(
        webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Many new predictions over people's work: listed per reel, NOTES_PER_REEL at most, then
    how many more with the reel's queue; the webhook carries what the text lists and
    counts them all."""
    from flows.nightly import NOTES_PER_REEL, NightlyReport, ReelOutcome, notify, summary_markdown
    from flows.settings import get_settings

    def notes(n: int) -> list[dict[str, str]]:
        return [{"shot": f"SH{i:03d}0", "record_in": f"01:00:{i:02d}:00",
                 "note": f"SH{i:03d}0: the new prediction v2 went over v1, an edit by user:anna"}
                for i in range(1, n + 1)]

    report = NightlyReport(inbox="/in", started="2026-11-22T01:00:00+00:00", reels=[
        ReelOutcome("r1/r1.otio", "r1", "done", shots={"pending_review": 40},
                    superseded=notes(NOTES_PER_REEL + 3)),
        ReelOutcome("r2/r2.otio", "r 2", "done", shots={"pending_review": 5}, superseded=notes(1)),
        ReelOutcome("r3/r3.otio", "r3", "done", shots={"delivered": 5})])
    text = summary_markdown(report, "https://review.example/")
    section = text[text.index("## Re-review"):].splitlines()
    assert [line for line in section if line.startswith("- ")] == [
        f"- **r1** ({NOTES_PER_REEL + 3} shot(s))", "- **r 2** (1 shot(s))"]
    assert sum(line.startswith("  - `") for line in section) == NOTES_PER_REEL + 1
    assert "  - `01:00:01:00` [SH0010](https://review.example/reels/r1/shots/SH0010): the new " \
        "prediction v2 went over v1, an edit by user:anna" in section
    assert "  - … and 3 more: https://review.example/?reel=r1&status=all" in section
    assert "  - `01:00:01:00` [SH0010](https://review.example/reels/r%202/shots/SH0010): " \
        "the new prediction v2 went over v1, an edit by user:anna" in section
    assert f"({NOTES_PER_REEL + 4} over a person's work)" in text

    url, received = webhook
    monkeypatch.setenv("FOLEY_WEBHOOK_URL", url)
    assert notify(get_settings(), report, text) == "HTTP 204"
    [hook] = received
    assert hook["text"] == text and hook["totals"]["superseded"] == NOTES_PER_REEL + 4
    # the payload lists what the text lists (at most NOTES_PER_REEL a reel), counts them all
    assert [(n["reel"], n["shot"]) for n in hook["superseded"]][-2:] == [
        ("r1", f"SH{NOTES_PER_REEL:03d}0"), ("r 2", "SH0010")]
    assert len(hook["superseded"]) == NOTES_PER_REEL + 1
    assert [r["superseded"] for r in hook["reels"]] == [NOTES_PER_REEL + 3, 1, 0]
