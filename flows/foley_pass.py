"""The Foley pass: an edit in, a conformed delivery folder out.

The flow only orchestrates. It runs each stage for every shot at once (a *wave*: all proxies,
then all features, …) on Prefect's thread pool, so a stage's shots run in parallel and one bad
shot is caught when its future resolves — it is reported and the rest of the reel delivers.

A service going away is not a bad shot. The stages wait out a database or S3 restart
themselves (bounded backoff in `tasks.stage.transaction` and the store); a shot whose task
still lost its database connection half-way is run again, on the same budget, once the
database answers (its finished stages are reused). A database or store that stays away ends
the pass with `PassAborted`: one message naming the service and saying to rerun, which
`configured_pass()` prints — no traceback, exit code 1. Completed work is kept.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import DBAPIError

from db import api
from db.engine import (DatabaseUnavailable, is_transient, reason_of, retry_db, retry_policy,
                       unavailable)
from flows import library as library_flow
from flows import scaleout
from flows.artifacts import artifact_key, md
from flows.settings import get_settings
from tasks import decisions, envelope, ingest, prepare, runtime, spatial, synth
from tasks.conform import ShotDelivery, conform, delivered
from tasks.delivery import DeliveryFolderError, check_delivery_folder
from tasks.stage import transaction
from tasks.store import StoreUnavailable

APPROVE_MODES = ("auto", "queue")
OUTAGES = (DatabaseUnavailable, StoreUnavailable)


def check_approval(approve: str, threshold: float, *,
                   names: tuple[str, str] = ("--approve", "--approve-threshold")) -> None:
    """Raise ValueError naming the options (`names`: the mode's, the threshold's) unless the
    mode is known, the threshold lies in [0, 1] and is only set where the policy decides."""
    mode, limit = names
    is_ = "=" if mode.startswith("FOLEY_") else " "  # a setting, or a command-line option
    if approve not in APPROVE_MODES:
        raise ValueError(f"{mode} must be one of {', '.join(APPROVE_MODES)}, not {approve!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{limit} must lie between 0 and 1, not {threshold:g} (the lowest "
                         "event confidence policy:auto approves)")
    if threshold and approve != "auto":
        raise ValueError(f"{limit}{is_}{threshold:g} is the threshold of {mode}{is_}auto; "
                         f"with {mode}{is_}{approve} no envelope is approved automatically — "
                         f"drop {limit} or use {mode}{is_}auto")


class PassAborted(RuntimeError):
    """The pass cannot go on: its database or artifact store stayed unreachable. The message
    names the service and says to rerun; what completed is kept and reused by the rerun."""


@dataclass
class ShotState:
    shot_id: int
    name: str
    record_in: str
    duration_s: float
    fps: float
    hint: str | None
    status: str = "pending"
    reason: str | None = None
    refs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # a new prediction went over a person's work

    def fail(self, stage: str, exc: BaseException) -> None:
        self.status = "failed"
        self.reason = f"{stage}: {exc}"


@dataclass
class PassReport:
    reel: str
    out_dir: str
    manifest: dict[str, Any]
    stage_seconds: dict[str, float]
    failed: list[tuple[str, str]]
    skipped: list[tuple[str, str]]
    flow_seconds: float = 0.0  # inside the flow: the stages plus bookkeeping
    shots: list[ShotState] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.skipped else 0


def _wave(
    label: str,
    shots: Sequence[ShotState],
    submit: Callable[[ShotState], PrefectFuture[Any]],
    collect: Callable[[ShotState, Any], None],
    times: dict[str, float],
    progress: Progress,
) -> None:
    """Submit one stage for every live shot, then gather results (failures stay per shot;
    an unreachable database or store aborts the pass, see `PassAborted`)."""
    live = [sh for sh in shots if sh.status == "pending"]
    t0 = time.perf_counter()
    bar = progress.add_task(label, total=len(live))
    futures = [(sh, submit(sh)) for sh in live]
    for sh, fut in futures:
        try:
            collect(sh, _settle(label, sh, fut, submit))
        except OUTAGES as exc:
            raise PassAborted(str(exc)) from exc
        except Exception as exc:  # one bad shot never sinks the reel
            if is_transient(exc):  # the database never came back within the budget
                raise PassAborted(str(_db_outage(exc))) from exc
            sh.fail(label, exc)
        progress.advance(bar)
    times[label] = times.get(label, 0.0) + time.perf_counter() - t0


def _settle(label: str, sh: ShotState, fut: PrefectFuture[Any],
            submit: Callable[[ShotState], PrefectFuture[Any]]) -> Any:
    """The shot's result. A task that lost its database connection half-way (a transaction cut
    by a server restart) is submitted again after a backoff (db.engine's retry policy); every
    stage it had finished is reused, so only the interrupted work is redone."""
    policy = retry_policy()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fut.result()
        except Exception as exc:
            if not is_transient(exc) or attempt == policy.attempts:
                raise
            delay = policy.delay(attempt)
            _logger().info("%s %s: database connection lost (%s); again in %.1f s",
                           label, sh.name, reason_of(exc), delay)
            time.sleep(delay)
            fut = submit(sh)
    raise AssertionError("unreachable")


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # outside a flow run
        return logging.getLogger("foleyflow.pass")


def _db_outage(exc: BaseException) -> DatabaseUnavailable:
    """The outage error for a lost connection that outlasted the retry budget."""
    policy = retry_policy()
    return unavailable(runtime.db_url(), policy.attempts, policy.budget_s, reason_of(exc))


@flow(name="foley-pass", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def foley_pass(
    timeline: str,
    out: str,
    fps: float | None = None,
    media_root: str | None = None,
    approve: str = "auto",
    library: str | None = None,
    seed: int = 0,
    envelope_estimator: str = "baseline",
    approve_threshold: float = 0.0,
    spatial_options: dict[str, Any] | None = None,
    shots_per_run: int | None = None,
    backend: str = "sampler",
    envelope_checkpoint: str | None = None,
) -> PassReport:
    """Ingest the edit, analyse every shot, hold envelopes for approval, synthesize the approved
    ones, and conform the reel into the delivery folder `out`. `spatial_options`: the reel's
    camera and B-format settings (`tasks.spatial.reel_spatial_params`); `shots_per_run` > 0
    hands the shots to `foley-shots` flow runs on the work pool (default FOLEY_SHOTS_PER_RUN);
    `backend`: the synthesis backend, sampler or diffusion (`tasks.synth`);
    `envelope_checkpoint`: the RMS-Mapper checkpoint of the model estimator (default
    FOLEY_ENVELOPE_CHECKPOINT, else the shipped one)."""
    started = time.perf_counter()
    check_approval(approve, approve_threshold)
    settings = get_settings()
    try:
        retry_db(settings.configure_runtime, url=settings.resolved_db_url())
        db = runtime.db()
        library = library or settings.library
        times: dict[str, float] = {}
        retry_db(lambda: library_flow.ensure_library(library), url=db.url)
        times["library"] = time.perf_counter() - started

        edit, spec = ingest.read_timeline(timeline, fps=fps, media_root=media_root)
        placement = spatial.reel_spatial_params(edit, spec, **(spatial_options or {}))
        check_delivery_folder(out, spec.name, edit=timeline,  # before any work
                              option="delivery folder",
                              media=[sh.source_path for sh in spec.shots if sh.source_path])
        with contextlib.ExitStack() as held:  # a second pass of this reel waits its turn
            retry_db(lambda: held.enter_context(api.reel_lock(db, spec.name)), url=db.url)
            report = _run(spec, timeline, out, approve, library, seed, times, started,
                          envelope_estimator, approve_threshold, placement,
                          settings.shots_per_run if shots_per_run is None else shots_per_run,
                          backend, envelope_checkpoint or settings.envelope_checkpoint)
    except OUTAGES as exc:
        raise PassAborted(str(exc)) from exc
    except DBAPIError as exc:
        if is_transient(exc):
            raise PassAborted(str(_db_outage(exc))) from exc
        raise
    publish(report)
    return report


def _run(spec: ingest.ReelSpec, timeline: str, out: str, approve: str, library: str, seed: int,
         times: dict[str, float], started: float, estimator: str = "baseline",
         threshold: float = 0.0, placement: dict[str, Any] | None = None,
         shots_per_run: int = 0, backend: str = "sampler",
         checkpoint: str | None = None) -> PassReport:
    """The pass proper, under the reel's lock."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    reel = prepare.ingest_reel(timeline, spec, delivery_dir=str(Path(out).resolve()),
                               pass_params={"library": library, "seed": seed,
                                            "spatial": placement or {}, "backend": backend})
    times["ingest"] = time.perf_counter() - t0
    shots = []
    for sid, sp in zip(reel["shot_ids"], spec.shots):
        st = ShotState(sid, sp.name, ingest.timecode(spec.start_frame + sp.record_in_frame,
                       spec.rate_num, spec.rate_den, spec.drop_frame), sp.duration_s,
                       sp.source_rate, sp.foley_hint)
        if sp.skipped_reason:
            st.status, st.reason = "skipped", sp.skipped_reason
        shots.append(st)
    logger.info("reel %s: %d shots, starts at %s", spec.name, len(shots), spec.start_timecode)

    scaleout.distribute(spec.name, shots, times, per_run=shots_per_run, params={
        "approve": approve, "library": library, "seed": seed,
        "envelope_estimator": estimator, "approve_threshold": threshold, "backend": backend,
        "envelope_checkpoint": checkpoint})
    work_shots(shots, approve=approve, library=library, seed=seed, estimator=estimator,
               threshold=threshold, times=times, backend=backend, checkpoint=checkpoint)
    said = transaction(lambda s: decisions.unreported(s, [sh.shot_id for sh in shots]))
    for sh in shots:  # said by the pass that completes: in its log, report and summary
        if sh.shot_id in said.notes:
            sh.note = said.notes[sh.shot_id].message()
            logger.warning("%s", sh.note, extra={"in_report": True})

    t0 = time.perf_counter()
    deliveries = [delivery(sh) for sh in shots]
    manifest = conform(reel["reel_id"], deliveries, out)
    times["conform"] = time.perf_counter() - t0
    transaction(lambda s: decisions.mark_reported(s, said.ids))
    report = PassReport(
        reel=spec.name, out_dir=str(out), manifest=manifest, stage_seconds=times,
        failed=[(sh.name, sh.reason or "") for sh in shots if sh.status == "failed"],
        skipped=[(sh.name, sh.reason or "") for sh in shots if sh.status == "skipped"],
        flow_seconds=time.perf_counter() - started,
    )
    report.shots = shots
    return report


