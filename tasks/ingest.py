"""Ingest: read a locked edit into a reel of shots (DESIGN.md, "The walk").

    timeline, reel = read_timeline("reel1.edl", fps=23.976, media_root="/mnt/media")
    for shot in reel.shots:
        print(shot.name, timecode(reel.start_frame + shot.record_in_frame, reel.rate_num,
                                  reel.rate_den, reel.drop_frame), shot.skipped_reason)

A shot is a stretch of one picture clip the audience sees: the top-most enabled clip where
video tracks stack, nothing for gaps or black, the cut at a dissolve's midpoint, generators
(titles, mattes) only where no photographed clip shows (see `tasks.ingest_flatten`). Shots
name themselves SH010, SH020, … in record order; a zero-length clip is a skipped shot.

Media files are found (`tasks.ingest_media`) but never opened: probing is `tasks.media`'s job.
`source_in_s` is seconds into the media file: the clip's source start minus the start of the
media's available range when the edit declares one (a camera timecode, say). An EDL declares
none, so there it is the raw source timecode in seconds: the media stage must subtract the
file's own start timecode (which only probing the file can tell).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from tasks.ingest_flatten import Flat, Hint, Piece, visible_picture
from tasks.ingest_formats import LoadedEdit, TimelineError, load_edit, rational_rate
from tasks.ingest_media import MediaFinder

__all__ = ["ReelSpec", "ShotSpec", "TimelineError", "read_timeline", "timecode"]

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]+')


@dataclass(frozen=True)
class ShotSpec:
    """One shot of the reel, as the edit places it."""

    index: int  # 0-based order on the record side
    name: str  # "SH010", "SH020", … unique within the reel, stable for the same edit
    clip_name: str  # the clip's name in the edit
    record_in_frame: int  # frames from the timeline start, at the timeline rate
    duration_frames: int  # at the timeline rate
    record_in_s: float  # seconds from the timeline start
    duration_s: float
    source_path: str | None  # absolute path of the resolved media file, None if not found
    source_in_s: float  # seconds into the media FILE (0 = first frame of the file)
    source_rate: float  # the clip's source frame rate (e.g. 15, 21.5, 29.97)
    foley_hint: str | None  # from a "FOLEY: …" marker or metadata["foleyflow"]["foley"]
    skipped_reason: str | None  # why the shot cannot be worked on; None if usable


@dataclass(frozen=True)
class ReelSpec:
    """The edit as a whole: its clock and its shots."""

    name: str
    timeline_path: str
    rate_num: int  # e.g. 24000
    rate_den: int  # e.g. 1001
    fps: float
    drop_frame: bool
    start_frame: int  # timeline start in frames at the timeline rate
    start_timecode: str  # "01:00:00:00" (";" before the frames for drop-frame)
    duration_s: float
    shots: tuple[ShotSpec, ...]


def timecode(frames: int, rate_num: int, rate_den: int, drop_frame: bool) -> str:
    """SMPTE timecode of a frame count at rate_num/rate_den ("01:00:00:00", "00:01:00;02").

    Drop-frame applies to 30000/1001 and 60000/1001 only; it is ignored at other rates."""
    nominal = max(1, math.ceil(rate_num / rate_den - 1e-9))
    sign, frames = ("-", -frames) if frames < 0 else ("", frames)
    drop = drop_frame and (rate_num, rate_den) in ((30000, 1001), (60000, 1001))
    if drop:
        skip = nominal // 15  # 2 frame numbers dropped per minute at 29.97, 4 at 59.94
        per_10min = nominal * 600 - skip * 9
        per_min = nominal * 60 - skip
        tens, rest = divmod(frames, per_10min)
        frames += skip * 9 * tens + (skip * ((rest - skip) // per_min) if rest > skip else 0)
    ff = frames % nominal
    ss = frames // nominal % 60
    mm = frames // (nominal * 60) % 60
    hh = frames // (nominal * 3600)
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"


def reel_name(timeline: otio.schema.Timeline, path: Path) -> str:
    """The timeline's name (else the file's stem), safe inside a file name."""
    for raw in (timeline.name or "", path.stem):
        name = _UNSAFE.sub("_", raw).strip(" ._")
        if name:
            return name[:120]
    return "reel"


def read_timeline(
    path: str | Path, *, fps: float | None = None, media_root: str | Path | None = None
) -> tuple[otio.schema.Timeline, ReelSpec]:
    """Read the edit at `path` (.otio .otioz .edl .xml .fcpxml .aaf) into its shots.

    `fps` is required for an EDL (which states no rate) and otherwise only used when the edit
    states none. `media_root` is searched recursively for media the edit does not locate.
    Raises TimelineError (naming the file and what to do) for anything wrong with the file;
    a shot whose media is missing is kept with its `skipped_reason` instead.
    An .otioz's bundled media is unpacked once into `<name>.otioz.media/` beside it.
    """
    p = Path(path).expanduser().absolute()
    edit = load_edit(p, fps)
    root = Path(media_root).expanduser().absolute() if media_root else None
    finder = MediaFinder(p.parent, root, edit.bundle_dir)
    try:
        flat = visible_picture(edit.timeline, edit.rate_num / edit.rate_den, edit.start_frame)
        shots = _shots(flat, edit, finder)
    except Exception as exc:  # a structure the adapters accepted but that makes no sense
        raise TimelineError(f"{p}: the edit's structure could not be interpreted "
                            f"({type(exc).__name__}: {exc}) — re-export it, flattening nested "
                            f"sequences if it persists") from exc
    fps_exact = edit.rate_num / edit.rate_den
    spec = ReelSpec(
        name=reel_name(edit.timeline, p),
        timeline_path=str(p),
        rate_num=edit.rate_num,
        rate_den=edit.rate_den,
        fps=fps_exact,
        drop_frame=edit.drop_frame,
        start_frame=edit.start_frame,
        start_timecode=timecode(edit.start_frame, edit.rate_num, edit.rate_den, edit.drop_frame),
        duration_s=_round(flat.extent) / fps_exact,
        shots=tuple(shots),
    )
    return edit.timeline, spec


def _round(frames: float) -> int:
    return math.floor(frames + 0.5 + 1e-9)


def _source_rate(clip: otio.schema.Clip, fps: float) -> float:
    ranges = [clip.source_range, getattr(clip.media_reference, "available_range", None)]
    for r in ranges:
        if r is not None and r.duration.rate > 0:
            num, den = rational_rate(r.duration.rate)
            return num / den
    return fps


def _hint(hints: list[Hint], clip: otio.schema.Clip, lo: float, hi: float) -> str | None:
    texts: list[str] = []
    for h in hints:
        if h.clip is not None and h.clip is not clip:
            continue
        if h.rec is not None and not (lo - 1e-6 <= h.rec < hi or h.rec == lo):
            continue
        if h.text and h.text not in texts:
            texts.append(h.text)
    return "; ".join(texts) or None


def _outside_media(clip: otio.schema.Clip, file_in_s: float, used_s: float, fps: float,
                   source_rate: float, source_path: str | None) -> str | None:
    """Why the clip's source range does not lie inside its media, if the edit says so."""
    avail = getattr(clip.media_reference, "available_range", None)
    if avail is None or avail.duration.value <= 0:
        return None
    media_s = avail.duration.to_seconds()
    slack = 0.5 / fps
    first, last = sorted((file_in_s, file_in_s + used_s))  # a reversed clip runs backwards
    if first >= -slack and last <= media_s + slack:
        return None
    num, den = rational_rate(source_rate)
    start_s = avail.start_time.to_seconds()

    def tc(seconds: float) -> str:
        return timecode(_round(seconds * num / den), num, den, False)

    media = Path(source_path).name if source_path else (clip.media_reference.name or clip.name)
    return (f"source range {tc(start_s + first)}–{tc(start_s + last)} lies "
            f"outside media {media} ({tc(start_s)}–{tc(start_s + media_s)}, "
            f"duration {media_s:.2f} s)")


