"""The overnight pass as a studio runs it: a real Prefect server, the deployments of
infra/prefect.yaml registered with `prefect deploy`, a process worker on the pool, the nightly
deployment triggered on an inbox holding two reels.

Both reels must be delivered, the morning summary artifact written and the webhook called;
a second trigger finds nothing new (no reel passed again, no claim taken again).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.service_prefect import prefect_server, wait_flow_run
from tests.test_nightly import B, age, reels, webhook  # noqa: F401 (fixtures)


def _artifact(server: Any, key: str, flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url}), \
            get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    [art] = [a for a in arts if a.flow_run_id == flow_run_id]
    return art.data


def _trigger(server: Any, name: str) -> Any:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url}):
        return run_deployment(name, timeout=0)


@pytest.mark.slow
def test_nightly_deployment_on_a_worker(tmp_path: Path, reels: Path,  # noqa: F811
                                        webhook: tuple[str, list[dict[str, Any]]]) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.nightly import SUMMARY_KEY

    url, received = webhook
    box = tmp_path / "inbox"
    for name in ("reel_a", B):
        shutil.copytree(reels / name, box / name)
    age(box, 3600)
    home = tmp_path / "prefect"
    home.mkdir()
    with prefect_server(home) as server:
        server.deploy(tmp_path, FOLEY_NIGHTLY_CRON="0 1 * * *", FOLEY_TIMEZONE="Europe/London")
        with temporary_settings({PREFECT_API_URL: server.url}), \
                get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("foley-nightly/nightly")
        [sched] = dep.schedules
        assert (sched.schedule.cron, sched.schedule.timezone, sched.active) == (
            "0 1 * * *", "Europe/London", True)

        server.start_worker("night", {
            "FOLEY_HOME": str(tmp_path / "foley-home"), "FOLEY_INBOX": str(box),
            "FOLEY_INBOX_SETTLE_S": "60", "FOLEY_DELIVERIES": str(tmp_path / "deliveries"),
            "FOLEY_WEBHOOK_URL": url, "FOLEY_WORKERS": "2"})
        first = _trigger(server, "foley-nightly/nightly")
        assert wait_flow_run(server, first.id) == "Completed", server.worker_log("night")
        for reel in ("reel_a", B):
            manifest = json.loads((tmp_path / "deliveries" / reel / "manifest.json").read_text())
            assert [s["status"] for s in manifest["shots"]] == ["pending_review"] * 2
        summary = _artifact(server, SUMMARY_KEY, first.id)
        assert "**2** reel(s) passed tonight" in summary and "**4 waiting for review**" in summary
        assert [h["totals"]["shots"] for h in received] == [4]

        second = _trigger(server, "foley-nightly/nightly")
        assert wait_flow_run(server, second.id) == "Completed", server.worker_log("night")
        again = _artifact(server, SUMMARY_KEY, second.id)
        assert "**0** reel(s) passed tonight, 2 unchanged" in again
        assert [h["totals"]["shots"] for h in received] == [4, 0]
        assert [h["unchanged"] for h in received] == [0, 2]


@pytest.mark.slow
def test_foley_serve_schedules_runs_now_and_stays_scheduled(
        tmp_path: Path, reels: Path) -> None:  # noqa: F811
    """`foley serve --run-now` on a studio's server: the nightly deployment is registered with
    the cron in the given zone, one run starts at once and delivers, and stopping `foley serve`
    leaves the schedule active (not paused)."""
    import subprocess
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.service_prefect import stop

    box = tmp_path / "inbox"
    shutil.copytree(reels / "reel_a", box / "reel_a")
    age(box, 3600)
    home = tmp_path / "prefect"
    home.mkdir()
    with prefect_server(home) as server:
        env = server.env(FOLEY_HOME=str(tmp_path / "foley-home"), FOLEY_INBOX=str(box),
                         FOLEY_DELIVERIES=str(tmp_path / "deliveries"))
        serve = subprocess.Popen(
            [str(Path(sys.executable).with_name("foley")), "serve", "--cron", "15 2 * * *",
             "--timezone", "America/Los_Angeles", "--run-now"], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"),
            start_new_session=True)
        try:
            manifest = tmp_path / "deliveries" / "reel_a" / "manifest.json"
            deadline = time.monotonic() + 600
            while not manifest.exists():
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the --run-now pass did not deliver"
                time.sleep(1)
        finally:
            stop(serve)
        assert [s["status"] for s in json.loads(manifest.read_text())["shots"]] == \
            ["pending_review"] * 2
        with temporary_settings({PREFECT_API_URL: server.url}), \
                get_client(sync_client=True) as client:
            [dep] = client.read_deployments(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["nightly"])))
        [sched] = dep.schedules
        assert (sched.schedule.cron, sched.schedule.timezone) == (
            "15 2 * * *", "America/Los_Angeles")
        assert sched.active and not dep.paused  # foley serve stopped; the nights go on
