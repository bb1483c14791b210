"""Prefect tasks of the analysis half of a pass: ingest the edit, cut proxies, extract features.

The work itself lives in `tasks.ingest`, `tasks.media` and `tasks.features`; these tasks add
provenance and caching and pass only ids and artifact refs.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import opentimelineio as otio
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from db import api
from tasks import features as features_mod
from tasks import ingest, media
from tasks.stage import StageOutput, code_version, register_file, run_stage, transaction
from tasks.store import ArtifactRef

PROXY_WIDTH = 320


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_reel(
    timeline_path: str, reel: ingest.ReelSpec, *, delivery_dir: str | None = None,
    pass_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record the edit (stored as an artifact) and its shots; returns reel id and shot ids."""
    ref = register_file(timeline_path)

    def record(s: Session) -> dict[str, Any]:
        row = api.upsert_reel(
            s,
            name=reel.name,
            timeline_path=str(Path(timeline_path).resolve()),
            timeline_artifact_id=api.put_artifact(s, ref).id,
            rate_num=reel.rate_num,
            rate_den=reel.rate_den,
            drop_frame=reel.drop_frame,
            start_frame=reel.start_frame,
            start_timecode=reel.start_timecode,
            delivery_dir=delivery_dir,
            pass_params=pass_params or {},
        )
        shots = api.upsert_shots(s, row, [asdict(sh) for sh in reel.shots])
        if api.find_completed(s, "ingest", ref["sha256"]) is None:
            act = api.start_activity(
                s,
                task="ingest",
                cache_key=ref["sha256"],
                parameters={"timeline": Path(timeline_path).name, "shots": len(shots)},
                code_version=code_version([ingest]),
                reel_id=row.id,
            )
            api.finish_activity(s, act.id, used={"timeline": ref}, generated={})
        return {"reel_id": row.id, "timeline": ref, "shot_ids": [sh.id for sh in shots]}

    return transaction(record)  # one transaction, run again if the database restarts


@task(name="proxy", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def make_proxy(shot_id: int) -> dict[str, Any]:
    """Decode exactly the shot's source range at its own rate into a small H.264 proxy.

    The rate is the picture's own (`ShotSpec.source_rate`, read from the media's header at
    ingest), so every frame of the source is one frame of the proxy and of its features."""
    def read(s: Session) -> tuple[Any, ...]:
        shot = s.get(api.Shot, shot_id)
        assert shot is not None
        return shot.source_path, shot.source_in_s, shot.duration_s, shot.source_rate, shot.reel_id

    src, start, dur, fps, reel_id = transaction(read, shot_id=shot_id)
    assert src is not None, f"shot {shot_id} has no media"
    start = file_time(media.probe(src, scan_packets=False), start, dur)  # MediaError if no video
    media_ref = register_file(src, copy=False)

    def compute(inputs: dict[str, Path], work: Path) -> StageOutput:
        out = work / "proxy.mp4"
        info = media.make_proxy(inputs["media"], start, dur, fps, out, width=PROXY_WIDTH)
        return StageOutput(files={"proxy": (out, "video/mp4")}, result=asdict(info))

    res = run_stage(
        "proxy",
        inputs={"media": media_ref},
        params={"start_s": start, "duration_s": dur, "fps": fps, "width": PROXY_WIDTH},
        code=[media],
        compute=compute,
        reel_id=reel_id,
        shot_id=shot_id,
    )
    return {"proxy": res.outputs["proxy"], "info": res.result, "cached": res.cached}


def file_time(info: media.MediaInfo, source_in_s: float, duration_s: float) -> float:
    """Where the shot starts in the file's own time.

    An edit that gives no media range (an EDL, a clip without a media reference) leaves the
    source *timecode* in seconds; camera files start at their embedded timecode, so a range
    that only fits once that timecode is subtracted is moved there. A file without a video
    stream (a sound file linked to a picture clip) raises MediaError naming it."""
    if not info.has_video:
        raise media.MediaError(
            f"no video stream in {info.path} (sound only) — a picture clip needs its picture: "
            f"link the clip to its movie file and re-run")
    slack = 0.5 / info.fps if info.fps > 0 else 0.0
    if source_in_s + duration_s <= info.duration_s + slack or not info.timecode or info.fps <= 0:
        return source_in_s
    try:
        tc = otio.opentime.from_timecode(info.timecode, info.fps).to_seconds()
    except ValueError:  # a timecode the file's own rate cannot hold: no shift to make
        return source_in_s
    shifted = source_in_s - tc
    return shifted if 0.0 <= shifted <= info.duration_s else source_in_s


@task(name="features", cache_policy=NO_CACHE)
def extract_features(shot_id: int, proxy: ArtifactRef, fps: float) -> dict[str, Any]:
    """Optical flow (OpenCV DIS) and appearance descriptors per frame of the proxy."""

    def compute(inputs: dict[str, Path], work: Path) -> StageOutput:
        feats = features_mod.compute_features(inputs["proxy"], fps)
        out = work / "features.npz"
        features_mod.save_features(feats, out)
        return StageOutput(files={"features": (out, "application/x-npz")})

    res = run_stage(
        "features",
        inputs={"proxy": proxy},
        params={"fps": fps},
        code=[features_mod],
        compute=compute,
        shot_id=shot_id,
    )
    return {"features": res.outputs["features"], "cached": res.cached}
