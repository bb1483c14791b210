"""The one-clip API for scripts: a video in, its Foley and envelope out — no edit needed.

    from flows.api import generate_foley
    clip = generate_foley("take3.mp4", prompt="footsteps gravel", spatial=True)
    soundfile.write("take3_foley.wav", clip.audio, clip.samplerate)

The same stages as the pass (proxy, features, envelope, sampler, spatial) run in a temporary
folder; the sound library comes from the configured database (the built-in kit by default).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import models.motion_baseline as motion_baseline
import models.sampler as sampler
import models.spatial as spatial_mod
from models import spatial_render, spatial_track
from db import api
from flows import library as library_flow
from flows.settings import get_settings
from tasks import features, media, runtime
from tasks.library import load_sample
from tasks.synth import SR, choose_sounds


@dataclass
class FoleyClip:
    """Foley for one clip: `audio` is (n,) mono, or (n, 2) stereo when `spatial=True`."""

    audio: np.ndarray
    samplerate: int
    envelope: dict[str, Any]
    foa: np.ndarray | None = None  # (n, 4) AmbiX when spatial=True


def generate_foley(
    video_path: str | Path,
    prompt: str | None = None,
    duration: float | None = None,
    spatial: bool = False,
    *,
    start: float = 0.0,
    seed: int = 0,
    library: str | None = None,
) -> FoleyClip:
    """Analyse `video_path` (from `start`, for `duration` seconds or to its end) and render Foley
    following its envelope; `prompt` chooses the sound ("footsteps gravel")."""
    settings = get_settings()
    settings.configure_runtime()
    library = library or settings.library
    library_flow.ensure_library(library)
    info = media.probe(video_path)
    dur = duration if duration is not None else info.duration_s - start
    with tempfile.TemporaryDirectory(prefix="foley-clip-") as tmp:
        proxy = Path(tmp) / "proxy.mp4"
        media.make_proxy(video_path, start, dur, info.fps, proxy, width=320)
        feats = features.compute_features(proxy, info.fps)
    env = motion_baseline.estimate_envelope(feats, shot=Path(video_path).stem, duration_s=dur)
    env["prompt"] = prompt
    with runtime.db().session() as s:
        sounds = api.library_sounds(s, library)
        oneshots, textures = choose_sounds(sounds, prompt, env, library=library)
        load = [(r.rel_path, runtime.store().local_path(r.artifact.ref())) for r in oneshots + textures]
    samples = [load_sample(p, n) for n, p in load]
    mono = sampler.render_shot(env, samples[: len(oneshots)], samples[len(oneshots):], sr=SR, seed=seed)
    if not spatial:
        return FoleyClip(mono, SR, env)
    width, height = (float(v) for v in feats["size"])
    paths = spatial_render.source_paths(spatial_track.sounding_sources(feats, env),
                                        spatial_mod.Camera(aspect=width / height), {}, len(mono), SR)
    stems = spatial_render.render(mono, paths, SR, spatial_render.SpatialSettings())
    return FoleyClip(stems["stereo"], SR, env, foa=stems["foa"])