def _shot(index: int, lo: float, hi: float, clip: otio.schema.Clip, src_lo_s: float,
          scalar: float, edit: LoadedEdit, finder: MediaFinder, hints: list[Hint],
          reason: str | None) -> ShotSpec:
    fps = edit.rate_num / edit.rate_den
    rec_in = _round(lo)
    dur = max(0, _round(hi) - rec_in)
    source_rate = _source_rate(clip, fps)
    path, missing = finder.resolve(clip)
    avail = getattr(clip.media_reference, "available_range", None)
    file_in_s = src_lo_s - (avail.start_time.to_seconds() if avail is not None else 0.0)
    if reason is None and missing is None:
        reason = _outside_media(clip, file_in_s, dur / fps * scalar, fps, source_rate, path)
    return ShotSpec(
        index=index,
        name=f"SH{(index + 1) * 10:03d}",
        clip_name=clip.name or (Path(path).name if path else ""),
        record_in_frame=rec_in,
        duration_frames=dur,
        record_in_s=rec_in / fps,
        duration_s=dur / fps,
        source_path=path,
        source_in_s=file_in_s,
        source_rate=source_rate,
        foley_hint=_hint(hints, clip, lo, max(hi, lo + 1e-6)),
        skipped_reason=reason or missing,
    )


def _shots(flat: Flat, edit: LoadedEdit, finder: MediaFinder) -> list[ShotSpec]:
    items: list[tuple[float, float, Piece | None, otio.schema.Clip]] = [
        (p.rec_lo, p.rec_hi, p, p.clip) for p in flat.pieces if _round(p.rec_hi) > _round(p.rec_lo)
    ]
    items += [(at, at, None, clip) for at, clip in flat.zero_length]
    items.sort(key=lambda it: (_round(it[0]), it[1] > it[0]))
    shots = []
    for i, (lo, hi, piece, clip) in enumerate(items):
        if piece is None:
            start = timecode(edit.start_frame + _round(lo), edit.rate_num, edit.rate_den,
                             edit.drop_frame)
            src_s = clip.source_range.start_time.to_seconds() if clip.source_range else 0.0
            reason = f"zero-length clip '{clip.name}' at {start}: nothing to work on"
            shots.append(_shot(i, lo, lo, clip, src_s, 1.0, edit, finder, flat.hints, reason))
        else:
            shots.append(_shot(i, lo, hi, clip, piece.src_lo_s, piece.scalar, edit, finder,
                               flat.hints, None))
    return shots
