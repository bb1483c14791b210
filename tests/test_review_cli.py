"""`foley review …` as a person meets it: what it says for an unknown reel, shot or version, a
role, a decision taken twice, a retake, a port in use, an edit's note, and the user commands.

No pass runs: a two-shot reel is written straight into a fresh embedded home and each shot
given a v1 as the pass saves its prediction (no `created_by`), so every test is in-process
(typer's CliRunner) and fast. The decisions and the edit go through the same code as in the
app (`db.review.take_decision`, the app's `POST …/versions`).
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from db import api, review
from db.schema import Decision, ReviewJob
from flows.cli import app as cli
from review import auth
from tasks import runtime

REEL = "R1"
PASSWORD = "correct horse"
SOURCE = "baseline:motion@2"  # the pass's estimator, as its versions record it


def _env(shot: str, t: float) -> dict[str, Any]:
    """A valid envelope: 1 s at 100 Hz, one event at `t`."""
    return {"shot": shot, "rate_hz": 100, "duration_s": 1.0,
            "curve": [0.0] * 20 + [0.5] * 30 + [0.01] * 50,
            "events": [{"t": t, "strength": 0.8, "x": 0.5, "y": 0.6, "kind": "impact",
                        "confidence": 0.9}], "prompt": "a door"}


@pytest.fixture
def reel(foley_home: Path) -> Path:
    """Reel R1 with shots SH010 and SH020, each at v1 as the pass saved it (pending review),
    and users anna (supervisor) and ed (editor)."""
    from tasks.decisions import save_version

    with runtime.db().session() as s:
        row = api.upsert_reel(s, name=REEL, timeline_path="/x.otio", rate_num=24, rate_den=1,
                              drop_frame=False, start_frame=86400,
                              start_timecode="01:00:00:00")
        shots = api.upsert_shots(s, row, [dict(
            name=name, index=i, clip_name="c", record_in_frame=24 * i, duration_frames=24,
            record_in_s=float(i), duration_s=1.0, source_path=None, source_in_s=0.0,
            source_rate=24.0, foley_hint=None, skipped_reason=None)
            for i, name in enumerate(("SH010", "SH020"))])
        ids = {sh.name: sh.id for sh in shots}
        for name, role in (("anna", "supervisor"), ("ed", "editor")):
            review.create_user(s, name, role, auth.hash_password(PASSWORD))
    for name, sid in ids.items():
        save_version(sid, _env(name, 0.3), source=SOURCE, prediction=True)
    return foley_home


def foley(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input)


def counts() -> tuple[int, int]:
    """(decisions, review jobs) in the database."""
    with runtime.db().session() as s:
        return (s.scalar(select(func.count()).select_from(Decision)),
                s.scalar(select(func.count()).select_from(ReviewJob)))


def one_error(res: Any) -> str:
    """The one line a refused command says (exit 2), and that it said nothing else."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


# ---------------------------------------------------------------- 1. a role's article


def test_an_editor_is_an_editor(reel: Path) -> None:
    said = one_error(foley("review", "approve", REEL, "SH010", "--by", "ed"))
    assert said == "error: ed is an editor; this needs a supervisor"
    assert counts() == (0, 0)
    res = foley("review", "user", "role", "ed", "viewer")
    assert res.exit_code == 0 and res.output.strip() == "ed is now a viewer", res.output
    res = foley("review", "user", "role", "ed", "editor")
    assert res.exit_code == 0 and res.output.strip() == "ed is now an editor", res.output


# ---------------------------------------------------------------- 2, 4. an unknown reel


def test_an_unknown_reel_is_said_as_a_reel(reel: Path) -> None:
    for args in (("approve", "nosuch", "SH010", "--by", "anna"),
                 ("retake", "nosuch", "SH010", "--by", "anna", "-m", "softer"),
                 ("omit", "nosuch", "SH010", "--by", "anna"),
                 ("show", "nosuch", "SH010")):
        said = one_error(foley("review", *args))
        assert said == f"error: no reel 'nosuch'; reels: {REEL}", (args, said)
    said = one_error(foley("review", "approve", REEL, "SH404", "--by", "anna"))
    assert said.startswith(f"error: no shot 'SH404' in reel '{REEL}'"), said
    assert counts() == (0, 0)


def test_apply_of_an_unknown_reel_is_one_line_and_exit_2(reel: Path) -> None:
    said = one_error(foley("review", "apply", "nosuch"))
    assert said == f"error: no reel 'nosuch'; reels: {REEL}"
    res = foley("review", "apply", REEL)  # a known reel with nothing waiting
    assert res.exit_code == 0 and "no decisions waiting to be applied" in res.output, res.output


