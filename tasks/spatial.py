"""Spatial stage: place a shot's mono stem in the picture — stereo and first-order Ambisonics.

This first version places the whole shot at one position, the strength-weighted mean of its
events' picture coordinates (centre when there are none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from prefect import task
from prefect.cache_policies import NO_CACHE

import models.spatial as spatial
from tasks.decisions import load_envelope
from tasks.stage import StageOutput, run_stage
from tasks.store import ArtifactRef
from tasks.wavfloat import write_float_wav


def source_position(env: dict[str, Any]) -> tuple[float, float]:
    """(x, y) in picture coordinates where the shot's sound sits."""
    events = env["events"]
    w = np.array([max(e["strength"], 1e-6) for e in events])
    if not len(events):
        return 0.5, 0.5
    x = float(np.dot(w, [e["x"] for e in events]) / w.sum())
    y = float(np.dot(w, [e["y"] for e in events]) / w.sum())
    return x, y


@task(name="spatial", cache_policy=NO_CACHE)
def spatialize(shot_id: int, mono: ArtifactRef, envelope: ArtifactRef) -> dict[str, Any]:
    """Stereo (constant-power pan) and AmbiX FOA renders of the mono stem."""
    x, y = source_position(load_envelope(envelope))
    azimuth = spatial.azimuth_from_x(x)

    def compute(paths: dict[str, Path], work: Path) -> StageOutput:
        audio, sr = sf.read(paths["mono"], dtype="float32")
        st, foa = work / "stem_stereo.wav", work / "stem_foa.wav"
        write_float_wav(st, spatial.pan_stereo(audio, x), sr)
        write_float_wav(foa, spatial.encode_foa(audio, azimuth), sr)
        return StageOutput(files={"stereo": (st, "audio/wav"), "foa": (foa, "audio/wav")})

    res = run_stage(
        "spatial",
        inputs={"mono": mono, "envelope": envelope},
        params={"x": round(x, 4), "y": round(y, 4), "azimuth": round(azimuth, 5)},
        code=[spatial],
        compute=compute,
        shot_id=shot_id,
    )
    return {**res.outputs, "x": x, "y": y, "cached": res.cached}
