"""Scale-out in-process: a pass whose shots are worked by `foley-shots` flow runs.

`run_deployment` is the one stand-in: the shot run it would start on a worker runs here, as a
flow run of the test's Prefect server, with the real `scaleout.shot_batch`; the pass then waits
for it, walks its stages and conforms as it does on a farm (tests/test_workers.py has the real
deployment and process workers).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.demo import DemoShot, make_demo_reel
from models.scenes import SceneSpec
from tasks import runtime

REEL = "scaleout_reel"
SHOTS = (
    DemoShot("bounce_24.mp4", SceneSpec("bounce", fps=24, duration_s=1.4, seed=1), 0.2, 1.0,
             "impacts wood"),
    DemoShot("steps_25.mp4", SceneSpec("steps", fps=25, duration_s=1.4, seed=2), 0.2, 1.0,
             "footsteps gravel"),
)


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_reel(tmp_path_factory.mktemp("scaleout-reel"), name=REEL, shots=SHOTS)


@pytest.fixture
def shot_runs_here(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`run_deployment` of the shot runs, run in this process: what each one returned."""
    import prefect.deployments
    from prefect.client.orchestration import get_client

    from flows import scaleout

    returned: list[dict[str, Any]] = []

    def run_deployment(name: str, *, timeout: float, parameters: dict[str, Any]) -> Any:
        assert name == "foley-shots/shots" and timeout == 0
        state = scaleout.shot_batch(**parameters, return_state=True)
        returned.append(state.result())
        with get_client(sync_client=True) as client:
            return client.read_flow_run(state.state_details.flow_run_id)

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    return returned


def anna_edits(shot: str) -> int:
    """A person's edit of the shot's latest envelope (its last event dropped): its version."""
    from db import api
    from tasks.decisions import load_envelope, save_version

    with runtime.db().session() as s:
        env = api.latest_envelope(s, api.get_shot(s, REEL, shot).id)
        doc, ref, sid, base = load_envelope(env.artifact.ref()), env.artifact.ref(), \
            env.shot_id, env.version
    return save_version(sid, {**doc, "events": doc["events"][:-1]}, source="edit",
                        derived_from=ref, created_by="user:anna", base_version=base)[0]


def delivery_summary() -> str:
    """The newest delivery summary artifact of the reel."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [art] = client.read_latest_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{REEL.replace('_', '-')}-delivery"])))
    return art.data


def test_a_shot_runs_prediction_over_a_persons_edit_is_said_once_by_the_pass(
        reel: Path, tmp_path: Path, foley_home: Path, prefect_harness: None,
        shot_runs_here: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    """anna edits SH020, then the editor changes its Foley note; the next pass hands each shot
    to a shot run, whose new prediction goes over her edit. The pass — which sees every shot,
    a run only its batch — says so once, in its log, its report and its delivery summary; the
    shot run returns it and does not log it. A rerun says nothing."""
    from flows.foley_pass import foley_pass

    def warned() -> list[tuple[str | None, str]]:
        return [(getattr(r, "flow_name", None), r.getMessage()) for r in caplog.records
                if r.levelno == logging.WARNING and "went over" in r.getMessage()]

    edit = tmp_path / "edit" / reel.name
    shutil.copytree(reel.parent, edit.parent)
    first = foley_pass(str(edit), str(tmp_path / "out"), approve="queue")
    assert [sh.status for sh in first.shots] == ["pending_review"] * 2
    assert anna_edits("SH020") == 2
    edit.write_text(edit.read_text().replace("FOLEY: footsteps gravel", "FOLEY: footsteps mud"))
    report = foley_pass(str(edit), str(tmp_path / "out"), approve="queue", shots_per_run=1)
    notes = {sh.name: sh.note for sh in report.shots if sh.note}
    assert list(notes) == ["SH020"], notes
    assert notes["SH020"].startswith("SH020: the new prediction v3 went over v2, an edit by "
                                     "user:anna")
    assert [(r["shots"], r["notes"]) for r in shot_runs_here] == [  # the runs predicted
        ({"SH010": "pending_review"}, {}), ({"SH020": "pending_review"}, notes)]
    assert warned() == [("foley-pass", notes["SH020"])]
    assert f"## New predictions over a person's work\n\n- {notes['SH020']}" in \
        delivery_summary()

    again = foley_pass(str(edit), str(tmp_path / "out"), approve="queue", shots_per_run=1)
    assert len(shot_runs_here) == 4 and not any(sh.note for sh in again.shots)
    assert len(warned()) == 1