def work_shots(shots: Sequence[ShotState], *, approve: str, library: str, seed: int,
               estimator: str, threshold: float, times: dict[str, float],
               backend: str = "sampler", checkpoint: str | None = None) -> None:
    """Every stage of every live shot, wave by wave: proxy, features, envelope, approval (with
    --approve auto), synthesis and spatialization of the approved ones. Each stage retries a
    transient failure on its own (`scaleout.stage`); envelope model inference is GPU work."""
    def keep(key: str) -> Callable[[ShotState, Any], None]:
        def collect(sh: ShotState, res: dict[str, Any]) -> None:
            sh.refs[key] = res[key] if isinstance(res, dict) and key in res else res
        return collect

    proxy, features = scaleout.stage(prepare.make_proxy), scaleout.stage(prepare.extract_features)
    predict = scaleout.stage(envelope.predict_envelope, gpu=estimator == "model")
    approve_task = scaleout.stage(decisions.auto_approve)
    synthesize = scaleout.stage(synth.synthesize, gpu=backend == "diffusion")
    spatialize = scaleout.stage(spatial.spatialize)
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False,
                  console=Console(stderr=True)) as progress:  # stdout stays for data
        _wave("proxy", shots, lambda sh: proxy.submit(sh.shot_id), keep("proxy"),
              times, progress)
        _wave("features", shots, lambda sh: features.submit(
            sh.shot_id, sh.refs["proxy"], sh.fps), keep("features"), times, progress)
        _wave("envelope", shots, lambda sh: predict.submit(
            sh.shot_id, sh.refs["features"], shot=sh.name, duration_s=sh.duration_s,
            prompt=sh.hint, estimator=estimator, checkpoint=checkpoint), keep("envelope"),
              times, progress)
        if approve == "auto":
            _wave("approve", shots, lambda sh: approve_task.submit(sh.shot_id,
                                                                   threshold=threshold),
                  keep("state"), times, progress)
        review_state(shots)
        _wave("synth", shots, lambda sh: synthesize.submit(
            sh.shot_id, library=library, seed=seed, backend=backend), keep("synth"), times,
            progress)
        _wave("spatial", shots, lambda sh: spatialize.submit(
            sh.shot_id, sh.refs["synth"]["mono"], sh.refs["synth"]["envelope"]),
            keep("spatial"), times, progress)


