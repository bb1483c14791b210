"""Turnover timelines: the edit with a FOLEY audio track, written as OTIO, AAF, FCP7 XML, EDL.

    edit = add_foley_track(timeline, [FoleyClip("SH010", 0, 48, "shots/SH010/x.wav")],
                           rate_num=24, rate_den=1)
    write_timeline(edit, "delivery/reel1.aaf")

Stem paths stay relative to the timeline file (the delivery folder moves as a whole);
`tasks.ingest.read_timeline` resolves them against the timeline's folder. Picture clips point
at the media files the ingest found (`relink_picture`: file:// URLs), which a path relative
to the edit's own folder would not reach from the delivery folder. Every writer gets a
copy prepared for its format's limits (`tasks.timeline_prep`, `tasks.timeline_aaf`), and files
appear atomically.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from tasks import timeline_aaf, timeline_prep
from tasks.ingest_media import MediaFinder, url_to_path

__all__ = ["FoleyClip", "TimelineWriteError", "add_foley_track", "write_timeline"]
log = logging.getLogger(__name__)

WRITERS = {
    ".otio": "otio_json",
    ".xml": "fcp_xml",
    ".aaf": "AAF",
    ".edl": "cmx_3600",
    ".fcpxml": "fcpx_xml",
}


class TimelineWriteError(RuntimeError):
    """A timeline could not be written; the message names the file and the cause."""


@dataclass(frozen=True)
class FoleyClip:
    """One shot's Foley stem placed on the record side."""

    shot: str
    record_in_frame: int  # frames from the timeline start, at the timeline rate
    duration_frames: int
    media_path: str  # relative to the timeline file, e.g. "shots/SH010/SH010_foley_stereo.wav"
    channels: int = 2
    metadata: Mapping[str, Any] = field(default_factory=dict)  # into metadata["foleyflow"]
    sha256: str | None = None  # the stem file's: a retake's new sound gets a new AAF MobID


def _rt(frames: float, rate: float) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(frames, rate)


def _foley_clip(fc: FoleyClip, rate: float, origin: int) -> otio.schema.Clip:
    """The stem as a clip. Its media start on the record clock (`origin`, the timeline's start
    frame, + the shot's record in), as the stem's BWF time stamp says: a relink or conform by
    source timecode, or an EDL of the track, finds it where it is."""
    start = _rt(origin + fc.record_in_frame, rate)
    frames = otio.opentime.TimeRange(start, _rt(fc.duration_frames, rate))
    ref = otio.schema.ExternalReference(target_url=fc.media_path, available_range=frames)
    ref.name = Path(fc.media_path).name
    ref.metadata["foleyflow"] = {"channels": fc.channels, "samplerate": 48000, "bit_depth": 24,
                                 **({"sha256": fc.sha256} if fc.sha256 else {})}
    clip = otio.schema.Clip(name=f"{fc.shot} Foley", media_reference=ref, source_range=frames)
    clip.metadata["foleyflow"] = {**dict(fc.metadata), "shot": fc.shot, "channels": fc.channels}
    return clip


def relink_picture(timeline: otio.schema.Timeline, media: Sequence[str]) -> int:
    """Point the edit's picture clips at the media files ingest found (`media`: absolute
    paths), in place; returns how many were relinked.

    An edit names its media relative to its own folder (`media/A001.mov`), or by a path the
    ingest resolved with --media-root: written into the delivery folder as it was, every
    picture clip would be offline there. A clip whose media reference is a relative path, or
    a path that does not exist, is pointed at the one found file of that name (a file:// URL);
    a clip with no reference at all (an EDL's) at the one file its clip or reel name names,
    with the file's range on its timecode clock. Names matching no file, or several, are left
    as the edit has them."""
    by_name: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for path in media:
        by_name.setdefault(Path(path).name, []).append(path)
        by_stem.setdefault(Path(path).stem, []).append(path)
    done = 0
    for clip in timeline.find_clips():
        ref = clip.media_reference
        if isinstance(ref, otio.schema.MissingReference):
            # an EDL names no file: its clip name or reel is the file's, as ingest found it
            found = next((hits[0] for n in MediaFinder.names(clip)
                          if len(hits := by_name.get(n) or by_stem.get(n) or []) == 1), None)
            if found is not None and clip.source_range is not None:
                clip.media_reference = _file_reference(found, clip.source_range)
                done += 1
            continue
        if not isinstance(ref, otio.schema.ExternalReference) or not ref.target_url:
            continue
        local = url_to_path(ref.target_url)  # ingest's reading of a media URL
        if local is None:  # http, s3 …: not ours to relink
            continue
        if Path(local).is_absolute() and Path(local).exists():
            continue
        found = by_name.get(Path(local).name, [])
        if len(found) == 1:
            ref.target_url = Path(found[0]).as_uri()
            done += 1
    return done


