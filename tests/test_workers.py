"""Workers and scale-out: the GPU concurrency limit on a real Prefect server, two process
workers sharing one reel's shots, and a shot whose stage fails once retried on its own.

Concurrency is measured from the task runs the server recorded (their Running → Completed
times), never asserted from wall-clock durations.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.demo import DemoShot, make_demo_reel
from models.scenes import SceneSpec
from tests.service_pg import PostgresServer
from tests.service_prefect import REPO, prefect_server

KINDS = ("bounce", "steps", "pass", "bounce")
SHOTS = tuple(DemoShot(f"{k}_{i}.mp4", SceneSpec(k, fps=24, duration_s=1.4, seed=i), 0.2, 1.0,
                       "impacts wood" if k == "bounce" else None)
              for i, k in enumerate(KINDS))
SHOT_STAGES = ("proxy", "features", "envelope-predict", "synth", "spatial")
FOLEY = str(Path(sys.executable).with_name("foley"))


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_reel(tmp_path_factory.mktemp("workers-reel"), name="workers_reel",
                          shots=SHOTS)


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The largest number of intervals open at one instant (ends before starts on ties)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def task_runs(flow_run_id: str, name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, TaskRunFilter,
                                                TaskRunFilterName)

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))


def pass_flow_run(task: str) -> str:
    """The Prefect flow run that recorded the activities of `task` (one pass in the test)."""
    from sqlalchemy import select

    from db.schema import Activity
    from tasks import runtime

    with runtime.db().session() as s:
        ids = set(s.scalars(select(Activity.prefect_flow_run_id).where(Activity.task == task)))
    [run_id] = ids
    return run_id


def test_gpu_stages_are_held_to_the_gpu_slots(
        reel: Path, tmp_path: Path, foley_home: Path, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from flows import scaleout
    from flows.foley_pass import foley_pass
    from flows.settings import get_settings

    monkeypatch.setenv("FOLEY_WORKERS", "4")  # four shots in flight ...
    monkeypatch.setenv("FOLEY_GPU_SLOTS", "1")  # ... one GPU
    run = foley_pass.with_options(task_runner=scaleout.task_runner(get_settings()))
    report = run(str(reel), str(tmp_path / "out"), approve="auto", envelope_estimator="model")
    assert [sh.status for sh in report.shots] == ["pending"] * 4  # all delivered
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("tag:gpu")
    assert limit.limit == 1

    flow_run_id = pass_flow_run("envelope-predict")
    gpu = task_runs(flow_run_id, "envelope")
    assert len(gpu) == 4 and all("gpu" in t.tags for t in gpu)
    assert max_overlap([(t.start_time, t.end_time) for t in gpu]) == 1
    # all four were waiting for the GPU at once: the limit, not the scheduling, serialized them
    assert max(t.created for t in gpu) < min(t.end_time for t in gpu)
    cpu = task_runs(flow_run_id, "features")
    assert not any("gpu" in t.tags for t in cpu)
    assert max_overlap([(t.start_time, t.end_time) for t in cpu]) >= 2


def test_a_shot_that_fails_once_is_retried_on_its_own(
        reel: Path, tmp_path: Path, foley_home: Path, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient I/O error (a file server hiccup) in one shot's proxy: that task alone runs
    again after FOLEY_TASK_RETRY_DELAY_S and the reel delivers in full."""
    from flows.foley_pass import foley_pass
    from tasks import media

    monkeypatch.setenv("FOLEY_TASK_RETRY_DELAY_S", "0.5")
    real, failed = media.make_proxy, []

    def hiccup(src: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(src).name == SHOTS[1].media and not failed:
            failed.append(src)
            raise OSError(5, "Input/output error (file server went away)", str(src))
        return real(src, *args, **kwargs)

    monkeypatch.setattr(media, "make_proxy", hiccup)
    report = foley_pass(str(reel), str(tmp_path / "out"), approve="auto")
    assert failed and [sh.status for sh in report.shots] == ["pending"] * 4
    counts = sorted(t.run_count for t in task_runs(pass_flow_run("proxy"), "proxy"))
    assert counts == [1, 1, 1, 2]  # the failed shot's proxy ran twice, the others once
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["shots"]] == ["delivered"] * 4