def configured_pass() -> Callable[..., PassReport]:
    """The pass flow with the configured task runner (FOLEY_WORKERS threads, or Dask), as the
    command line runs it: a pass aborted by an unreachable service ends with its one message on
    stderr and exit code 1 (`typer.Exit`), without a traceback."""
    runner = foley_pass.with_options(task_runner=scaleout.task_runner(get_settings()))

    def run(*args: Any, **kwargs: Any) -> PassReport:
        quiet_outages_on_console()
        try:
            return runner(*args, **kwargs)
        except PassAborted as exc:
            import typer

            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    return run


class _OutageFilter(logging.Filter):
    """Keeps the console to one message when a service is away: the tracebacks and state lines
    Prefect and SQLAlchemy log for tasks that hit the outage are left to the Prefect UI / API
    log; the pass reports the outage itself (PassAborted). Likewise a message the command prints
    in its own report (logged with `extra={"in_report": True}`) is not printed twice."""

    NAMES = ("PassAborted", "DatabaseUnavailable", "StoreUnavailable", "DeliveryDiskError",
             "DeliveryFolderError")
    DISCONNECT = ("server closed the connection", "terminating connection", "connection refused",
                  "could not connect", "connection to server", "connection already closed")

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "in_report", False):
            return False
        if record.exc_info and record.exc_info[1] is not None and _is_outage(record.exc_info[1]):
            return False
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if any(n in text for n in self.NAMES):
            return False
        low = text.lower()
        return not (("OperationalError" in text or "InterfaceError" in text)
                    and any(d in low for d in self.DISCONNECT))


