"""The artifact store and the provenance API: content addressing, idempotency, approval rules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import api
from tasks import runtime
from tasks.decisions import auto_approve, save_version
from tasks.stage import StageOutput, run_stage


def _env(shot: str, t: float) -> dict:
    return {"shot": shot, "rate_hz": 100, "duration_s": 1.0, "curve": [0.0] * 100,
            "events": [{"t": t, "strength": 0.5, "x": 0.5, "y": 0.5, "kind": "impact"}],
            "prompt": None}


def _shot(name: str = "SH010") -> int:
    with runtime.db().session() as s:
        reel = api.upsert_reel(s, name="R1", timeline_path="/x.otio", rate_num=24, rate_den=1,
                               drop_frame=False, start_frame=86400, start_timecode="01:00:00:00")
        (sh,) = api.upsert_shots(s, reel, [dict(
            name=name, index=0, clip_name="c", record_in_frame=0, duration_frames=24,
            record_in_s=0.0, duration_s=1.0, source_path=None, source_in_s=0.0, source_rate=24.0,
            foley_hint=None, skipped_reason=None)])
        return sh.id


def test_store_is_content_addressed(foley_home: Path, tmp_path: Path) -> None:
    f = tmp_path / "a b ü.txt"
    f.write_text("hello")
    store = runtime.store()
    r1, r2 = store.put_file(f), store.put_file(f)
    assert r1 == r2 and r1["bytes"] == 5
    assert store.local_path(r1).read_text() == "hello"
    objects = [p for p in Path(store.root).rglob("*") if p.is_file()]
    assert len(objects) == 1


def test_run_stage_reuses_completed_work(foley_home: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    ref = runtime.store().put_file(src)
    calls = []

    def compute(paths: dict[str, Path], work: Path) -> StageOutput:
        calls.append(1)
        out = work / "out.txt"
        out.write_text(paths["in"].read_text() * 2)
        return StageOutput(files={"out": (out, "text/plain")}, result={"n": 2})

    import tasks.store as code

    a = run_stage("double", inputs={"in": ref}, params={"k": 1}, code=[code], compute=compute)
    b = run_stage("double", inputs={"in": ref}, params={"k": 1}, code=[code], compute=compute)
    c = run_stage("double", inputs={"in": ref}, params={"k": 2}, code=[code], compute=compute)
    assert len(calls) == 2 and b.cached and not a.cached and not c.cached
    assert a.outputs == b.outputs and b.result == {"n": 2}
    with runtime.db().session() as s:
        node = api.lineage(s, a.outputs["out"]["sha256"])
        assert node.activity["task"] == "double" and node.inputs[0].artifact["sha256"] == ref["sha256"]
        # one derivation per activity that ran (a and c); the cached rerun b added none
        assert s.query(api.Derivation).count() == 2


def test_failed_stage_is_recorded_and_rerun(foley_home: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    ref = runtime.store().put_file(src)

    def boom(paths: dict[str, Path], work: Path) -> StageOutput:
        raise RuntimeError("decoder exploded")

    import tasks.store as code

    with pytest.raises(RuntimeError):
        run_stage("fragile", inputs={"in": ref}, params={}, code=[code], compute=boom)
    with runtime.db().session() as s:
        (act,) = s.query(api.Activity).filter_by(task="fragile").all()
        assert act.status == "failed" and "decoder exploded" in act.error


def test_envelope_versions_and_approval_rules(foley_home: Path) -> None:
    sid = _shot()
    v1, ref1, created = save_version(sid, _env("SH010", 0.5), source="baseline:motion@1")
    assert (v1, created) == (1, True)
    again = save_version(sid, _env("SH010", 0.5), source="baseline:motion@1")
    assert again[:2] == (1, ref1) and again[2] is False  # same content: no new version
    with runtime.db().session() as s:
        with pytest.raises(api.NotApproved, match="pending_review"):
            api.approved_envelope(s, sid)
    assert auto_approve.fn(sid) == "approved"
    assert auto_approve.fn(sid) == "approved"  # no second decision
    v2, ref2, _ = save_version(sid, _env("SH010", 0.7), source="user:anna", created_by="user:anna",
                               derived_from=ref1)
    assert v2 == 2 and json.loads(runtime.store().local_path(ref2).read_text())["parent"] == 1
    with runtime.db().session() as s:
        with pytest.raises(api.NotApproved):  # the newest version is not approved yet
            api.approved_envelope(s, sid)
        env = api.latest_envelope(s, sid)
        api.decide(s, env.id, agent="user:anna", decision="retake_requested", comment="later")
    assert auto_approve.fn(sid) == "retake_requested"  # the policy never overrides a person
    with runtime.db().session() as s:
        decisions = s.query(api.Decision).all()
        assert [(d.agent.name, d.decision) for d in decisions] == [
            ("policy:auto", "approved"), ("user:anna", "retake_requested")]
        assert decisions[0].params["threshold"] == 0.0


def test_decision_must_be_known(foley_home: Path) -> None:
    sid = _shot()
    save_version(sid, _env("SH010", 0.5), source="x")
    with runtime.db().session() as s:
        env = api.latest_envelope(s, sid)
        with pytest.raises(ValueError, match="decision must be one of"):
            api.decide(s, env.id, agent="user:x", decision="maybe")


def test_redacted_url_hides_password() -> None:
    assert "s3cret" not in api.redact_url("postgresql://foley:s3cret@db:5432/foley")
