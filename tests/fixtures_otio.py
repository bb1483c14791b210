"""Helpers for building real test edits with OTIO (and the placeholder media they point to)."""
from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import opentimelineio as otio

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange


def tr(start: float, duration: float, rate: float) -> otio.opentime.TimeRange:
    """A time range in frames at `rate`."""
    return TR(RT(start, rate), RT(duration, rate))


def media_clip(
    name: str,
    media: str | Path | None,
    src_in: float,
    duration: float,
    rate: float,
    *,
    media_start: float = 0,
    media_duration: float | None = None,
    markers: Iterable[tuple[str, float]] = (),
    metadata: dict[str, Any] | None = None,
    enabled: bool = True,
    url: str | None = None,
) -> otio.schema.Clip:
    """A clip of `duration` source frames from `src_in` at `rate` (the media's own rate).

    `media` becomes a file:// URL (absolute paths) or a plain relative path; None gives a
    MissingReference. `media_duration` (frames) declares the media's available range starting
    at `media_start`. `markers` are (text, source frame) pairs on the clip."""
    if media is None and url is None:
        ref: otio.core.MediaReference = otio.schema.MissingReference()
    else:
        if url is None:
            p = Path(media)  # type: ignore[arg-type]
            url = p.as_uri() if p.is_absolute() else p.as_posix()
        avail = tr(media_start, media_duration, rate) if media_duration is not None else None
        ref = otio.schema.ExternalReference(target_url=url, available_range=avail)
    clip = otio.schema.Clip(name=name, media_reference=ref,
                            source_range=tr(media_start + src_in, duration, rate))
    clip.enabled = enabled
    for text, frame in markers:
        clip.markers.append(otio.schema.Marker(name=text, marked_range=tr(
            media_start + frame, 0, rate)))
    if metadata:
        clip.metadata.update(metadata)
    return clip


def gap(duration: float, rate: float) -> otio.schema.Gap:
    return otio.schema.Gap(source_range=tr(0, duration, rate))


def video_track(items: Sequence[otio.core.Composable], name: str = "V1",
                enabled: bool = True) -> otio.schema.Track:
    track = otio.schema.Track(name=name, kind=otio.schema.TrackKind.Video)
    for item in items:
        track.append(item)
    track.enabled = enabled
    return track


def edit(name: str, tracks: Sequence[otio.schema.Track], rate: float,
         start_frame: float | None = 0) -> otio.schema.Timeline:
    """A timeline whose record side starts at `start_frame` (None: no global start time)."""
    tl = otio.schema.Timeline(name=name)
    for t in tracks:
        tl.tracks.append(t)
    if start_frame is not None:
        tl.global_start_time = RT(start_frame, rate)
    return tl


def save(timeline: otio.schema.Timeline, path: Path) -> Path:
    otio.adapters.write_to_file(timeline, str(path), adapter_name="otio_json")
    return path


def touch(folder: Path, *names: str) -> list[Path]:
    """Empty placeholder media files (ingest finds them; their header does not read, so a
    shot keeps the edit's rate — what these tests check is the finding)."""
    out = []
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        out.append(p)
    return out


def make_mp4(path: Path, seconds: float, rate: float = 24) -> Path:
    """A real small H.264 file (for tests that need media with a duration)."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=64x36:rate={rate}", "-t", str(seconds), "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path
