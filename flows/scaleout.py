"""Scale-out: task runners, GPU slots, per-stage retries and shot runs spread over workers.

Three ways a pass uses more than one core, from one machine to a farm:

- **Threads** (default): the pass runs each stage for FOLEY_WORKERS shots at once on Prefect's
  thread pool. ffmpeg, OpenCV and torch release the GIL, so threads fill the cores.
- **Dask** (FOLEY_TASK_RUNNER=dask, `prefect-dask`): the stage tasks run on a Dask cluster —
  a local one of FOLEY_WORKERS processes, or the scheduler at FOLEY_DASK_ADDRESS whose workers
  were started with `--preload flows.scaleout` (their `dask_setup` points each at the studio's
  database and store). docs/OPERATIONS.md has the cluster recipe.
- **Shot runs** (FOLEY_SHOTS_PER_RUN=N): the pass hands its shots, N per flow run, to the
  `foley-shots` deployment and waits; every worker polling the pool takes runs, so two
  workers (or twenty) share one reel. Each shot run works its shots through every stage and
  records who did what (`shot_runs`); the pass then walks the same stages, which are all cache
  hits for what the shot runs finished (content-keyed, `tasks.stage`), works whatever a shot
  run did not finish itself, and conforms. A worker that dies costs only its shots' redo.
  A shot run's new prediction over a person's work is said by the pass (which sees every
  shot), not by the run (which sees its batch): `distribute` reads it from the shot's versions.

GPU stages (envelope model inference, diffusion synthesis) carry the tag `gpu`; Prefect
holds tagged task runs to the global concurrency limit `tag:gpu`, which `stage()` sets to
FOLEY_GPU_SLOTS (the number of GPUs) on the server, so N GPUs run N such tasks at once across
every flow and worker on that server.

Every per-shot stage retries a transient failure (an I/O error, a crashed ffmpeg) on its own,
FOLEY_TASK_RETRIES times after FOLEY_TASK_RETRY_DELAY_S; bad input (unreadable media, an
envelope that is not approved) is not retried, and a database or store outage is waited out by
the pass itself (`foley_pass._settle`), not here.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect import Task, flow, get_run_logger
from prefect.client.schemas.objects import State, TaskRun
from prefect.task_runners import ThreadPoolTaskRunner

from db import inbox as inbox_db
from db.engine import DatabaseUnavailable, is_transient, retry_db
from flows.settings import Settings, get_settings
from tasks import ingest, runtime
from tasks.stage import transaction
from tasks.store import StoreUnavailable

if TYPE_CHECKING:
    from flows.foley_pass import ShotState

GPU_TAG = "gpu"
POLL_S = 1.0
log = logging.getLogger("foleyflow.scaleout")


# ---------------------------------------------------------------- task runners


def task_runner(settings: Settings) -> Any:
    """The task runner the settings ask for (threads, or Dask)."""
    if settings.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError("FOLEY_TASK_RUNNER=dask needs prefect-dask: "
                               "pip install prefect-dask (it is in requirements/base.txt)"
                               ) from exc
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": settings.workers, "threads_per_worker": 1, "processes": True,
            "preload": [__name__], "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=settings.workers)


def worker_task_runner() -> Any:
    """`task_runner` of this process's settings, for module-level flow objects that
    deployments load (2 threads if the settings are bad: the flow then reports them)."""
    try:
        return task_runner(get_settings())
    except ValueError:
        return ThreadPoolTaskRunner(max_workers=2)


def dask_setup(worker: Any) -> None:
    """Dask preload hook (`dask worker --preload flows.scaleout`): point the worker process at
    the configured database and store, as a flow does for its own process."""
    get_settings().configure_runtime()


# ---------------------------------------------------------------- stages: retries, GPU


def transient_only(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition of the per-shot stages: not bad input, not an outage (see module)."""
    exc = state.data if isinstance(state.data, BaseException) else \
        state.result(raise_on_failure=False)
    if not isinstance(exc, BaseException):
        return True
    if isinstance(exc, (ValueError, AssertionError, PermissionError)):
        return False  # bad media, a bad envelope, a shot not approved: the same next time
    return not (is_transient(exc) or isinstance(exc, (DatabaseUnavailable, StoreUnavailable)))


def stage(task: Task[..., Any], *, gpu: bool = False) -> Task[..., Any]:
    """A per-shot stage task with the configured retries; `gpu` tags it and makes sure the
    server's `tag:gpu` limit holds FOLEY_GPU_SLOTS."""
    settings = get_settings()
    options: dict[str, Any] = {"retries": settings.task_retries,
                               "retry_delay_seconds": settings.task_retry_delay_s,
                               "retry_condition_fn": transient_only}
    if gpu:
        ensure_gpu_slots(settings.gpu_slots)
        options["tags"] = {*task.tags, GPU_TAG}
    return task.with_options(**options)


