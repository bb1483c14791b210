"""Ingest: read a locked edit into a reel of shots (DESIGN.md, "The walk").

    timeline, reel = read_timeline("reel1.edl", fps=23.976, media_root="/mnt/media")
    for shot in reel.shots:
        print(shot.name, timecode(reel.start_frame + shot.record_in_frame, reel.rate_num,
                                  reel.rate_den, reel.drop_frame), shot.skipped_reason)

A shot is a stretch of one picture clip the audience sees: the top-most enabled clip where
video tracks stack, nothing for gaps or black, the cut at a dissolve's midpoint, generators
(titles, mattes) only where no photographed clip shows (see `tasks.ingest_flatten`). Shots
name themselves SH010, SH020, … in record order; a zero-length clip is a skipped shot. So is a
retimed clip (speed change, freeze frame, reverse: foleyflow analyses picture at 100 %), with
the reason. A clip whose range OTIO cannot place (frame rate 0, not a number, a negative
duration, which would pull every later shot earlier) refuses the edit with one TimelineError.

Media files are found (`tasks.ingest_media`) and only their headers read (`tasks.media.probe`
without the packet scan): `source_rate` is the picture's own frame rate, which an EDL or AAF
does not carry (their clip ranges run at the edit's rate), and a file without a video stream
is a skipped shot. A file that cannot be read keeps the edit's rate; the proxy stage reports it.
`source_in_s` is seconds into the media file: the clip's source start minus the start of the
media's available range when the edit declares one (a camera timecode, say). An EDL declares
none: its source in is on the source timecode clock, so the file's own start timecode, read
from its header, is subtracted (`_on_file_clock`); a range that fits the file neither way is a
skipped shot whose reason gives both in timecode. Where the header cannot be read, the raw
value is kept and the media stage (`tasks.prepare.file_time`) decides.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from tasks.ingest_flatten import Flat, Hint, Piece, media_start_s, visible_picture
from tasks.ingest_formats import LoadedEdit, TimelineError, load_edit, rational_rate
from tasks.ingest_media import MediaFinder
from tasks.media import MediaInfo

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
    source_rate: float  # the picture's own frame rate (e.g. 15, 21.5, 29.97) from the media
    # file's header; the clip's rate in the edit when the file cannot be read
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

    Drop-frame applies to 30000/1001 and 60000/1001 only; it is ignored at other rates.
    Hours wrap at 24 as SMPTE's do: a day and one second is "00:00:01:00"."""
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
    hh = frames // (nominal * 3600) % 24
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"


# Names editing systems give a new sequence ("Timeline 1", "Sequence 01", "Untitled
# Sequence.01"): two shows' reels would share one name — and one reel in the database, each
# ingest replacing the other's shots — so the file's name is used instead.
_DEFAULT_NAMES = re.compile(r"(untitled|timeline|sequence|project|untitled sequence)"
                            r"[ ._-]*\d*", re.IGNORECASE)


def reel_name(timeline: otio.schema.Timeline, path: Path) -> str:
    """The timeline's name, safe inside a file name — else, or when it is a name editing
    systems give every new sequence ("Timeline 1"), the file's stem."""
    own = timeline.name or ""
    stem = path.stem
    if path.name == "Info.fcpxml" and path.parent.suffix.lower() == ".fcpxmld":
        stem = path.parent.stem  # the edit inside a Final Cut Pro bundle: the bundle's name
    for raw in (own if not _DEFAULT_NAMES.fullmatch(own.strip()) else "", stem):
        name = _UNSAFE.sub("_", raw).strip(" ._")
        if name:
            return name[:120]
    return "reel"