def _is_outage(exc: BaseException) -> bool:
    """Is `exc` (or what caused it) an unreachable database or store, or the delivery folder's
    refusal or full disk — each said by the command in one line, so not logged on the console?"""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (PassAborted, *OUTAGES)) or is_transient(e):
            return True
        if isinstance(e, DeliveryFolderError):
            return True  # the command says it in one line (flows.cli.main)
        mod = type(e).__module__.split(".")[0]
        if mod in ("psycopg2", "psycopg") and type(e).__name__ in ("OperationalError",
                                                                   "InterfaceError"):
            return True  # a raw driver error (SQLAlchemy's pool logs these on reset)
        e = e.__cause__ or e.__context__
    return False


def quiet_outages_on_console() -> None:
    """Install `_OutageFilter` on the console handlers (once per process)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and \
                not isinstance(handler, logging.FileHandler) and \
                not any(isinstance(f, _OutageFilter) for f in handler.filters):
            handler.addFilter(_OutageFilter())


def review_state(shots: Sequence[ShotState]) -> None:
    """Shots whose latest envelope is not approved stop here (they wait in the queue)."""
    pending = [sh for sh in shots if sh.status == "pending"]

    def latest(s: Any) -> list[tuple[str, int] | None]:
        envs = [api.latest_envelope(s, sh.shot_id) for sh in pending]
        return [(env.state, env.version) if env else None for env in envs]

    for sh, env in zip(pending, transaction(latest)):
        if env is None or env[0] != "approved":
            sh.status = env[0] if env else "failed"
            sh.refs["envelope_version"] = env[1] if env else None


def delivery(sh: ShotState) -> ShotDelivery:
    env = sh.refs.get("envelope") or {}
    if sh.status == "pending" and "spatial" in sh.refs:
        return delivered(sh.shot_id, envelope=sh.refs["synth"]["envelope"],
                         envelope_version=env.get("version"), spatial=sh.refs["spatial"],
                         proxy=sh.refs["proxy"])
    return ShotDelivery(sh.shot_id, sh.status, reason=sh.reason,
                        envelope_version=env.get("version"))


def publish(report: PassReport) -> None:
    """Prefect UI artifacts: the shot table and a summary of the delivery."""
    shots = report.shots
    rows = [
        {"shot": sh.name, "record in": sh.record_in, "duration s": round(sh.duration_s, 3),
         "status": "delivered" if sh.status == "pending" else sh.status,
         "envelope": (sh.refs.get("envelope") or {}).get("version"),
         "reason": sh.reason or "", "foley": sh.hint or ""}
        for sh in shots
    ]
    key = artifact_key(report.reel)
    create_table_artifact(rows, key=f"{key}-shots", description=f"Shots of {report.reel}")
    lines = [f"# Foley delivery: {md(report.reel)}", "",
             f"Delivered to `{report.out_dir}`; timeline starts "
             f"{report.manifest['timeline_start']}.",
             "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report.stage_seconds.items()]
    if report.failed or report.skipped:
        lines += ["", "## Not delivered", ""]
        lines += [f"- **{md(n)}**: {md(r)}" for n, r in report.failed + report.skipped]
    if any(sh.note for sh in shots):
        lines += ["", "## New predictions over a person's work", ""]
        lines += [f"- {sh.note}" for sh in shots if sh.note]  # its code span: as written
    create_markdown_artifact("\n".join(lines), key=f"{key}-delivery", description="Delivery summary")
    if any(sh.status in ("pending_review", "retake_requested") for sh in shots):
        from flows.review import publish_queue

        publish_queue(report.reel)  # the waiting shots, their plots and review links


def _worker_pass() -> Any:
    """`foley_pass` as deployments run it on a worker: the task runner of the worker's
    environment (FOLEY_WORKERS threads or Dask) when it loads the flow (2 threads if the
    settings are bad, so the module still imports and the pass reports the bad setting)."""
    return foley_pass.with_options(task_runner=scaleout.worker_task_runner())


worker_pass = _worker_pass()  # the entrypoint of infra/prefect.yaml's deployments
