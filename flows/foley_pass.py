"""The Foley pass: an edit in, a conformed delivery folder out.

The flow only orchestrates. It runs each stage for every shot at once (a *wave*: all proxies,
then all features, …) on Prefect's thread pool, so a stage's shots run in parallel and one bad
shot is caught when its future resolves — it is reported and the rest of the reel delivers.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import api
from flows import library as library_flow
from flows.settings import get_settings
from tasks import decisions, envelope, ingest, prepare, runtime, spatial, synth
from tasks.conform import ShotDelivery, conform

APPROVE_MODES = ("auto", "queue")


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
    """Submit one stage for every live shot, then gather results (failures stay per shot)."""
    live = [sh for sh in shots if sh.status == "pending"]
    t0 = time.perf_counter()
    bar = progress.add_task(label, total=len(live))
    futures = [(sh, submit(sh)) for sh in live]
    for sh, fut in futures:
        try:
            collect(sh, fut.result())
        except Exception as exc:  # one bad shot never sinks the reel
            sh.fail(label, exc)
        progress.advance(bar)
    times[label] = times.get(label, 0.0) + time.perf_counter() - t0


@flow(name="foley-pass", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def foley_pass(
    timeline: str,
    out: str,
    fps: float | None = None,
    media_root: str | None = None,
    approve: str = "auto",
    library: str | None = None,
    seed: int = 0,
) -> PassReport:
    """Ingest the edit, analyse every shot, hold envelopes for approval, synthesize the approved
    ones, and conform the reel into the delivery folder `out`."""
    started = time.perf_counter()
    if approve not in APPROVE_MODES:
        raise ValueError(f"--approve must be one of {', '.join(APPROVE_MODES)}, not {approve!r}")
    settings = get_settings()
    settings.configure_runtime()
    library = library or settings.library
    times: dict[str, float] = {}
    library_flow.ensure_library(library)
    times["library"] = time.perf_counter() - started

    _, spec = ingest.read_timeline(timeline, fps=fps, media_root=media_root)
    with api.reel_lock(runtime.db(), spec.name):  # a second pass of this reel waits its turn
        report = _run(spec, timeline, out, approve, library, seed, times, started)
    publish(report)
    return report


def _run(spec: ingest.ReelSpec, timeline: str, out: str, approve: str, library: str, seed: int,
         times: dict[str, float], started: float) -> PassReport:
    """The pass proper, under the reel's lock."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    reel = prepare.ingest_reel(timeline, spec, delivery_dir=str(Path(out).resolve()))
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

    def keep(key: str) -> Callable[[ShotState, Any], None]:
        def collect(sh: ShotState, res: dict[str, Any]) -> None:
            sh.refs[key] = res[key] if isinstance(res, dict) and key in res else res
        return collect

    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as progress:
        _wave("proxy", shots, lambda sh: prepare.make_proxy.submit(sh.shot_id), keep("proxy"),
              times, progress)
        _wave("features", shots, lambda sh: prepare.extract_features.submit(
            sh.shot_id, sh.refs["proxy"], sh.fps), keep("features"), times, progress)
        _wave("envelope", shots, lambda sh: envelope.predict_envelope.submit(
            sh.shot_id, sh.refs["features"], shot=sh.name, duration_s=sh.duration_s,
            prompt=sh.hint), keep("envelope"), times, progress)
        if approve == "auto":
            _wave("approve", shots, lambda sh: decisions.auto_approve.submit(sh.shot_id),
                  keep("state"), times, progress)
        review_state(shots)
        _wave("synth", shots, lambda sh: synth.synthesize.submit(
            sh.shot_id, library=library, seed=seed), keep("synth"), times, progress)
        _wave("spatial", shots, lambda sh: spatial.spatialize.submit(
            sh.shot_id, sh.refs["synth"]["mono"], sh.refs["synth"]["envelope"]),
            keep("spatial"), times, progress)

    t0 = time.perf_counter()
    deliveries = [delivery(sh) for sh in shots]
    manifest = conform(reel["reel_id"], deliveries, out)
    times["conform"] = time.perf_counter() - t0
    report = PassReport(
        reel=spec.name, out_dir=str(out), manifest=manifest, stage_seconds=times,
        failed=[(sh.name, sh.reason or "") for sh in shots if sh.status == "failed"],
        skipped=[(sh.name, sh.reason or "") for sh in shots if sh.status == "skipped"],
        flow_seconds=time.perf_counter() - started,
    )
    report.shots = shots
    return report


def configured_pass() -> Any:
    """The pass flow with the configured number of shots in flight (FOLEY_WORKERS)."""
    return foley_pass.with_options(task_runner=ThreadPoolTaskRunner(max_workers=get_settings().workers))


def review_state(shots: Sequence[ShotState]) -> None:
    """Shots whose latest envelope is not approved stop here (they wait in the queue)."""
    with runtime.db().session() as s:
        for sh in shots:
            if sh.status != "pending":
                continue
            env = api.latest_envelope(s, sh.shot_id)
            if env is None or env.state != "approved":
                sh.status = env.state if env else "failed"
                sh.refs["envelope_version"] = env.version if env else None


def delivery(sh: ShotState) -> ShotDelivery:
    env = sh.refs.get("envelope") or {}
    if sh.status == "pending" and "spatial" in sh.refs:
        sp, sy = sh.refs["spatial"], sh.refs["synth"]
        return ShotDelivery(
            sh.shot_id, "delivered", envelope=sy["envelope"], envelope_version=env.get("version"),
            mono=sy["mono"], stereo=sp["stereo"], foa=sp["foa"], proxy=sh.refs["proxy"],
        )
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
    key = "".join(c if c.isalnum() else "-" for c in report.reel.lower()).strip("-") or "reel"
    create_table_artifact(rows, key=f"{key}-shots", description=f"Shots of {report.reel}")
    lines = [f"# Foley delivery: {report.reel}", "",
             f"Delivered to `{report.out_dir}`; timeline starts {report.manifest['timeline_start']}.",
             "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report.stage_seconds.items()]
    if report.failed or report.skipped:
        lines += ["", "## Not delivered", ""]
        lines += [f"- **{n}**: {r}" for n, r in report.failed + report.skipped]
    create_markdown_artifact("\n".join(lines), key=f"{key}-delivery", description="Delivery summary")
