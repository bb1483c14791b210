"""Fit a timeline to one writer's limits before `tasks.timeline_io` hands it to the adapter.

The .otio file is the edit as it is. The interchange formats (AAF, FCP7 XML, FCPX XML, EDL)
get the picture flattened to one video track of exactly the shots `tasks.ingest` sees — the
top-most visible clip, cut at dissolve midpoints, generators and disabled clips resolved —
followed by the edit's audio tracks and ours. Their adapters cannot be trusted with nested
sequences, transitions or layered video (each breaks one writer or another), and a sound
turnover needs the cut, not the picture editor's layers.

- Every range is restated in whole frames so each item lands on its exact record position,
  rounded (not a sum of rounded lengths, which drifts on mixed-rate edits); FCP7 XML keeps
  each clip's own SMPTE rate, the others take the edit rate.
- Clips without a media range get their own; generator clips become offline clips of that
  name where the writer cannot express them.
- FCP7 XML: the sequence timecode's display format follows the edit's drop-frame flag.
- FCPX XML: its adapter knows only 24, 25, 30, 50 and 60 fps; other rates are refused.
- EDL: picture only; record timecodes start at the edit's start; reel names made legal.
- AAF specifics live in `tasks.timeline_aaf`.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import re
from typing import Any

import opentimelineio as otio

from tasks.ingest_flatten import visible_picture

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
_XML_GENERATORS = ("Slug", "Color")


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an adapter with its stray print()s swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def ours(timeline: otio.schema.Timeline) -> dict[str, Any]:
    """Our metadata on a timeline (rate, drop_frame, start_frame as `tasks.ingest` left them)."""
    meta = timeline.metadata.get("foleyflow")
    return dict(meta.items()) if hasattr(meta, "items") else {}


def edit_rate(timeline: otio.schema.Timeline) -> float:
    rate = ours(timeline).get("rate")
    if isinstance(rate, (list, tuple)) and len(rate) == 2 and rate[1]:
        return rate[0] / rate[1]
    if timeline.global_start_time is not None:
        return timeline.global_start_time.rate
    return timeline.duration().rate


def drop_frame(timeline: otio.schema.Timeline) -> bool:
    return bool(ours(timeline).get("drop_frame", False))


def _frame(seconds: float, rate: float) -> int:
    return math.floor(seconds * rate + 0.5 + 1e-9)


def at_rate(r: otio.opentime.TimeRange, rate: float) -> otio.opentime.TimeRange:
    """`r` in whole frames at `rate`."""
    return TR(RT(_frame(r.start_time.to_seconds(), rate), rate),
              RT(_frame(r.duration.to_seconds(), rate), rate))


# --- the flattened picture -----------------------------------------------------------------

def _clip_rate(clip: otio.schema.Clip, rate: float) -> float:
    for r in (clip.source_range, getattr(clip.media_reference, "available_range", None)):
        if r is not None and r.duration.rate > 0:
            return r.duration.rate
    return rate


def picture_track(timeline: otio.schema.Timeline, rate: float) -> otio.schema.Track:
    """One video track of the visible shots (as `tasks.ingest` cuts them), gaps between."""
    start = ours(timeline).get("start_frame")
    if not isinstance(start, int):
        gst = timeline.global_start_time
        start = _frame(gst.to_seconds(), rate) if gst is not None else 0
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    cursor = 0
    for piece in visible_picture(timeline, rate, start).pieces:
        lo, hi = _frame(piece.rec_lo / rate, rate), _frame(piece.rec_hi / rate, rate)
        if hi <= lo:
            continue
        if lo > cursor:
            track.append(otio.schema.Gap(source_range=TR(RT(0, rate), RT(lo - cursor, rate))))
        clip = copy.deepcopy(piece.clip)
        src_rate = _clip_rate(clip, rate)
        used_s = (hi - lo) / rate * (piece.scalar if piece.scalar else 0)
        clip.source_range = TR(RT(piece.src_lo_s * src_rate, src_rate),
                               RT((hi - lo) / rate * src_rate, src_rate))
        for m in list(clip.markers):
            t = m.marked_range.start_time.to_seconds()
            if not piece.src_lo_s - 1e-9 <= t <= piece.src_lo_s + max(used_s, 0) + 1e-9:
                clip.markers.remove(m)
        track.append(clip)
        cursor = hi
    return track


# --- per-item repairs ------------------------------------------------------------------------

def _restate(item: otio.core.Item, rate: float, frames: int, keep_rate: bool) -> None:
    """Restate a clip or gap `frames` edit-rate frames long, at its own rate or the edit's."""
    own = item.trimmed_range().duration.rate
    r = own if keep_rate and RT.is_valid_timecode_rate(own) else rate
    start = item.trimmed_range().start_time.to_seconds()
    item.source_range = TR(RT(_frame(start, r), r), RT(frames / rate * r, r))
    for marker in item.markers:
        marker.marked_range = at_rate(marker.marked_range, r)
    ref = getattr(item, "media_reference", None)
    if ref is not None and ref.available_range is not None:
        ref.available_range = at_rate(ref.available_range, r)


