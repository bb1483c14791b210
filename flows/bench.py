"""`foley bench`: time the pass on the demo reel against ffmpeg decoding the same media.

The reference is measured in the same run on the same machine — ffmpeg decoding every media
file the edit uses, to null — so the figure that matters is the ratio, not the seconds.
Two passes are timed: cold (fresh database and store) and warm (a rerun, all results reused).

Each pass also reports its *provenance and storage overhead* (`overhead`): the time the
stages spent in database transactions and artifact store I/O (hashing, copies, uploads,
downloads) — `tasks.stage.OVERHEAD` — per shot and as a share of the pass (goal: < 5 %).
`pass_overhead` measures it for one pass wherever the settings point (embedded or studio).

Without PREFECT_API_URL the passes talk to Prefect's temporary server, a child process it
stops when this one exits. The server records the task runs from the state events the passes
send it, one database write each, and it lags behind the passes on a busy machine; stopped
with events still queued it logs a traceback for each one it was writing ("Error flushing 1
events", CancelledError) and loses them. `settle_prefect` waits for it to catch up first.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from flows.demo import make_demo_reel
from tasks import ingest, media, plots
from tasks.stage import OVERHEAD

OVERHEAD_GOAL = 0.05  # share of the pass spent on provenance + storage


def overhead_figures(snapshot: dict[str, Any], pass_s: float,
                     shot_names: dict[int, str]) -> dict[str, Any]:
    """The overhead of one pass from an `OVERHEAD.snapshot()` taken after a reset.

    `share_of_stage_time` is bookkeeping over the time spent inside the stages (both in
    thread-seconds): the figure the goal is about. `share_of_pass` divides the same
    thread-seconds by the pass's wall seconds: with several shots in flight their stages
    overlap, so it is an upper bound (and waits for the GIL while another shot computes count
    as bookkeeping in both)."""
    db_s, store_s, stage_s = snapshot["db_s"], snapshot["store_s"], snapshot["stage_s"]
    shots = max(1, len(shot_names))
    per_shot = {shot_names.get(k, str(k)): {"db_s": round(v["db_s"], 4),
                                            "store_s": round(v["store_s"], 4)}
                for k, v in sorted(snapshot["per_shot"].items())}
    return {
        "db_s": round(db_s, 3),
        "store_s": round(store_s, 3),
        "total_s": round(db_s + store_s, 3),
        "per_shot_s": round((db_s + store_s) / shots, 4),
        "stage_s": round(stage_s, 3),
        "pass_s": round(pass_s, 3),
        "share_of_stage_time": round((db_s + store_s) / stage_s, 4) if stage_s > 0 else None,
        "share_of_pass": round((db_s + store_s) / pass_s, 4) if pass_s > 0 else None,
        "goal_share": OVERHEAD_GOAL,
        "stages_computed": snapshot["stages_computed"],
        "stages_cached": snapshot["stages_cached"],
        "per_shot": per_shot,
    }


def pass_overhead(timeline: str | Path, out: str | Path,
                  **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Run the pass once (as configured: embedded or studio) and measure its overhead.

    Returns (PassReport, overhead figures); the pass time is the flow's own (no Prefect
    start-up)."""
    from flows.foley_pass import configured_pass

    OVERHEAD.reset()
    report = configured_pass()(str(timeline), str(out), **kwargs)
    names = {sh.shot_id: sh.name for sh in report.shots}
    return report, overhead_figures(OVERHEAD.snapshot(), report.flow_seconds, names)