def ensure_gpu_slots(slots: int) -> None:
    """Create or update the global concurrency limit `tag:gpu` to `slots`."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(f"tag:{GPU_TAG}", slots)


# ---------------------------------------------------------------- shot runs


def distribute(reel: str, shots: Sequence[ShotState], times: dict[str, float], *,
               per_run: int, params: dict[str, Any]) -> None:
    """Hand the live shots, `per_run` per flow run, to FOLEY_SHOTS_DEPLOYMENT and wait for them
    (no-op for per_run 0). Shots a run did not finish are left to the caller's own waves."""
    live = [sh for sh in shots if sh.status == "pending"]
    if per_run <= 0 or not live:
        return
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    settings, logger = get_settings(), _logger()
    t0 = time.perf_counter()
    batches = [live[i:i + per_run] for i in range(0, len(live), per_run)]
    try:
        runs = [run_deployment(settings.shots_deployment, timeout=0, parameters={
            "reel": reel, "shot_ids": [sh.shot_id for sh in batch], **params})
            for batch in batches]
    except ObjectNotFound:
        logger.warning("deployment %s is not registered (prefect deploy / foley serve): "
                       "this pass works its %d shots itself", settings.shots_deployment,
                       len(live))
        return
    logger.info("reel %s: %d shots handed to %d %s runs", reel, len(live), len(runs),
                settings.shots_deployment)
    states = _wait(runs, settings.shots_timeout_s)
    for name, count in sorted(states.items()):
        logger.info("reel %s: %d shot runs %s", reel, count, name)
    times["shot runs"] = time.perf_counter() - t0


def _wait(runs: Sequence[Any], timeout_s: float) -> dict[str, int]:
    """Poll the flow runs until all are final or `timeout_s` passed: {state name: count}."""
    from prefect.client.orchestration import get_client

    pending = {run.id for run in runs}
    final: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    pending.discard(run_id)
                    final[state.name] = final.get(state.name, 0) + 1
            if pending:
                time.sleep(POLL_S)
    if pending:
        final["still running (timed out)"] = len(pending)
    return final


def shot_states(shot_ids: Sequence[int]) -> list[ShotState]:
    """ShotStates of shots already ingested (a shot run's view of its batch)."""
    from db.schema import Shot
    from flows.foley_pass import ShotState

    def read(s: Any) -> list[ShotState]:
        out = []
        for sid in shot_ids:
            sh = s.get(Shot, sid)
            if sh is None:
                raise ValueError(f"shot id {sid} is not in the database: ingest its reel first")
            reel = sh.reel
            st = ShotState(sid, sh.name, ingest.timecode(
                reel.start_frame + sh.record_in_frame, reel.rate_num, reel.rate_den,
                reel.drop_frame), sh.duration_s, sh.source_rate, sh.foley_hint)
            if sh.skipped_reason:
                st.status, st.reason = "skipped", sh.skipped_reason
            out.append(st)
        return out

    return transaction(read)


@flow(name="foley-shots", flow_run_name="{reel}: {shot_ids}", log_prints=True)
def shot_batch(reel: str, shot_ids: list[int], approve: str = "auto", library: str = "kit",
               seed: int = 0, envelope_estimator: str = "baseline",
               approve_threshold: float = 0.0, backend: str = "sampler",
               envelope_checkpoint: str | None = None) -> dict[str, Any]:
    """Work a batch of one reel's shots through every stage on this worker (scale-out). A new
    prediction over a person's work is left for the pass to say (`decisions.unreported`)."""
    from flows.foley_pass import work_shots
    from prefect.runtime import flow_run

    settings = get_settings()
    retry_db(settings.configure_runtime, url=settings.resolved_db_url())
    shots = shot_states(shot_ids)
    t0, times = time.perf_counter(), {}
    work_shots(shots, approve=approve, library=library, seed=seed,
               estimator=envelope_estimator, threshold=approve_threshold, times=times,
               backend=backend, checkpoint=envelope_checkpoint)
    seconds = (time.perf_counter() - t0) / max(1, len(shots))
    worker = settings.resolved_worker_name()
    inbox_db.record_shot_runs(runtime.db(), [
        {"shot_id": sh.shot_id, "worker": worker, "prefect_flow_run_id": str(flow_run.id),
         "status": _outcome(sh), "seconds": seconds} for sh in shots])
    return {"worker": worker, "shots": {sh.name: _outcome(sh) for sh in shots},
            "stage_seconds": times}


def _outcome(sh: ShotState) -> str:
    return "delivered" if sh.status == "pending" and "spatial" in sh.refs else sh.status


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # outside a flow run
        return log


worker_shot_batch = shot_batch.with_options(task_runner=worker_task_runner())
