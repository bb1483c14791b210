"""Spatial stage: put a shot's sound where it is seen, in every format a mix stage needs.

Reads the shot's synthesized mono stem, its approved envelope and its picture features; tracks
the sounding objects (`models.spatial_track`: one layer per object), maps it through the reel's camera
(`models.spatial.Camera`: HFOV per reel, aspect from the picture) and renders
(`models.spatial_render`) the placed mono, first-order B-format (AmbiX, or FuMa on request),
stereo, 5.1 and binaural stems, plus `position.json` (the track, the angles, each event's
intended direction).

Where a person or the edit says otherwise, it wins: the envelope's `position` (set in the
review app, so it is versioned and approved like every edit) over the clip's
`metadata["foleyflow"]["position"]` (collected at ingest into the reel's pass parameters),
over the picture. The reel's settings (HFOV, B-format, reverb send) live in its pass
parameters under "spatial"; they and the override are the stage's cache parameters, so a
change re-renders and a rerun does not.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import opentimelineio as otio
import soundfile as sf
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

import models.dirac as dirac
import models.hrtf as hrtf
import models.limiter as limiter
import models.motion_baseline as motion_baseline
import models.spatial as spatial
import models.spatial_render as spatial_render
import models.spatial_track as spatial_track
from db import api
from tasks.decisions import load_envelope
from tasks.features import load_features
from tasks.ingest import ReelSpec
from tasks.ingest_flatten import visible_picture
from tasks.stage import StageOutput, run_stage, transaction
from tasks import wavfloat
from tasks.store import ArtifactRef
from tasks.wavfloat import write_float_wav

STEMS = ("mono", "stereo", "foa", "51", "binaural")
# The code that decides the stage's bytes (its cache key): this module (`spatialize`'s
# compute; it is the one being imported), the models it tracks and renders with, and the float
# WAV writer of its stems (tasks.wavfloat).
CODE = [sys.modules[__name__], spatial, dirac, hrtf, spatial_track, spatial_render,
        motion_baseline, wavfloat, limiter]


def reel_settings(pass_params: dict[str, Any] | None) -> tuple[spatial_render.SpatialSettings,
                                                             dict[str, Any]]:
    """The reel's spatial settings and its clip position overrides (by shot name)."""
    sp = dict((pass_params or {}).get("spatial") or {})
    return spatial_render.SpatialSettings.from_dict(sp), dict(sp.get("positions") or {})


def reel_spatial_params(edit: otio.schema.Timeline, spec: ReelSpec, *, hfov_deg: float | None = None,
                        fmt: str = "ambix", reverb_db: float | None = None,
                        rt60_s: float = 0.5) -> dict[str, Any]:
    """The reel's "spatial" pass parameters: settings and the clips' position overrides.

    The field of view is `hfov_deg` if given, else the edit's `metadata["foleyflow"]["hfov_deg"]`,
    else 60°. A clip's `metadata["foleyflow"]["position"]` ({"azimuth_deg", "elevation_deg",
    "distance_m"}, any of them) holds for the shot it makes. Raises ValueError naming the edit,
    the clip and the field for a bad value."""
    ours = edit.metadata.get("foleyflow")
    if hfov_deg is None:
        hfov_deg = float(ours.get("hfov_deg", 60.0)) if hasattr(ours, "get") else 60.0
    try:
        settings = spatial_render.SpatialSettings(hfov_deg, fmt, reverb_db, rt60_s)
    except ValueError as exc:
        raise ValueError(f"{spec.timeline_path}: {exc}") from exc
    clips = {math.floor(p.rec_lo + 0.5 + 1e-9): p.clip
             for p in visible_picture(edit, spec.fps, spec.start_frame).pieces}
    positions = {}
    for shot in spec.shots:
        clip = clips.get(shot.record_in_frame)
        md = clip.metadata.get("foleyflow") if clip is not None else None
        if hasattr(md, "get") and md.get("position") is not None:
            where = f"{spec.timeline_path}: clip '{clip.name}' ({shot.name}) metadata foleyflow.position"
            raw = md["position"]
            positions[shot.name] = spatial_render.validate_override(
                dict(raw) if hasattr(raw, "items") else raw, where=where)
    return {**settings.to_dict(), "positions": positions}


def shot_override(env: dict[str, Any], clip: dict[str, Any] | None, *, where: str) -> dict[str, float]:
    """The clip's override with the envelope's fields on top (each validated)."""
    return {**spatial_render.validate_override(clip, where=f"{where} clip metadata position"),
            **spatial_render.validate_override(env.get("position"), where=f"{where} envelope position")}


@task(name="spatial", cache_policy=NO_CACHE)
def spatialize(shot_id: int, mono: ArtifactRef, envelope: ArtifactRef) -> dict[str, Any]:
    """Placed mono, B-format, stereo, 5.1 and binaural renders of the shot's mono stem."""
    def read(s: Session) -> tuple[str, str, dict[str, Any], ArtifactRef | None]:
        shot = s.get(api.Shot, shot_id)
        assert shot is not None, f"shot id {shot_id} does not exist"
        feats = (api.shot_outputs(s, "features", shot_id) or {}).get("features")
        return shot.reel.name, shot.name, dict(shot.reel.pass_params or {}), feats

    reel, name, params, features = transaction(read, shot_id=shot_id)
    if features is None:
        raise ValueError(f"{reel} {name}: no picture features recorded; rerun `foley run` so the "
                         "shot is analysed before it is spatialized")
    settings, clips = reel_settings(params)
    env = load_envelope(envelope)
    override = shot_override(env, clips.get(name), where=f"{reel} {name}")

    def compute(paths: dict[str, Path], work: Path) -> StageOutput:
        audio, sr = sf.read(paths["mono"], dtype="float32")
        if audio.ndim != 1:
            raise ValueError(f"{reel} {name}: the synthesized stem has {audio.shape[1]} channels, "
                             "expected mono")
        feats = load_features(paths["features"])
        width, height = (float(v) for v in feats["size"])
        camera = spatial.Camera(settings.hfov_deg, width / height)
        sources = spatial_track.sounding_sources(feats, env)
        layer_paths = spatial_render.source_paths(sources, camera, override, len(audio), sr)
        files: dict[str, tuple[Path, str]] = {}
        for kind, data in spatial_render.render(audio, layer_paths, sr, settings).items():
            out = work / f"stem_{kind}.wav"
            write_float_wav(out, data, sr)
            files[kind] = (out, "audio/wav")
        report = spatial_render.position_report(sources, camera, override, env["events"], settings)
        pos = work / "position.json"
        pos.write_text(json.dumps(report, indent=1))
        files["position"] = (pos, "application/json")
        return StageOutput(files=files, result={"override": override,
                                                "camera": report["camera"]})

    res = run_stage(
        "spatial",
        inputs={"mono": mono, "envelope": envelope, "features": features},
        params={"settings": settings.to_dict(), "override": override},
        code=CODE,
        compute=compute,
        shot_id=shot_id,
    )
    return {**res.outputs, "override": override, "cached": res.cached}


def stems_of(result: dict[str, Any]) -> dict[str, ArtifactRef]:
    """The stems and position file of a `spatialize` result, by kind."""
    return {k: result[k] for k in (*STEMS, "position")}