def settle_prefect(since: dt.datetime, *, timeout: float = 60.0, quiet: float = 0.5,
                   ours: bool = False) -> bool:
    """Wait until Prefect's temporary server has recorded every task run of the flow runs
    started since `since`: the events still queued in this process sent, then every such task
    run in a final state and none appearing or changing for `quiet` seconds. True once settled
    (at once with a server at PREFECT_API_URL, which outlives this process, unless `ours`: this
    process stops that one too); False, with a warning on stderr, after `timeout` seconds (its
    shutdown may then log what it was still writing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.client.schemas.objects import TERMINAL_STATES
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() and not ours:
        return True
    deadline = time.monotonic() + timeout
    EventsWorker.drain_all(timeout=timeout, at_exit=False)
    runs = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
    last: dict[Any, Any] | None = None
    with get_client(sync_client=True) as client:
        while True:
            seen: dict[Any, Any] = {}
            while True:  # every page (the API returns 200 at most)
                page = client.read_task_runs(flow_run_filter=runs, limit=200, offset=len(seen),
                                             sort=TaskRunSort.EXPECTED_START_TIME_ASC)
                seen.update((r.id, r.state_type) for r in page)
                if len(page) < 200:
                    break
            if seen == last and all(t in TERMINAL_STATES for t in seen.values()):
                return True
            if time.monotonic() > deadline:
                busy = sum(t not in TERMINAL_STATES for t in seen.values())
                print(f"warning: Prefect's temporary server was still recording task runs "
                      f"after {timeout:g} s ({busy} of {len(seen)} not final); stopping it may "
                      "log what it was writing", file=sys.stderr)
                return False
            last = seen
            time.sleep(quiet)


def decode_reference(timeline: Path) -> tuple[Any, float]:
    """The edit's reel spec and the benchmarks' reference: seconds for ffmpeg to decode every
    source the edit uses, once each, to null."""
    _, spec = ingest.read_timeline(timeline)
    t0 = time.perf_counter()
    for src in sorted({sh.source_path for sh in spec.shots if sh.source_path}):
        media.decode_only_seconds(src)
    return spec, time.perf_counter() - t0


def run_bench(work: Path) -> dict[str, Any]:
    """Run the benchmark in `work` (wiped first) and return its figures."""
    work = Path(work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    timeline = make_demo_reel(work / "reel")
    spec, decode_s = decode_reference(timeline)

    os.environ["FOLEY_HOME"] = str(work / "home")  # the pass reads its settings from here
    from flows.settings import get_settings

    settings = get_settings()
    studio = bool(settings.db_url) or settings.resolved_store_url().startswith("s3://")

    runs = {}
    since = dt.datetime.now(dt.timezone.utc)
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        report, overhead = pass_overhead(timeline, work / "delivery", approve="auto")
        total = time.perf_counter() - t0
        runs[label] = {"total_s": round(total, 3), "flow_s": round(report.flow_seconds, 3),
                       "prefect_overhead_s": round(total - report.flow_seconds, 3),
                       "stages_s": {k: round(v, 3) for k, v in report.stage_seconds.items()},
                       "provenance_storage_overhead": overhead}
    plots.plot_stage_times(runs["cold"]["stages_s"], work / "stage_times.png",
                           title=f"foley pass, demo reel ({len(spec.shots)} shots), cold")
    settle_prefect(since)  # before the server is stopped at exit (module docstring)
    cold = runs["cold"]["provenance_storage_overhead"]
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "reel": {"shots": len(spec.shots), "duration_s": round(spec.duration_s, 3),
                 "media_files": len({sh.source_path for sh in spec.shots if sh.source_path})},
        "ffmpeg_decode_only_s": round(decode_s, 3),
        "cold": runs["cold"],
        "warm": runs["warm"],
        "ratio_cold_pass_to_decode": round(runs["cold"]["total_s"] / decode_s, 1),
        "ratio_cold_flow_to_decode": round(runs["cold"]["flow_s"] / decode_s, 1),
        "ratio_warm_pass_to_decode": round(runs["warm"]["total_s"] / decode_s, 1),
        "realtime_factor_cold": round(spec.duration_s / runs["cold"]["total_s"], 2),
        "overhead": {"mode": "studio" if studio else "embedded",
                     "per_shot_s": cold["per_shot_s"],
                     "share_of_cold_stage_time": cold["share_of_stage_time"],
                     "share_of_cold_pass": cold["share_of_pass"],
                     "share_of_warm_pass":
                         runs["warm"]["provenance_storage_overhead"]["share_of_pass"],
                     "goal_share": OVERHEAD_GOAL,
                     "within_goal": (cold["share_of_stage_time"] or 1.0) < OVERHEAD_GOAL},
        "chart": str(work / "stage_times.png"),
    }
