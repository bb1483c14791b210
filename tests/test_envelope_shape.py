"""An envelope of the wrong shape, and a `foley generate` option out of range, are one line
naming what is wrong — never a traceback.

`tasks.decisions.validate_envelope` checks the types first (an object; rate_hz / duration_s
positive numbers; curve a list of numbers; events a list of objects whose t, strength, x, y
are numbers, kind text, confidence a number or absent; every number finite), then the ranges.
It guards `foley generate --envelope` and the review app's edits; `foley generate` refuses a
NaN, infinite or out-of-range numeric option before it loads a model (exit 2, nothing
written). `foley review` has no command taking an envelope: edits go through the app."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tasks.decisions import validate_envelope
from tests.conftest import REPO

torch.set_num_threads(1)

WHERE = "SH010_v3.json"


def _env() -> dict[str, Any]:
    """A valid envelope: 1 s at 100 Hz, one event."""
    return {"version": 1, "parent": None, "shot": "SH010", "rate_hz": 100, "duration_s": 1.0,
            "curve": [0.0] * 20 + [0.5] * 30 + [0.01] * 50,
            "events": [{"t": 0.2, "strength": 0.8, "x": 0.5, "y": 0.6, "kind": "impact",
                        "confidence": 0.9}],
            "prompt": "a door", "source": "baseline:motion@1"}


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
    """The envelope with the field at `path` (keys / indices) set to `value`."""
    def edit(env: dict[str, Any]) -> dict[str, Any]:
        node = env
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return env
    return edit


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], Any]:
    def edit(env: dict[str, Any]) -> dict[str, Any]:
        node = env
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return env
    return edit


NAN, INF = float("nan"), float("inf")
MALFORMED = [  # (id, edit, what the message must say)
    ("envelope-a-list", lambda env: [env], r"envelope must be a JSON object, got a list"),
    ("envelope-null", lambda env: None, r"envelope must be a JSON object, got null"),
    ("rate-text", _set(("rate_hz",), "100"), r"rate_hz must be a number, got text '100'"),
    ("rate-zero", _set(("rate_hz",), 0), r"rate_hz must be positive, got 0"),
    ("rate-bool", _set(("rate_hz",), True), r"rate_hz must be a number, got true"),
    ("duration-nan", _set(("duration_s",), NAN), r"duration_s is nan: every number must be finite"),
    ("duration-inf", _set(("duration_s",), INF), r"duration_s is inf"),
    ("duration-negative", _set(("duration_s",), -1.0), r"duration_s must be positive, got -1.0"),
    ("duration-list", _set(("duration_s",), [1.0]), r"duration_s must be a number, got a list"),
    ("duration-huge", _set(("duration_s",), 1e308), r"curve has 100 samples, expected inf"),
    ("curve-text", _set(("curve",), "abc"), r"curve must be a list of numbers, got text 'abc'"),
    ("curve-null", _set(("curve",), None), r"curve must be a list of numbers, got null"),
    ("curve-object", _set(("curve",), {"0": 0.1}),
     r"curve must be a list of numbers, got an object"),
    ("curve-2d", lambda env: {**env, "curve": [[0.1, 0.2]] * 100},
     r"curve sample 0 must be a number, got a list"),
    ("curve-text-sample", _set(("curve", 5), "0.5"),
     r"curve sample 5 must be a number, got text '0.5'"),
    ("curve-null-sample", _set(("curve", 7), None), r"curve sample 7 must be a number, got null"),
    ("curve-bool-sample", _set(("curve", 3), True), r"curve sample 3 must be a number, got true"),
    ("curve-nan", _set(("curve", 3), NAN), r"curve sample 3 is nan: every number must be finite"),
    ("curve-inf", _set(("curve", 4), INF), r"curve sample 4 is inf"),
    ("curve-negative", _set(("curve", 9), -0.5),
     r"curve values must lie in \[0, 1\] \(sample 9 is -0.5\)"),
    ("events-null", _set(("events",), None), r"events must be a list of event objects .*got null"),
    ("events-object", _set(("events",), {}),
     r"events must be a list of event objects .*got an object"),
    ("events-text", _set(("events",), "tap"),
     r"events must be a list of event objects .*got text 'tap'"),
    ("event-number", _set(("events", 0), 0.5), r"event 0 must be an object .*got 0.5"),
    ("event-list", _set(("events", 0), [0.2, 0.8]), r"event 0 must be an object .*got a list"),
    ("event-t-text", _set(("events", 0, "t"), "0.2"),
     r"event 0 t must be a number, got text '0.2'"),
    ("event-t-null", _set(("events", 0, "t"), None), r"event 0 t must be a number, got null"),
    ("event-t-bool", _set(("events", 0, "t"), True), r"event 0 t must be a number, got true"),
    ("event-t-nan", _set(("events", 0, "t"), NAN), r"event 0 t is nan"),
    ("event-t-huge-int", _set(("events", 0, "t"), 10 ** 400), r"event 0 t is too large a number"),
    ("event-strength-text", _set(("events", 0, "strength"), "loud"),
     r"event 0 strength must be a number, got text 'loud'"),
    ("event-strength-nan", _set(("events", 0, "strength"), NAN), r"event 0 strength is nan"),
    ("event-x-list", _set(("events", 0, "x"), [0.5]), r"event 0 x must be a number, got a list"),
    ("event-y-inf", _set(("events", 0, "y"), -INF), r"event 0 y is -inf"),
    ("event-kind-number", _set(("events", 0, "kind"), 3), r"event 0 kind must be text, got 3"),
    ("event-confidence-text", _set(("events", 0, "confidence"), "high"),
     r"event 0 confidence must be a number, got text 'high'"),
    ("event-confidence-nan", _set(("events", 0, "confidence"), NAN), r"event 0 confidence is nan"),
    ("event-confidence-bool", _set(("events", 0, "confidence"), False),
     r"event 0 confidence must be a number, got false"),
    ("event-confidence-range", _set(("events", 0, "confidence"), 1.5),
     r"event 0 confidence 1.5 outside \[0, 1\]"),
    ("doubt-text", _set(("doubt",), "some"), r"doubt must be a number, got text 'some'"),
    ("doubt-nan", _set(("doubt",), NAN), r"doubt is nan"),
    ("doubt-range", _set(("doubt",), 2.0), r"doubt 2.0 outside \[0, 1\]"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_a_malformed_envelope_is_a_value_error_naming_the_field(
        edit: Callable[[dict[str, Any]], Any], message: str) -> None:
    validate_envelope(_env(), where=WHERE)  # the envelope it starts from is valid
    with pytest.raises(ValueError) as caught:
        validate_envelope(edit(_env()), where=WHERE)
    text = str(caught.value)
    assert text.startswith(f"{WHERE}: ") and "\n" not in text, text
    assert re.search(message, text), text


def test_optional_fields_and_numpy_numbers_pass_and_confidence_is_checked() -> None:
    """What the pass and the app write passes — integers, numpy floats, an event without
    confidence or with confidence null, extra event fields (`motion`), doubt 0 — and what
    the contract rules out of confidence is refused."""
    env = _env()
    env["curve"] = [0] * 50 + [np.float32(0.25)] * 50
    env["events"] = [{"t": np.float64(0.2), "strength": np.float32(0.5), "x": 0, "y": 1,
                      "kind": "step", "motion": {"speed": 3.0}},
                     {"t": 0.6, "strength": 1, "x": 0.5, "y": 0.5, "kind": "impact",
                      "confidence": None},
                     {"t": 1.0, "strength": 0.1, "x": 0.5, "y": 0.5, "kind": "impact",
                      "confidence": np.float32(1.0)}]
    env["doubt"] = 0.0
    validate_envelope(env, where=WHERE)
    env["events"][2]["confidence"] = -0.1
    with pytest.raises(ValueError, match=r"event 2 confidence -0.1 outside \[0, 1\]"):
        validate_envelope(env, where=WHERE)


# ---------------------------------------------------------------- foley generate


def _foley(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own (the code of this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOLEY_HOME": str(cwd / "home"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(stdout: str, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert not stdout.strip() and len(lines) == 1 and lines[0].startswith("error: "), \
        stdout + stderr
    assert "Traceback" not in stderr
    return lines[0]


def _write(path: Path, env: Any) -> Path:
    path.write_text(json.dumps(env))
    return path


def test_generate_with_an_envelope_of_the_wrong_shape_is_one_line(tmp_path: Path) -> None:
    """The reviewer's two files: a curve of pairs, events null (TypeErrors before)."""
    curve_2d = _write(tmp_path / "curve_2d.json", {**_env(), "curve": [[0.1, 0.2]] * 100})
    proc = _foley("generate", "door", "--envelope", str(curve_2d), "-o", "out.wav",
                  cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_line_error(proc.stdout, proc.stderr)
    assert f"{curve_2d}: curve sample 0 must be a number, got a list" in line, line
    assert "docs/CONTRACTS.md" in line
    assert not (tmp_path / "out.wav").exists()

    no_events = _write(tmp_path / "no_events.json", {**_env(), "events": None})
    res = CliRunner().invoke(_app(), ["generate", "door", "--envelope", str(no_events),
                                      "-o", str(tmp_path / "b.wav")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert res.output.strip().splitlines() == [
        f"error: {no_events}: events must be a list of event objects ([] for none), got "
        "null; fix the envelope file (see docs/CONTRACTS.md)"]
    assert not (tmp_path / "b.wav").exists()


def test_generate_guidance_nan_is_one_line(tmp_path: Path) -> None:
    """The reviewer's repro: `--guidance nan` passed `guidance <= 0` and ended in write_bwf's
    traceback (exit 1)."""
    proc = _foley("generate", "door", "--duration", "1", "--guidance", "nan", "-o", "h.wav",
                  cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_line_error(proc.stdout, proc.stderr)
    assert line.startswith("error: --guidance must be positive") and "not nan" in line, line
    assert not (tmp_path / "h.wav").exists() and not (tmp_path / ".foley").exists()


def _app() -> Any:
    from flows.cli import app

    return app


ENVELOPE_FILES = [  # (id, content, what the one line says)
    ("not-json", "{nope", r"--envelope \S+: not an envelope JSON file \(Expecting property"),
    ("event-not-an-object", json.dumps({**_env(), "events": [0.5]}), r"event 0 must be an object"),
    ("event-t-text", json.dumps({**_env(), "events": [{**_env()["events"][0], "t": "0.2"}]}),
     r"event 0 t must be a number, got text '0.2'"),
    ("duration-huge", json.dumps({**_env(), "duration_s": 1e308}),
     r"curve has 100 samples, expected inf"),
    ("too-long", json.dumps({**_env(), "rate_hz": 0.01, "duration_s": 10000.0, "curve": [0.1] * 100,
                             "events": []}),
     r"the envelope's duration_s in \S+ must lie in \(0, 3600\] seconds, not 10000"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in ENVELOPE_FILES],
                         ids=[c[0] for c in ENVELOPE_FILES])
def test_generate_refuses_a_bad_envelope_file_in_one_line(
        tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "env.json"
    path.write_text(content)
    out = tmp_path / "out.wav"
    res = CliRunner().invoke(_app(), ["generate", "door", "--envelope", str(path),
                                      "-o", str(out), "--threads", "1"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


OPTIONS = [  # (id, arguments, what the one line says); each ran on before (traceback / wrote)
    ("guidance-inf", ["--guidance", "inf"], r"--guidance must be positive .* not inf"),
    ("guidance-huge", ["--guidance", "1e30"], r"--guidance must be positive and at most 100"),
    ("guidance-nan-with-envelope", ["--guidance", "nan", "--envelope", "ENV"],
     r"--guidance must be positive .* not nan"),
    ("duration-under-a-sample", ["--duration", "1e-9"],
     r"--duration must lie in \(0, 3600\] seconds, not 1e-09 \(and give at least one sample"),
    ("duration-nan-with-envelope", ["--duration", "nan", "--envelope", "ENV"],
     r"--duration must lie in \(0, 3600\] seconds, not nan"),
    ("seed-negative", ["--seed", "-1"], r"--seed must lie in \[0, 2\^63 - 1\], not -1"),
    ("threads-zero", ["--threads", "0"], r"--threads must lie in \[1, 256\], not 0"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in OPTIONS], ids=[c[0] for c in OPTIONS])
def test_generate_refuses_a_numeric_option_out_of_range(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    """Refused before a model is loaded: no checkpoint is needed to see it."""
    monkeypatch.chdir(tmp_path)
    env_file = _write(tmp_path / "env.json", _env())
    args = [str(env_file) if a == "ENV" else a for a in args]
    defaults = {"--duration": "0.1", "--steps": "1", "--threads": "1"}
    for flag, value in defaults.items():
        if flag not in args and not (flag == "--duration" and "--envelope" in args):
            args += [flag, value]
    out = tmp_path / "out.wav"
    res = CliRunner().invoke(_app(), ["generate", "door", *args, "-o", str(out)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: " + message, lines[0]), res.output
    assert not out.exists() and not (tmp_path / ".foley").exists()


# ---------------------------------------------------------------- the review app's edits

PASSWORD = "correct horse"


@pytest.fixture
def editor(foley_home: Path) -> Any:
    """The review app over a one-shot reel whose envelope v1 the pass saved, an editor
    signed in: (client, CSRF headers, the shot's URL, v1)."""
    from fastapi.testclient import TestClient

    from db import api, review
    from review import auth
    from review.app import create_app
    from tasks import runtime
    from tasks.decisions import save_version

    with runtime.db().session() as s:
        reel = api.upsert_reel(s, name="R1", timeline_path="/x.otio", rate_num=24, rate_den=1,
                               drop_frame=False, start_frame=86400,
                               start_timecode="01:00:00:00")
        (sh,) = api.upsert_shots(s, reel, [dict(
            name="SH010", index=0, clip_name="c", record_in_frame=0, duration_frames=24,
            record_in_s=0.0, duration_s=1.0, source_path=None, source_in_s=0.0,
            source_rate=24.0, foley_hint=None, skipped_reason=None)])
        review.create_user(s, "ed", "editor", auth.hash_password(PASSWORD))
        shot_id = sh.id
    env = _env()
    save_version(shot_id, env, source="baseline:motion@1")
    client = TestClient(create_app(applier=False), base_url="http://testserver")
    with client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": "ed", "password": PASSWORD,
                                    "csrf_token": token, "next": "/"}, follow_redirects=False)
        with runtime.db().session() as s:
            session = review.session_by_token(
                s, auth.token_hash(client.cookies[auth.SESSION_COOKIE]))
            headers = {auth.CSRF_HEADER: session.csrf_token}
        yield client, headers, "/api/reels/R1/shots/SH010/versions", env


def test_an_edit_of_the_wrong_shape_is_refused_naming_the_field(editor: Any) -> None:
    """A confidence the contract rules out was saved (201) and a NaN one, which the JSON
    body may carry, failed in the content hash with a 500; both are a 422 naming the event's
    field now, and nothing is saved."""
    from db import api
    from tasks import runtime

    client, headers, url, env = editor
    events = copy.deepcopy(env["events"])
    events[0]["confidence"] = 1.5
    r = client.post(url, headers=headers,
                    json={"base_version": 1, "envelope": {"curve": env["curve"],
                                                          "events": events}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "R1 SH010: event 0 confidence 1.5 outside [0, 1]"
    body = ('{"base_version": 1, "envelope": {"events": [{"t": 0.2, "strength": 0.8, '
            '"kind": "impact", "confidence": NaN}]}}')
    r = client.post(url, headers={**headers, "Content-Type": "application/json"},
                    content=body.encode())
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "R1 SH010: event 0 confidence is nan: every number must be finite"
    with runtime.db().session() as s:
        assert api.latest_envelope(s, api.get_shot(s, "R1", "SH010").id).version == 1


def test_an_event_nudged_onto_a_frame_stays_in_that_frame(editor: Any) -> None:
    """The app puts a nudged event exactly on a frame's start, f·1001/30000 s at 29.97: kept to
    0.1 ms it fell up to 2.4 samples short of it, and the delivery's record timecode (and the
    sampler) put it in the frame before."""
    from db import api
    from tasks import runtime
    from tasks.conform import event_frame
    from tasks.decisions import load_envelope

    client, headers, url, env = editor
    frames = [1, 7, 13, 29]
    events = [{**copy.deepcopy(env["events"][0]), "t": f * 1001 / 30000} for f in frames]
    r = client.post(url, headers=headers,
                    json={"base_version": 1, "envelope": {"curve": env["curve"],
                                                          "events": events}})
    assert r.status_code == 201, r.text
    with runtime.db().session() as s:
        latest = api.latest_envelope(s, api.get_shot(s, "R1", "SH010").id)
        stored = load_envelope(s.get(api.Artifact, latest.artifact_id).ref())
    assert [event_frame(e["t"], 30000, 1001) for e in stored["events"]] == frames


def test_an_envelope_may_not_hold_more_events_than_a_performance() -> None:
    """At most MAX_EVENTS_PER_S a second: a request of 300,000 events once took the review
    app to 23 GB rendering its preview (the sampler keeps each event's sound)."""
    from tasks.decisions import MAX_EVENTS_PER_S

    env = _env()
    event = env["events"][0]
    env["events"] = [{**event, "t": i / MAX_EVENTS_PER_S} for i in range(MAX_EVENTS_PER_S)]
    validate_envelope(env, where=WHERE)  # one second of a drum roll and more: fine
    env["events"].append({**event, "t": 0.999})
    with pytest.raises(ValueError, match=rf"^{WHERE}: {MAX_EVENTS_PER_S + 1} events in 1 s; at "
                                         rf"most {MAX_EVENTS_PER_S} a second"):
        validate_envelope(env, where=WHERE)


@pytest.mark.parametrize("option, value, says", [
    ("--lr", "nan", "--lr must lie in (0, 1), not nan"),
    ("--lr", "0", "--lr must lie in (0, 1), not 0"),
    ("--max-minutes", "nan", "--max-minutes must be a positive number of minutes, not nan"),
    ("--batch-size", "0", "--batch-size must be at least 1, not 0"),
    ("--eval-every", "0", "--eval-every must be at least 1, not 0"),
    ("--steps", "-5", "--steps must be at least 1, not -5"),
    ("--threads", "0", "--threads must lie in [1, 256], not 0"),
])
def test_foley_train_synth_refuses_an_option_out_of_range(tmp_path: Path, option: str,
                                                         value: str, says: str) -> None:
    """Refused before a flow starts or anything is written."""
    from flows.cli import app

    res = CliRunner().invoke(app, ["train", "synth", "--out", str(tmp_path / "run"), option,
                                   value])
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
