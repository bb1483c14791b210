"""The bundled demo reel: scenes rendered by foleyflow itself, cut into an OTIO edit.

Six shots at mixed source rates (24, 29.97, 25, 15 fps) in a 24 fps edit starting at
01:00:00:00, with a gap: bouncing balls (one under a camera pan), footsteps, a still shot and a
ball flying through the air (moves, makes no sound). `demo_truth.json` holds every true contact
in record-side seconds, so tests and benchmarks can score what the pass delivers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from models.scenes import SceneSpec, fps_fraction, render_scene

RATE = 24
START_FRAME = 86400  # 01:00:00:00 at 24 fps


@dataclass(frozen=True)
class DemoShot:
    """A clip of the demo edit: a rendered scene, the source range used, a Foley marker."""

    media: str
    scene: SceneSpec
    source_in_s: float
    duration_s: float
    foley: str | None = None
    gap_before_frames: int = 0


DEMO_SHOTS = (
    DemoShot("bounce_24.mp4", SceneSpec("bounce", fps=24, duration_s=4.0, seed=1),
             0.5, 3.0, "impacts wood"),
    DemoShot("steps_2997.mp4", SceneSpec("steps", fps=30000 / 1001, duration_s=5.0, seed=2),
             0.5, 4.0, "footsteps gravel"),
    DemoShot("still_25.mp4", SceneSpec("static", fps=25, duration_s=2.5, seed=3), 0.2, 2.0),
    DemoShot("bounce_pan_15.mp4", SceneSpec("bounce", fps=15, duration_s=3.5, seed=4, pan=0.08,
                                            drop_height=0.8, restitution=0.6),
             0.2, 3.0, "impacts metal", gap_before_frames=12),
    DemoShot("pass_24.mp4", SceneSpec("pass", fps=24, duration_s=2.5, seed=5), 0.25, 2.0),
)


def _rt(seconds: float, rate: Fraction) -> otio.opentime.RationalTime:
    """Seconds as a whole number of frames at `rate`."""
    return otio.opentime.RationalTime(round(seconds * rate), float(rate))


def build_edit(shots: tuple[DemoShot, ...], media_dir: str, name: str) -> tuple[otio.schema.Timeline, list[dict]]:
    """The OTIO edit of `shots` (media referenced relative to the edit) and its truth."""
    tl = otio.schema.Timeline(name=name)
    tl.global_start_time = otio.opentime.RationalTime(START_FRAME, RATE)
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    tl.tracks.append(track)
    truth, record = [], 0
    for i, sh in enumerate(shots):
        if sh.gap_before_frames:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
                duration=otio.opentime.RationalTime(sh.gap_before_frames, RATE))))
            record += sh.gap_before_frames
        rate = fps_fraction(sh.scene.fps)
        src = otio.opentime.TimeRange(_rt(sh.source_in_s, rate), _rt(sh.duration_s, rate))
        n_media = round(sh.scene.duration_s * rate)
        ref = otio.schema.ExternalReference(
            target_url=f"{media_dir}/{sh.media}",
            available_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(0, float(rate)), otio.opentime.RationalTime(n_media, float(rate))),
        )
        clip = otio.schema.Clip(name=Path(sh.media).stem, media_reference=ref, source_range=src)
        if sh.foley:
            clip.markers.append(otio.schema.Marker(
                name=f"FOLEY: {sh.foley}",
                marked_range=otio.opentime.TimeRange(src.start_time, otio.opentime.RationalTime(0, float(rate)))))
        track.append(clip)
        rec_frames = round(src.duration.to_seconds() * RATE)
        truth.append({"clip": clip.name, "record_in_frame": record, "duration_frames": rec_frames,
                      "source_in_s": src.start_time.to_seconds(),
                      "duration_s": src.duration.to_seconds(), "scene": sh.scene.kind})
        record += rec_frames
    return tl, truth


def make_demo_reel(folder: Path, *, name: str = "demo_reel", shots: tuple[DemoShot, ...] = DEMO_SHOTS) -> Path:
    """Render the demo media into `folder/media`, write `folder/<name>.otio` and its truth."""
    folder = Path(folder)
    tl, truth = build_edit(shots, "media", name)
    for sh, t in zip(shots, truth):
        media = folder / "media" / sh.media
        scene = render_scene(sh.scene, media)
        s0, s1 = t["source_in_s"], t["source_in_s"] + t["duration_s"]
        t["events"] = [
            {**e, "t_record": t["record_in_frame"] / RATE + e["t"] - s0}
            for e in scene.events if s0 <= e["t"] < s1
        ]
    path = folder / f"{name}.otio"
    otio.adapters.write_to_file(tl, str(path))
    (folder / f"{name}_truth.json").write_text(json.dumps(
        {"reel": name, "rate": RATE, "start_frame": START_FRAME, "shots": truth}, indent=1))
    return path
