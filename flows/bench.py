"""`foley bench`: time the pass on the demo reel against ffmpeg decoding the same media.

The reference is measured in the same run on the same machine — ffmpeg decoding every media
file the edit uses, to null — so the figure that matters is the ratio, not the seconds.
Two passes are timed: cold (fresh database and store) and warm (a rerun, all results reused).
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from flows.demo import make_demo_reel
from tasks import ingest, media, plots


def run_bench(work: Path) -> dict[str, Any]:
    """Run the benchmark in `work` (wiped first) and return its figures."""
    work = Path(work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    timeline = make_demo_reel(work / "reel")
    _, spec = ingest.read_timeline(timeline)
    sources = sorted({sh.source_path for sh in spec.shots if sh.source_path})
    t0 = time.perf_counter()
    for src in sources:
        media.decode_only_seconds(src)
    decode_s = time.perf_counter() - t0

    os.environ["FOLEY_HOME"] = str(work / "home")  # the pass reads its settings from here
    from flows.foley_pass import configured_pass

    runs = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        report = configured_pass()(str(timeline), str(work / "delivery"), approve="auto")
        total = time.perf_counter() - t0
        runs[label] = {"total_s": round(total, 3), "flow_s": round(report.flow_seconds, 3),
                       "prefect_overhead_s": round(total - report.flow_seconds, 3),
                       "stages_s": {k: round(v, 3) for k, v in report.stage_seconds.items()}}
    plots.plot_stage_times(runs["cold"]["stages_s"], work / "stage_times.png",
                           title=f"foley pass, demo reel ({len(spec.shots)} shots), cold")
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "reel": {"shots": len(spec.shots), "duration_s": round(spec.duration_s, 3),
                 "media_files": len(sources)},
        "ffmpeg_decode_only_s": round(decode_s, 3),
        "cold": runs["cold"],
        "warm": runs["warm"],
        "ratio_cold_pass_to_decode": round(runs["cold"]["total_s"] / decode_s, 1),
        "ratio_cold_flow_to_decode": round(runs["cold"]["flow_s"] / decode_s, 1),
        "ratio_warm_pass_to_decode": round(runs["warm"]["total_s"] / decode_s, 1),
        "realtime_factor_cold": round(spec.duration_s / runs["cold"]["total_s"], 2),
        "chart": str(work / "stage_times.png"),
    }
