"""Shots that share content share cached runs, and each shot uses its own picture.

Runs are cached by content, so the second shot of a source range, or a shot whose clip an
earlier cut gave another shot, reuses a run recorded for another shot. The stages after the
picture find the shot's features by shot (`db.api.shot_outputs`): they must find the ones
of the shot's own clip — not nothing (the shot failed, "no picture features recorded"), and
not the features its previous cut had (its sound placed from another picture, silently).
Real pass, real media, an embedded home.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db import api
from flows.demo import DEMO_SHOTS, DemoShot, make_demo_reel
from tasks import runtime

BOUNCE, STEPS = DEMO_SHOTS[0], DEMO_SHOTS[1]
SHORT = 1.5  # seconds of each clip: enough for a few events, quick to analyse
A = DemoShot(BOUNCE.media, BOUNCE.scene, 0.5, SHORT, "impacts wood")
B = DemoShot(STEPS.media, STEPS.scene, 0.5, SHORT, "footsteps gravel")


def features_used(reel: str) -> dict[str, tuple[str, str]]:
    """Per shot: (the features it uses now, the features its spatial run read)."""
    with runtime.db().session() as s:
        out = {}
        for sh in api.get_reel(s, reel).shots:
            feats = api.shot_outputs(s, "features", sh.id)["features"]["sha256"]
            spatial = api.shot_stage(s, sh.id, "spatial")
            used = s.scalar(select(api.Artifact.sha256)
                            .join(api.Usage, api.Usage.artifact_id == api.Artifact.id)
                            .where(api.Usage.activity_id == spatial,
                                   api.Usage.role == "features"))
            out[sh.name] = (feats, used)
    return out


def test_a_repeated_clip_and_a_recut_each_use_their_own_picture(
        tmp_path: Path, foley_home: Path, prefect_harness: None) -> None:
    from flows.foley_pass import foley_pass

    first = make_demo_reel(tmp_path / "cut1", name="shared", shots=(A, B, A))
    report = foley_pass(str(first), str(tmp_path / "out1"), approve="auto")
    assert [(sh.name, sh.status, sh.reason) for sh in report.shots] == [
        ("SH010", "pending", None), ("SH020", "pending", None), ("SH030", "pending", None)]
    assert report.exit_code == 0
    cut1 = features_used("shared")
    clip_a, clip_b = cut1["SH010"][0], cut1["SH020"][0]
    assert clip_a != clip_b
    assert cut1 == {"SH010": (clip_a, clip_a), "SH020": (clip_b, clip_b),
                    "SH030": (clip_a, clip_a)}  # the same range: the same run, reused

    # The editor swaps the first two clips: SH010 is now B's, SH020 A's. Each shot's rows are
    # the same (shots are named by position), each clip's runs are cached under the other.
    second = make_demo_reel(tmp_path / "cut2", name="shared", shots=(B, A, A))
    report = foley_pass(str(second), str(tmp_path / "out2"), approve="auto")
    assert report.exit_code == 0, [(sh.name, sh.reason) for sh in report.shots]
    assert features_used("shared") == {"SH010": (clip_b, clip_b), "SH020": (clip_a, clip_a),
                                       "SH030": (clip_a, clip_a)}
    with runtime.db().session() as s:  # a rerun of the cut adds no rows
        rows = (s.query(api.Activity).count(), s.query(api.ShotStage).count())
    foley_pass(str(second), str(tmp_path / "out2"), approve="auto")
    with runtime.db().session() as s:
        assert (s.query(api.Activity).count(), s.query(api.ShotStage).count()) == rows