def read_timeline(
    path: str | Path, *, fps: float | None = None, media_root: str | Path | None = None
) -> tuple[otio.schema.Timeline, ReelSpec]:
    """Read the edit at `path` (.otio .otioz .edl .xml .fcpxml .fcpxmld .aaf) into its shots.

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
    fps_exact = edit.rate_num / edit.rate_den
    _check_ranges(edit, p)
    try:
        flat = visible_picture(edit.timeline, fps_exact, edit.start_frame)
        shots = _shots(flat, edit, finder, p.suffix.lower() == ".edl")
        extent = _round(flat.extent)
    except Exception as exc:  # a structure the adapters accepted but that makes no sense
        raise TimelineError(f"{p}: the edit's structure could not be interpreted "
                            f"({type(exc).__name__}: {exc}) — re-export it, flattening nested "
                            f"sequences if it persists") from exc
    spec = ReelSpec(
        name=reel_name(edit.timeline, p),
        timeline_path=str(p),
        rate_num=edit.rate_num,
        rate_den=edit.rate_den,
        fps=fps_exact,
        drop_frame=edit.drop_frame,
        start_frame=edit.start_frame,
        start_timecode=timecode(edit.start_frame, edit.rate_num, edit.rate_den, edit.drop_frame),
        duration_s=extent / fps_exact,
        shots=tuple(shots),
    )
    return edit.timeline, spec


def _round(frames: float) -> int:
    return math.floor(frames + 0.5 + 1e-9)


_REEXPORT = ("re-export the edit; if it persists, delete the clip and edit it in again from "
             "its media in the editing system")
_FIX_IN_OUT = "fix its in and out points in the editing system and re-export the edit"


def _bad_range(r: otio.opentime.TimeRange) -> tuple[str, str] | None:
    """(what is wrong, what to do) for a range OTIO cannot place on a timeline, if anything."""
    for t in (r.start_time, r.duration):
        if not (math.isfinite(t.rate) and t.rate > 0):
            return f"frame rate {t.rate:g} in its range (a rate must be above 0)", _REEXPORT
    if not (math.isfinite(r.start_time.value) and math.isfinite(r.duration.value)):
        return (f"a range that is not a number ({r.start_time.value:g}+{r.duration.value:g})",
                _REEXPORT)
    if r.duration.value < 0:
        return (f"a negative duration ({r.duration.value:g} frames at {r.duration.rate:g} fps: "
                f"its out point lies before its in point)", _FIX_IN_OUT)
    return None


def _check_ranges(edit: LoadedEdit, path: Path) -> None:
    """Refuse (one TimelineError naming the item) a range in the picture tracks that OTIO cannot
    place: a rate of 0, a value that is not a number, a negative duration. Left in, each of
    them moves or breaks everything after it on the record side."""
    fps = edit.rate_num / edit.rate_den

    def where(track: otio.schema.Track, i: int, depth: int) -> str:
        label = f"track '{track.name}'" if track.name else "a track"
        at = f"{label}, item {i + 1}"
        if depth == 0:
            try:  # where the previous item ends (the item's own range is the broken one)
                prev = [j for j in range(i) if not isinstance(track[j], otio.schema.Transition)]
                start = (track.range_of_child_at_index(prev[-1]).end_time_exclusive().to_seconds()
                         if prev else 0.0)
                if track.source_range is not None:
                    start -= track.source_range.start_time.to_seconds()
                at += ", record " + timecode(edit.start_frame + _round(start * fps),
                                             edit.rate_num, edit.rate_den, edit.drop_frame)
            except Exception:  # the record position is a courtesy: the name is the point
                pass
        return at if depth == 0 else f"{at}, inside a nested sequence"

    def walk(comp: otio.core.Composition, depth: int) -> None:
        for i, child in enumerate(comp):
            if isinstance(child, otio.schema.Track) and child.kind != otio.schema.TrackKind.Video:
                continue
            if isinstance(child, otio.schema.Transition):
                what, ranges = f"transition '{child.name or 'dissolve'}'", [
                    otio.opentime.TimeRange(child.in_offset, child.out_offset)]
            else:
                kind = ("clip" if isinstance(child, otio.schema.Clip) else "gap"
                        if isinstance(child, otio.schema.Gap) else "nested sequence")
                what = f"{kind} '{child.name}'" if child.name else kind
                ranges = [child.source_range] if child.source_range is not None else []
            for r in ranges:
                bad = _bad_range(r)
                if bad:
                    place = where(comp, i, depth) if isinstance(comp, otio.schema.Track) \
                        else f"nested sequence '{comp.name}'"
                    raise TimelineError(f"{path}: {what} ({place}) has {bad[0]} — {bad[1]}")
            if isinstance(child, otio.core.Composition):
                walk(child, depth + 1)

    for track in edit.timeline.tracks:
        if isinstance(track, otio.schema.Track) and track.kind == otio.schema.TrackKind.Video \
                and track.enabled:
            bad = _bad_range(track.source_range) if track.source_range is not None else None
            if bad:
                raise TimelineError(f"{path}: track '{track.name}' has {bad[0]} — {_REEXPORT}")
            walk(track, 0)


def _source_rate(clip: otio.schema.Clip, fps: float) -> float:
    """The clip's rate as the edit states it (the media's rate in OTIO and FCP7 XML; the edit's
    own rate in an EDL or AAF)."""
    ranges = [clip.source_range, getattr(clip.media_reference, "available_range", None)]
    for r in ranges:
        if r is not None and math.isfinite(r.duration.rate) and r.duration.rate > 0:
            num, den = rational_rate(r.duration.rate)
            return num / den
    return fps


MAX_PICTURE_RATE = 240.0  # above this a header's "rate" is a timebase (1k tbr), not frames


def _picture_rate(info: MediaInfo | None, edit_rate: float) -> float:
    """The media's own frame rate when its header tells it (an EDL's or AAF's clip ranges run at
    the edit's rate, which decoded a 29.97 picture at 24 drops frames), else the edit's."""
    if info is not None and info.has_video and math.isfinite(info.fps) \
            and 0 < info.fps <= MAX_PICTURE_RATE:
        return info.fps
    return edit_rate


def _retimed(clip: otio.schema.Clip, scalar: float, dur_frames: int, edl: bool) -> str | None:
    """Why a retimed clip (speed change, freeze frame, reverse) is not analysed, if it is one.

    A speed within half a frame of 100 % over the whole shot (a 23.976/24 conform, say) is
    analysed as 100 %."""
    if abs(scalar - 1.0) * max(dur_frames, 1) < 0.5:
        return None
    fx = next((f for f in clip.effects if isinstance(f, otio.schema.LinearTimeWarp)), None)
    how = ("M2" if edl else (fx.name or type(fx).__name__) if fx is not None
           else "a speed effect on the nested sequence around it")
    if clip.name and not edl:
        how += f" on clip '{clip.name}'"
    if scalar == 0:
        return (f"freeze frame ({how}) — foleyflow follows motion and a held frame has none: "
                f"the hold gets no Foley; add what it needs by hand, or render the freeze to "
                f"a media file and re-export the edit with that")
    pct = f"{scalar * 100:.4g} %"
    if scalar < 0:
        return (f"reverse clip ({pct}, {how}) — foleyflow analyses clips forwards at 100 %: "
                f"render the reversed clip to a new media file and re-export the edit with "
                f"it at 100 %")
    return (f"speed change {pct} ({how}) — foleyflow analyses clips at 100 %: render the "
            f"speed change into a new media file (or set the clip to 100 %) and re-export "
            f"the edit")


def _no_picture(info: MediaInfo | None, path: str | None) -> str | None:
    if info is None or info.has_video:
        return None
    return (f"no video stream in {path} (sound only) — a picture clip needs its picture: "
            f"link the clip to its movie file (or give the movie the same name, with "
            f"--media-root on its folder) and re-run")


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
    if avail is None or _bad_range(avail) or avail.duration.value <= 0:
        return None
    media_s = avail.duration.to_seconds()
    slack = 0.5 / fps
    first, last = sorted((file_in_s, file_in_s + used_s))  # a reversed clip runs backwards
    if first >= -slack and last <= media_s + slack:
        return None
    start_s = media_start_s(clip)
    media = Path(source_path).name if source_path else (clip.media_reference.name or clip.name)
    return _outside(start_s + first, start_s + last, start_s, media_s, media, source_rate)


def _outside(first_s: float, last_s: float, start_s: float, media_s: float, media: str,
             rate: float) -> str:
    """"source range A–B lies outside media NAME (C–D, duration …)": a shot's source range
    against its media's, both on the source timecode clock, in timecode at `rate`."""
    num, den = rational_rate(rate)

    def tc(seconds: float) -> str:
        return timecode(_round(seconds * num / den), num, den, False)

    return (f"source range {tc(first_s)}–{tc(last_s)} lies outside media {media} "
            f"({tc(start_s)}–{tc(start_s + media_s)}, duration {media_s:.2f} s)")