def _file_reference(path: str, used: otio.opentime.TimeRange) -> otio.schema.ExternalReference:
    """A reference to the media file at `path` whose range is the file on the source clock the
    clip's range is on: from its embedded timecode (an EDL's source in is a timecode), or from
    0 when the clip's range only fits there (a file without timecode, read by its own time)."""
    from tasks import media

    rate = used.start_time.rate
    ref = otio.schema.ExternalReference(target_url=Path(path).as_uri())
    ref.name = Path(path).name
    try:
        info = media.probe(path, scan_packets=False)
    except Exception:  # unreadable now: the link still beats an offline clip
        return ref
    length = otio.opentime.RationalTime(round(info.duration_s * rate), rate)
    start = otio.opentime.RationalTime(0, rate)
    if info.timecode and info.fps > 0:
        try:
            tc = otio.opentime.from_timecode(info.timecode, info.fps).rescaled_to(rate)
        except ValueError:
            tc = None
        if tc is not None:
            tc = otio.opentime.RationalTime(round(tc.value), rate)
            if tc <= used.start_time and used.end_time_exclusive() <= tc + length:
                start = tc
                if ";" in info.timecode:  # the file counts drop-frame: its XML label too
                    ref.metadata["fcp_xml"] = {"timecode": {"displayformat": "DF"}}
    ref.available_range = otio.opentime.TimeRange(start, length)
    return ref


def add_foley_track(
    timeline: otio.schema.Timeline,
    clips: Sequence[FoleyClip],
    *,
    rate_num: int,
    rate_den: int,
    name: str = "FOLEY",
) -> otio.schema.Timeline:
    """A deep copy of `timeline` with an audio track holding one clip per shot (gaps between).

    Record frames count from the timeline start, as in `tasks.ingest.ShotSpec`.
    Raises ValueError if clips overlap or have no duration."""
    rate = rate_num / rate_den
    out = copy.deepcopy(timeline)
    origin = (round(out.global_start_time.rescaled_to(rate).value)
              if out.global_start_time is not None else 0)
    track = otio.schema.Track(name=name, kind=otio.schema.TrackKind.Audio)
    cursor = 0
    for fc in sorted(clips, key=lambda c: c.record_in_frame):
        if fc.duration_frames <= 0:
            raise ValueError(f"Foley clip for {fc.shot} has no duration ({fc.duration_frames})")
        if fc.record_in_frame < cursor:
            raise ValueError(f"Foley clip for {fc.shot} at frame {fc.record_in_frame} overlaps "
                             f"the previous clip (which ends at frame {cursor})")
        if fc.record_in_frame > cursor:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
                _rt(0, rate), _rt(fc.record_in_frame - cursor, rate))))
        track.append(_foley_clip(fc, rate, origin))
        cursor = fc.record_in_frame + fc.duration_frames
    out.tracks.append(track)
    if out.global_start_time is None:
        out.global_start_time = _rt(0, rate)
    meta = dict(out.metadata.get("foleyflow", {}) or {})
    meta.setdefault("rate", [rate_num, rate_den])
    out.metadata["foleyflow"] = meta
    return out


def write_timeline(timeline: otio.schema.Timeline, path: str | Path) -> None:
    """Write `timeline` in the format of `path`'s extension (.otio .xml .aaf .edl .fcpxml).

    .otio holds the edit as it is; the interchange formats get the flattened picture, the
    edit's audio (left out, with a warning, if their adapter cannot write it) and our tracks
    (see `tasks.timeline_prep`). The file appears complete or not at all (temp file in the
    same folder, then os.replace). Raises ValueError for an unknown extension,
    TimelineWriteError if the adapter fails."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"{p}: cannot write '{p.suffix}' timelines; use one of "
                         f"{', '.join(WRITERS)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_atomically(timeline, p, suffix, source_audio=True)
    except Exception as exc:
        if suffix in (".otio", ".edl"):
            raise TimelineWriteError(f"{p}: could not write the timeline "
                                     f"({type(exc).__name__}: {exc})") from exc
        try:  # the edit's own audio tracks are the usual culprits: deliver without them
            _write_atomically(timeline, p, suffix, source_audio=False)
        except Exception as exc2:
            raise TimelineWriteError(f"{p}: could not write the timeline "
                                     f"({type(exc2).__name__}: {exc2})") from exc2
        log.warning("%s: written without the edit's own audio tracks (%s: %s)",
                    p, type(exc).__name__, exc)


def _write_atomically(timeline: otio.schema.Timeline, p: Path, suffix: str, *,
                      source_audio: bool) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=suffix, dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        prepared, kwargs = timeline_prep.prepare(timeline, suffix, source_audio=source_audio)
        if suffix == ".aaf":
            timeline_aaf.prepare(prepared, timeline_prep.edit_rate(timeline))
            tmp.unlink()  # pyaaf2 creates the file itself
        if suffix == ".edl":
            text = otio.adapters.write_to_string(prepared, WRITERS[suffix], **kwargs)
            tmp.write_text(timeline_prep.finish_edl(text, timeline), encoding="utf-8")
        else:
            timeline_prep.quiet(otio.adapters.write_to_file, prepared, str(tmp),
                                adapter_name=WRITERS[suffix], **kwargs)
        if suffix == ".aaf":
            timeline_aaf.finish(str(tmp), timeline_prep.drop_frame(timeline))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