def _offline(clip: otio.schema.Clip) -> None:
    """Give a clip a media range if it has none; generators it cannot write become offline."""
    ref = clip.media_reference
    if isinstance(ref, otio.schema.GeneratorReference):
        ref = otio.schema.MissingReference(name=clip.name)
        clip.media_reference = ref
    if ref.available_range is None and clip.source_range is not None:
        ref.available_range = clip.source_range


def _fix_xml_timecode(clip: otio.schema.Clip) -> None:
    """Drop-frame display is only valid at 29.97 / 59.94; some exports claim it elsewhere."""
    ref = clip.media_reference
    fcp = ref.metadata.get("fcp_xml")
    tc = fcp.get("timecode") if hasattr(fcp, "get") else None
    if hasattr(tc, "get") and tc.get("displayformat") == "DF" and ref.available_range and \
            round(ref.available_range.start_time.rate * 1001) not in (30000, 60000):
        fcp, tc = dict(fcp), dict(tc)
        tc["displayformat"] = "NDF"
        fcp["timecode"] = tc
        ref.metadata["fcp_xml"] = fcp


def _sanitise_track(track: otio.schema.Track, rate: float, keep_rates: bool,
                    generators_ok: tuple[str, ...]) -> None:
    """Snap `track` to whole frames; disabled items become gaps; fill in media ranges."""
    pos = 0.0
    for i, child in enumerate(list(track)):
        if isinstance(child, otio.schema.Transition):
            child.in_offset = RT(_frame(child.in_offset.to_seconds(), rate), rate)
            child.out_offset = RT(_frame(child.out_offset.to_seconds(), rate), rate)
            continue
        length = child.trimmed_range().duration.to_seconds()
        frames = _frame(pos + length, rate) - _frame(pos, rate)
        pos += length
        if not child.enabled or not isinstance(child, (otio.schema.Clip, otio.schema.Gap)):
            # nested audio sequences are left out (the picture is flat already)
            child = otio.schema.Gap(source_range=TR(RT(0, rate), RT(frames, rate)))
            track[i] = child
        _restate(child, rate, frames, keep_rates)
        if isinstance(child, otio.schema.Clip):
            ref = child.media_reference
            if not (isinstance(ref, otio.schema.GeneratorReference)
                    and ref.generator_kind in generators_ok):
                _offline(child)
            if generators_ok:  # FCP7 XML
                _fix_xml_timecode(child)