def _declares_range(clip: otio.schema.Clip) -> bool:
    """Whether the edit says where the clip's media begins on the source clock (an available
    range with a usable rate): OTIO, FCP XML and AAF do; an EDL does not."""
    avail = getattr(clip.media_reference, "available_range", None)
    return avail is not None and _bad_range(avail) is None and avail.duration.value > 0


def _on_file_clock(source_s: float, used_s: float, info: MediaInfo,
                   edit_rate: float) -> tuple[float, str | None]:
    """(seconds into the file, why the range lies outside it) for a source time the edit gives
    on the source *timecode* clock (an EDL's source in): a camera file begins at its embedded
    timecode, so that is subtracted whenever the range then fits. The raw value is kept only
    when it alone fits (a file whose timecode the edit ignored) or the file has none."""
    slack = 0.5 / info.fps if info.fps > 0 else 0.0

    def fits(t: float) -> bool:
        lo, hi = sorted((t, t + used_s))  # a reversed clip runs backwards
        return lo >= -slack and hi <= info.duration_s + slack

    tc_s = None
    if info.timecode and info.fps > 0:
        try:
            tc_s = otio.opentime.from_timecode(info.timecode, info.fps).to_seconds()
        except ValueError:  # a timecode the file's own rate cannot hold
            tc_s = None
    if tc_s is not None and fits(source_s - tc_s):
        return source_s - tc_s, None
    if fits(source_s) or info.duration_s <= 0:
        return source_s, None
    first, last = sorted((source_s, source_s + used_s))
    return source_s, (_outside(first, last, tc_s or 0.0, info.duration_s, Path(info.path).name,
                               edit_rate)
                      + ": check the event's source timecode and that the right file was "
                        "found for its reel")