# ---------------------------------------------------------------- 3. a version that is not there


def test_a_version_the_shot_does_not_have_is_said_so(reel: Path) -> None:
    for v in ("5", "0"):  # 0 is no version either (not "the latest")
        said = one_error(foley("review", "approve", REEL, "SH010", "--by", "anna",
                               "--version", v, "--no-apply"))
        assert said == (f"error: {REEL} SH010 has no v{v}: its only version is v1 (decide the "
                        "latest, v1)"), said
    assert counts() == (0, 0)
    res = foley("review", "approve", REEL, "SH010", "--by", "anna", "--version", "1",
                "--no-apply")
    assert res.exit_code == 0 and f"{REEL} SH010 v1: approved by anna" in res.output, res.output


# ---------------------------------------------------------------- 5. the same decision twice


def test_approving_an_approved_version_again_writes_nothing(
        reel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.review

    runs: list[str] = []
    monkeypatch.setattr(flows.review, "apply_decisions",
                        lambda reel, reason="", wait=True: runs.append(reason))
    res = foley("review", "approve", REEL, "SH010", "--by", "anna", "--no-apply")
    assert res.exit_code == 0, res.output
    assert counts() == (1, 1)
    with runtime.db().session() as s:
        at = s.scalar(select(Decision.created_at)).strftime("%Y-%m-%d %H:%M:%S")
    for args in ((), ("--version", "1")):
        res = foley("review", "approve", REEL, "SH010", "--by", "anna", *args)
        assert res.exit_code == 0, res.output
        assert res.stdout.splitlines()[0] == (
            f"{REEL} SH010 v1 is already approved (by anna, {at} UTC); nothing was written")
        # its job was left with --no-apply: said, with what applies it
        assert f"`foley review apply {REEL}`" in res.stderr, res.stderr
        assert counts() == (1, 1) and runs == []
    # a different decision, or the same on the other shot, is taken as before
    res = foley("review", "omit", REEL, "SH010", "--by", "anna", "--no-apply")
    assert res.exit_code == 0 and counts() == (2, 2), res.output
    res = foley("review", "omit", REEL, "SH010", "--by", "anna")
    assert res.exit_code == 0 and "is already omitted (by anna," in res.output, res.output
    assert counts() == (2, 2) and runs == []


def test_a_supervisor_approving_what_the_policy_approved_is_recorded(
        reel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """policy:auto's approval is not a person's: a supervisor's approval over it is taken
    (from then on the shot is a person's work, `decisions.held_by`) and applied."""
    import flows.review
    from tasks.decisions import POLICY, held_by

    runs: list[str] = []
    monkeypatch.setattr(flows.review, "apply_decisions",
                        lambda reel, reason="", wait=True: runs.append(reason) or _Report())
    with runtime.db().session() as s:
        env = api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id)
        api.decide(s, env.id, agent=POLICY, decision="approved")
    res = foley("review", "approve", REEL, "SH010", "--by", "anna")
    assert res.exit_code == 0 and f"{REEL} SH010 v1: approved by anna" in res.output, res.output
    assert counts() == (2, 1) and runs == ["SH010 v1 approved by anna"]
    with runtime.db().session() as s:
        env = api.latest_envelope(s, api.get_shot(s, REEL, "SH010").id)
        assert held_by(s, env) == ("user:anna", "approved")
    res = foley("review", "approve", REEL, "SH010", "--by", "anna")
    assert "is already approved (by anna," in res.output and counts() == (2, 1), res.output


class _Report:
    """What a stand-in apply run reports: nothing done, nothing failed."""
    reel, error, synthesized, failed, conformed, waiting = REEL, None, [], [], False, []


# ---------------------------------------------------------------- 6. a retake's next version


def test_a_retake_says_who_makes_the_next_version(reel: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLEY_REVIEW_URL", "https://review.example/")
    res = foley("review", "retake", REEL, "SH020", "--by", "anna", "-m", "softer",
                "--no-apply")
    assert res.exit_code == 0, res.output
    said = res.stdout
    assert f"{REEL} SH020 v1: retake requested by anna" in said
    assert "an editor (or a supervisor) edits the envelope in the review app" in said, said
    assert f"https://review.example/reels/{REEL}/shots/SH020" in said, said
    assert "a rerun of the pass makes no new version unless its prediction changed" in said
    helped = " ".join(foley("review", "retake", "--help").output.split())
    assert "made by an editor (or a supervisor) in the review app" in helped, helped
    assert "the next version made is pending review again" not in helped
    doc = " ".join((Path(__file__).resolve().parents[1] / "docs/REVIEW.md").read_text().split())
    assert "an editor (or a supervisor) opens the shot in the review app" in doc


# ---------------------------------------------------------------- 7. a port in use


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(reel: Path) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        res = foley("review", "serve", "--port", str(port))
    finally:
        held.close()
    said = one_error(res)
    assert said.startswith(f"error: port {port} is in use on 127.0.0.1: "), said
    assert "review app on" not in res.output
    said = one_error(foley("review", "serve", "--port", "70000"))
    assert said == "error: --port 70000: a TCP port is 1–65535"


def test_serve_serves_on_the_port_it_checked(reel: Path) -> None:
    """The socket the check bound is the one the app answers on."""
    import httpx

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "review", "serve", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the review app did not answer"
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=90)
    assert f"review app on http://127.0.0.1:{port}" in err, err


# ---------------------------------------------------------------- 8. show: notes and makers


@pytest.fixture
def ed(reel: Path) -> Iterator[TestClient]:
    """The review app, ed (an editor) signed in; CSRF header on `ed.headers`."""
    from review.app import create_app

    with TestClient(create_app(applier=False), base_url="http://testserver") as c:
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        c.post("/login", data={"username": "ed", "password": PASSWORD, "csrf_token": token,
                               "next": "/"}, follow_redirects=False)
        with runtime.db().session() as s:
            session = review.session_by_token(s, auth.token_hash(c.cookies[auth.SESSION_COOKIE]))
            c.headers[auth.CSRF_HEADER] = session.csrf_token
        yield c


def test_show_gives_an_edits_note_and_who_made_each_version_as_the_app_does(
        ed: TestClient) -> None:
    import json

    shot = f"/api/reels/{REEL}/shots/SH010"
    r = ed.post(f"{shot}/versions", json={"base_version": 1, "envelope": _env("SH010", 0.6),
                                          "comment": "moved the hit later"})
    assert r.status_code == 201, r.text
    by_api = [{k: v[k] for k in ("version", "created_by", "comment")}
              for v in ed.get(shot).json()["versions"]]
    assert by_api == [
        {"version": 1, "created_by": f"model:{SOURCE}", "comment": None},
        {"version": 2, "created_by": "user:ed", "comment": "moved the hit later"}], by_api

    res = foley("review", "show", REEL, "SH010", "--json")
    assert res.exit_code == 0, res.output
    shown = [{k: v[k] for k in ("version", "created_by", "comment")}
             for v in json.loads(res.stdout)["versions"]]
    assert shown == by_api

    res = foley("review", "show", REEL, "SH010")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert re.match(r"  v1 pending_review +\S+ +by the pass at ", lines[1]), lines
    assert re.match(r"  v2 pending_review +edit +by user:ed at .*\(from v1\)$", lines[2]), lines
    assert lines[3] == "      note: moved the hit later", lines


# ---------------------------------------------------------------- 9. the user commands


def test_user_add_checks_the_name_and_role_before_the_password(
        reel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.cli_review

    asked: list[bool] = []

    def read(from_stdin: bool) -> str:
        asked.append(from_stdin)
        return PASSWORD

    monkeypatch.setattr(flows.cli_review, "_read_password", read)
    for args, said in (
            (("bad name", "--role", "editor"),
             "error: user name 'bad name': use letters, digits, '.', '-' or '_'"),
            (("bo", "--role", "boss"),
             "error: role must be one of viewer, editor, supervisor, not 'boss'"),
            (("anna", "--role", "editor"), "error: user 'anna' exists already")):
        assert one_error(foley("review", "user", "add", *args)) == said
    assert one_error(foley("review", "user", "passwd", "nobody")) == "error: no user 'nobody'"
    assert asked == []
    res = foley("review", "user", "add", "bo", "--role", "editor")
    assert res.exit_code == 0 and res.output.strip() == "user bo added as editor", res.output
    assert asked == [False]
    with runtime.db().session() as s:
        assert review.get_user(s, "bo").role == "editor"


def test_every_user_option_is_described(reel: Path) -> None:
    for command in ("add", "passwd"):
        helped = " ".join(foley("review", "user", command, "--help").output.split())
        assert re.search(r"--password-stdin (\S+ )?Read the password from standard input",
                         helped), (command, helped)