def prepare(timeline: otio.schema.Timeline, suffix: str, *,
            source_audio: bool = True) -> tuple[otio.schema.Timeline, dict[str, Any]]:
    """A copy of `timeline` the writer for `suffix` accepts, and the writer's keyword args.

    `source_audio=False` leaves out the edit's own audio tracks (keeping those we added, whose
    clips carry `metadata["foleyflow"]`) — the fallback when an adapter chokes on them."""
    if suffix == ".otio":
        return copy.deepcopy(timeline), {}
    rate = edit_rate(timeline)
    if suffix == ".fcpxml" and not any(abs(rate - r) < 1e-6 for r in (24, 25, 30, 50, 60)):
        raise ValueError(f"the FCPX XML adapter cannot write a {rate:.3f} fps edit (only "
                         f"24, 25, 30, 50 or 60): deliver FCP7 .xml or .otio instead")
    tracks = [picture_track(timeline, rate)]
    if suffix != ".edl":
        for t in timeline.tracks:
            if isinstance(t, otio.schema.Track) and t.kind == otio.schema.TrackKind.Audio \
                    and t.enabled and (source_audio or _is_ours(t)):
                tracks.append(copy.deepcopy(t))
    tl = otio.schema.Timeline(name=timeline.name, metadata=copy.deepcopy(timeline.metadata))
    tl.global_start_time = RT(_frame(timeline.global_start_time.to_seconds(), rate), rate) \
        if timeline.global_start_time is not None else RT(0, rate)
    for t in tracks:
        _sanitise_track(t, rate, keep_rates=suffix == ".xml",
                        generators_ok=_XML_GENERATORS if suffix == ".xml" else ())
        tl.tracks.append(t)
    if suffix == ".xml":
        fcp = dict(tl.metadata.get("fcp_xml", {}) or {})
        tc = dict(fcp.get("timecode", {}) or {})
        tc["displayformat"] = "DF" if drop_frame(timeline) else "NDF"
        fcp["timecode"] = tc
        tl.metadata["fcp_xml"] = fcp
        # our stems' file timecodes count as the reel does (the writer labels a file NDF
        # unless told: 3.6 s an hour off at 29.97 DF)
        for clip in _our_clips(tl):
            ref_fcp = dict(clip.media_reference.metadata.get("fcp_xml", {}) or {})
            ref_fcp["timecode"] = {**dict(ref_fcp.get("timecode", {}) or {}),
                                   "displayformat": tc["displayformat"]}
            clip.media_reference.metadata["fcp_xml"] = ref_fcp
    if suffix == ".fcpxml":
        # FCPX places a clip's media on the clip's own clock from 0: a stem's range on its
        # record timecode (what its BWF stamp says) would play 01:00:00:00 into a 3 s file
        for clip in _our_clips(tl):
            clip.source_range = _from_zero(clip.source_range)
            clip.media_reference.available_range = _from_zero(
                clip.media_reference.available_range)
    if suffix == ".edl":
        return _prepare_edl(tl, rate), {"rate": rate}
    return tl, {}


def _from_zero(r: otio.opentime.TimeRange | None) -> otio.opentime.TimeRange | None:
    return None if r is None else otio.opentime.TimeRange(RT(0, r.start_time.rate), r.duration)


def _ours(clip: otio.schema.Clip) -> bool:
    """A clip foleyflow added (a Foley stem): it carries `metadata["foleyflow"]`."""
    return hasattr(clip.metadata.get("foleyflow"), "get")


def _our_clips(tl: otio.schema.Timeline) -> list[otio.schema.Clip]:
    """The clips foleyflow added, with a file reference."""
    return [c for c in tl.find_clips()
            if _ours(c) and isinstance(c.media_reference, otio.schema.ExternalReference)]


def _is_ours(track: otio.schema.Track) -> bool:
    return any(_ours(c) for c in track.find_clips())


# --- EDL -------------------------------------------------------------------------------------

def _reel(clip: otio.schema.Clip) -> str:
    cmx = clip.metadata.get("cmx_3600")
    name = cmx.get("reel") if hasattr(cmx, "get") else None
    ref = clip.media_reference
    name = name or ref.name or re.split(r"[\\/]", getattr(ref, "target_url", "") or "")[-1] \
        or clip.name
    name = re.sub(r"\.[A-Za-z0-9]{2,4}$", "", name or "")
    return re.sub(r"[^A-Za-z0-9_]", "", name)[:8] or "AX"


def _prepare_edl(tl: otio.schema.Timeline, rate: float) -> otio.schema.Timeline:
    track = tl.tracks[0]
    for clip in track.find_clips():
        cmx = dict(clip.metadata.get("cmx_3600", {}) or {})
        cmx["reel"] = _reel(clip)
        clip.metadata["cmx_3600"] = cmx
    if len(track) and isinstance(track[0], otio.schema.Gap):  # keep the edit's first frame
        black = otio.schema.Clip(name="BLACK", source_range=track[0].source_range,
                                 media_reference=otio.schema.GeneratorReference(
                                     generator_kind="black"))
        black.metadata["cmx_3600"] = {"reel": "BL"}
        track[0] = black
    start = _frame(tl.global_start_time.to_seconds(), rate)
    if start > 0:  # the EDL writer counts record time from 0: lead with the start
        track.insert(0, otio.schema.Gap(source_range=TR(RT(0, rate), RT(start, rate))))
    return tl


def finish_edl(text: str, timeline: otio.schema.Timeline) -> str:
    """Add the `FCM:` line after the title, as Avid does."""
    fcm = "FCM: DROP FRAME" if drop_frame(timeline) else "FCM: NON-DROP FRAME"
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("TITLE:") else 0
    return "\n".join([*lines[:at], fcm, *lines[at:]]) + "\n"