def _shot(index: int, lo: float, hi: float, clip: otio.schema.Clip, src_lo_s: float,
          scalar: float, edit: LoadedEdit, finder: MediaFinder, hints: list[Hint],
          reason: str | None, edl: bool = False) -> ShotSpec:
    fps = edit.rate_num / edit.rate_den
    rec_in = _round(lo)
    dur = max(0, _round(hi) - rec_in)
    edit_rate = _source_rate(clip, fps)
    path, missing = finder.resolve(clip)
    info = finder.header(path) if path else None
    source_rate = _picture_rate(info, edit_rate)
    # A shot cut inside its clip (at an odd-length dissolve's midpoint, half a frame into one)
    # starts on the record frame `lo` rounds to, and its source moves with it; a clip's own
    # first frame stays its first frame wherever it lands (a mixed-rate clip mid-frame).
    own = clip.source_range.start_time.to_seconds() if clip.source_range else None
    inside = own is None or abs(src_lo_s - own) > 1e-6
    file_in_s = src_lo_s + (rec_in - lo) / fps * scalar * inside - media_start_s(clip)
    outside = None
    if not _declares_range(clip) and info is not None and info.has_video:
        file_in_s, outside = _on_file_clock(file_in_s, dur / fps * scalar, info, edit_rate)
    if reason is None and missing is None:
        reason = (_retimed(clip, scalar, dur, edl) or _no_picture(info, path) or outside
                  or _outside_media(clip, file_in_s, dur / fps * scalar, fps, edit_rate, path))
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


def _shots(flat: Flat, edit: LoadedEdit, finder: MediaFinder, edl: bool) -> list[ShotSpec]:
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
                               flat.hints, None, edl))
    return shots
