"""`foley bench --long`: a reel of feature length streams through the pass with bounded memory.

The reel is generated, never held in memory: a few long scenes are rendered frame by frame
into ffmpeg (`models.scenes.render_scene`), and the edit cuts `minutes * 60 / shot_s` shots of
`shot_s` seconds from them, each at its own start (every shot a distinct media range, so no
stage is a cache hit of another shot's).

Each configuration is one cold pass (fresh database and store, `--approve auto`) in a child
process of its own, so its peak memory is its own: the child's process tree (the pass and its
ffmpeg subprocesses) is sampled every 0.25 s with psutil and the peak of the summed RSS is
reported, next to the pass process's own peak (`ru_maxrss`). Picture throughput is minutes of
picture per wall-clock hour. The reference, measured in the same run, is ffmpeg decoding the
reel's media to null; a short reel (`reference_minutes`) passed with one worker shows how peak
memory grows with the reel's length (it should not).

"Workers" here are shots in flight in one pass (FOLEY_WORKERS: the task runner's threads).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import opentimelineio as otio

from flows.demo import DemoShot, build_edit
from models.scenes import SceneSpec, render_scene

KINDS = ("bounce", "steps", "pass", "bounce")
HINTS = {"bounce": "impacts wood", "steps": "footsteps gravel", "pass": None}


def long_reel_shots(minutes: float, *, shot_s: float = 10.0, scenes: int = 4,
                    scene_s: float = 60.0, step_s: float = 1.5) -> tuple[DemoShot, ...]:
    """Shots of a `minutes` reel cut from `scenes` scenes of `scene_s` seconds, shot k from
    scene k % scenes starting (k // scenes) * step_s in (wrapping before the scene's end)."""
    n = max(1, round(minutes * 60 / shot_s))
    starts = max(1, int((scene_s - shot_s - 0.5) // step_s) + 1)
    shots = []
    for k in range(n):
        kind = KINDS[k % scenes % len(KINDS)]
        spec = SceneSpec(kind, fps=24, duration_s=scene_s, seed=k % scenes)
        start = 0.25 + ((k // scenes) % starts) * step_s + (k // (scenes * starts)) * 0.125
        shots.append(DemoShot(f"scene_{k % scenes}.mp4", spec, round(start, 4), shot_s,
                              HINTS[kind]))
    return tuple(shots)


def make_long_reel(folder: Path, minutes: float, *, name: str = "long_reel",
                   shot_s: float = 10.0) -> Path:
    """Render the scenes (streamed into ffmpeg) and write `<name>.otio` cutting them."""
    folder = Path(folder)
    shots = long_reel_shots(minutes, shot_s=shot_s)
    for sh in {s.media: s for s in shots}.values():
        if not (folder / "media" / sh.media).is_file():
            render_scene(sh.scene, folder / "media" / sh.media)
    tl, _ = build_edit(shots, "media", name)
    path = folder / f"{name}.otio"
    otio.adapters.write_to_file(tl, str(path))
    return path


def _tree_rss(proc: Any) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def measure_pass(timeline: Path, out: Path, home: Path, workers: int) -> dict[str, Any]:
    """One cold pass in a child process: its report, wall time and peak memory."""
    import psutil

    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOLEY_DB", "FOLEY_STORE"))}
    env.update(FOLEY_HOME=str(home), FOLEY_WORKERS=str(workers))
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "flows.bench_long", "pass", str(timeline),
                              str(out)], env=env, stdout=subprocess.PIPE, text=True)
    proc, peak, done = psutil.Process(child.pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss(proc))
            except psutil.Error:
                return
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise RuntimeError(f"the pass of {timeline} with {workers} workers failed "
                           f"(exit {child.returncode})")
    report = json.loads(stdout.strip().splitlines()[-1])
    return {**report, "workers": workers, "wall_s": round(wall, 2),
            "peak_rss_tree_mb": round(peak[0] / 2**20, 1)}


def _child_pass(timeline: str, out: str) -> None:
    """The child's side: run the pass, print one JSON line (stage times, peak RSS)."""
    import resource

    from flows.foley_pass import configured_pass

    report = configured_pass()(timeline, out, approve="auto")
    delivered = sum(1 for s in report.manifest["shots"] if s["status"] == "delivered")
    print(json.dumps({
        "shots": len(report.manifest["shots"]), "delivered": delivered,
        "flow_s": round(report.flow_seconds, 2),
        "stages_s": {k: round(v, 2) for k, v in report.stage_seconds.items()},
        "peak_rss_pass_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def run_long_bench(work: Path, *, minutes: float = 20.0, workers: tuple[int, ...] = (1, 2),
                   reference_minutes: float = 2.0) -> dict[str, Any]:
    """Generate the reels (kept between runs) and measure every configuration, all passes
    talking to one Prefect server started here (unless PREFECT_API_URL names one)."""
    from prefect.settings import PREFECT_API_URL

    from flows.bench import settle_prefect
    from flows.cli_serve import prefect_server

    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ours = not PREFECT_API_URL.value()  # else prefect_server uses the studio's, left running
    since = dt.datetime.now(dt.timezone.utc)
    with prefect_server(work, _free_port()):  # one API for every pass, started once
        out = _run_long_bench(work, minutes, workers, reference_minutes)
        if ours:  # it stops the server: first let it record the passes' last task runs
            settle_prefect(since, ours=True)
        return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_long_bench(work: Path, minutes: float, workers: tuple[int, ...],
                    reference_minutes: float) -> dict[str, Any]:
    from flows.bench import decode_reference

    timeline = make_long_reel(work / f"reel_{minutes:g}min", minutes)
    spec, decode_s = decode_reference(timeline)
    picture_min = spec.duration_s / 60
    runs = []
    for n in workers:
        r = measure_pass(timeline, work / f"delivery_{n}w", work / f"home_{n}w", n)
        r["picture_min_per_hour"] = round(picture_min / (r["wall_s"] / 3600), 1)
        r["ratio_wall_to_decode"] = round(r["wall_s"] / decode_s, 1)
        runs.append(r)
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "reel": {"minutes": round(picture_min, 2), "shots": len(spec.shots),
                 "media_files": len({sh.source_path for sh in spec.shots if sh.source_path})},
        "ffmpeg_decode_only_s": round(decode_s, 2),
        "runs": runs,
    }
    if len(runs) > 1:
        out["speedup_2_vs_1"] = round(runs[0]["wall_s"] / runs[1]["wall_s"], 2)
    best = max(runs, key=lambda r: r["picture_min_per_hour"])
    out["studio_night"] = {"workers": best["workers"],
                           **cost_model(best["picture_min_per_hour"])}
    if reference_minutes:
        short = make_long_reel(work / f"reel_{reference_minutes:g}min", reference_minutes)
        ref = measure_pass(short, work / "delivery_ref", work / "home_ref", workers[0])
        out["reference_short_reel"] = {"minutes": reference_minutes, **ref}
        out["peak_rss_ratio_long_to_short"] = round(
            runs[0]["peak_rss_tree_mb"] / ref["peak_rss_tree_mb"], 2)
    return out


def cost_model(picture_min_per_hour: float, *, reels: int = 10, reel_min: float = 20.0,
               night_h: float = 8.0) -> dict[str, Any]:
    """Machine-hours for a night of `reels` reels of `reel_min` minutes at a measured rate,
    and machines of this kind needed to finish within `night_h` hours."""
    hours = reels * reel_min / picture_min_per_hour
    return {"reels": reels, "reel_min": reel_min, "machine_hours": round(hours, 2),
            "machines_for_night": math.ceil(hours / night_h)}


def main(argv: list[str]) -> None:
    if argv[:1] == ["pass"]:
        _child_pass(argv[1], argv[2])
        return
    raise SystemExit("usage: python -m flows.bench_long pass TIMELINE OUT "
                     "(foley bench --long runs the benchmark)")


if __name__ == "__main__":
    main(sys.argv[1:])