def test_bad_media_is_not_retried(tmp_path: Path, reel: Path, foley_home: Path,
                                  prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.foley_pass import foley_pass

    monkeypatch.setenv("FOLEY_TASK_RETRY_DELAY_S", "30")  # a retry would show in run_count
    broken = tmp_path / "edit"
    shutil.copytree(reel.parent, broken)
    (broken / "media" / SHOTS[2].media).write_bytes(b"not a movie at all" * 100)
    report = foley_pass(str(broken / reel.name), str(tmp_path / "out"), approve="auto")
    assert [sh.name for sh in report.shots if sh.status != "pending"] == ["SH030"]
    assert max(t.run_count for t in task_runs(pass_flow_run("proxy"), "proxy")) == 1


@pytest.mark.slow
def test_two_workers_share_one_reels_shots(reel: Path, tmp_path: Path,
                                           pg_server: PostgresServer) -> None:
    """`foley run` with FOLEY_SHOTS_PER_RUN=1 hands each shot to a `foley-shots` flow run on
    the pool; two process workers (one run at a time each) both take some; the reel is
    delivered once and every stage of every shot was computed exactly once.

    Then anna edits SH010 and the editor changes its Foley note: the next pass's shot run
    predicts it again, over her edit. The pass — which sees every shot, a run only its batch —
    says so once; the shot run does not. A rerun says nothing."""
    import uuid

    import psycopg2

    from db import api
    from tasks import runtime
    from tasks.decisions import load_envelope, save_version

    db_url = pg_server.create_database(f"foley_{uuid.uuid4().hex[:10]}")
    settings = {"FOLEY_DB_URL": db_url, "FOLEY_STORE_URL": str(tmp_path / "store"),
                "FOLEY_WORKERS": "1"}
    edit = tmp_path / "edit" / reel.name
    shutil.copytree(reel.parent, edit.parent)
    home = tmp_path / "prefect"
    home.mkdir()
    with prefect_server(home) as server:
        server.deploy(tmp_path, FOLEY_NIGHTLY_CRON="0 1 * * *", FOLEY_TIMEZONE="UTC")
        for name in ("A", "B"):
            server.start_worker(name, {**settings, "FOLEY_WORKER_NAME": name,
                                       "FOLEY_HOME": str(tmp_path / f"home-{name}")})

        def foley_run() -> subprocess.CompletedProcess[str]:
            run = subprocess.run(
                [FOLEY, "run", str(edit), "--out", str(tmp_path / "out"), "--approve", "auto"],
                cwd=REPO, capture_output=True, text=True, timeout=900,
                env=server.env(**settings, FOLEY_SHOTS_PER_RUN="1",
                               FOLEY_HOME=str(tmp_path / "home-pass")))
            assert run.returncode == 0, (run.stdout, run.stderr[-3000:],
                                         server.worker_log("A"), server.worker_log("B"))
            return run

        foley_run()
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        conn = psycopg2.connect(db_url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT r.worker, s.name FROM shot_runs r "
                        "JOIN shots s ON s.id = r.shot_id")
            by_worker: dict[str, set[str]] = {}
            for worker, shot in cur.fetchall():
                by_worker.setdefault(worker, set()).add(shot)
            cur.execute("SELECT task, count(*) FROM activities WHERE status = 'completed' "
                        "AND shot_id IS NOT NULL GROUP BY task")
            computed = dict(cur.fetchall())
        conn.close()
        runtime.configure(db_url, str(tmp_path / "store"))
        with runtime.db().session() as s:   # anna's edit: SH010's last event dropped
            env = api.latest_envelope(s, api.get_shot(s, "workers_reel", "SH010").id)
            doc, ref, sid = load_envelope(env.artifact.ref()), env.artifact.ref(), env.shot_id
        assert save_version(sid, {**doc, "events": doc["events"][:-1]}, source="edit",
                            derived_from=ref, created_by="user:anna", base_version=1)[0] == 2
        runtime.db().dispose()
        text = edit.read_text()
        edit.write_text(text.replace("FOLEY: impacts wood", "FOLEY: impacts metal", 1))
        over = foley_run()
        again = foley_run()
        workers_said = "".join((home / f"worker-{n}.log").read_text(errors="replace")
                               for n in ("A", "B"))
    said = [ln.strip() for ln in over.stdout.splitlines() if "went over" in ln]
    assert len(said) == 1 and said[0].startswith(
        "SH010: the new prediction v3 went over v2, an edit by user:anna"), over.stdout
    assert "went over" not in over.stderr + again.stdout + again.stderr + workers_said
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:   # the shot run made that prediction, not the pass
        cur.execute("SELECT a.prefect_flow_run_id FROM activities a JOIN shots s ON "
                    "s.id = a.shot_id WHERE s.name = 'SH010' AND a.task = 'envelope-predict' "
                    "AND a.status = 'completed' ORDER BY a.ended_at DESC LIMIT 1")
        [(predicted_by,)] = cur.fetchall()
        cur.execute("SELECT count(*) FROM shot_runs WHERE prefect_flow_run_id = %s",
                    (predicted_by,))
        assert cur.fetchone() == (1,)
    conn.close()
    assert set(by_worker) == {"A", "B"} and all(by_worker.values()), by_worker
    assert set().union(*by_worker.values()) == {"SH010", "SH020", "SH030", "SH040"}
    assert sum(len(v) for v in by_worker.values()) == 4  # each shot worked by one worker
    assert {computed[t] for t in ("proxy", "features", "envelope-predict", "synth")} == {4}
    assert [s["status"] for s in manifest["shots"]] == ["delivered"] * 4


@pytest.mark.slow
def test_the_dask_task_runner_delivers_the_reel(
        reel: Path, tmp_path: Path, foley_home: Path, prefect_harness: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FOLEY_TASK_RUNNER=dask: the stages run in a local Dask cluster's worker processes
    (pointed at the database and store by the `flows.scaleout` preload)."""

    from flows import scaleout
    from flows.foley_pass import foley_pass
    from flows.settings import get_settings

    from sqlalchemy import func, select

    from db.schema import Activity
    from tasks import runtime
    from tasks.stage import OVERHEAD

    monkeypatch.setenv("FOLEY_TASK_RUNNER", "dask")
    monkeypatch.setenv("FOLEY_WORKERS", "2")
    runner = scaleout.task_runner(get_settings())
    assert type(runner).__name__ == "DaskTaskRunner"
    OVERHEAD.reset()  # counts the stages computed in this process only
    report = foley_pass.with_options(task_runner=runner)(str(reel), str(tmp_path / "out"),
                                                         approve="auto")
    assert [sh.status for sh in report.shots] == ["pending"] * 4
    with runtime.db().session() as s:
        shot_stages = dict(s.execute(select(Activity.task, func.count()).where(
            Activity.status == "completed", Activity.shot_id.is_not(None))
            .group_by(Activity.task)).all())
    assert {shot_stages[t] for t in SHOT_STAGES} == {4}, shot_stages
    # none of them in this process: here only the reel's conform and manifest were computed
    assert OVERHEAD.snapshot()["stages_computed"] < len(SHOT_STAGES), OVERHEAD.snapshot()
