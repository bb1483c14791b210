"""Fit a timeline to one writer's limits before `tasks.timeline_io` hands it to the adapter.

- AAF: ranges snapped to the edit rate here; the rest in `tasks.timeline_aaf`.
- FCP7 XML: the sequence timecode's display format follows the edit's drop-frame flag; clips
  at rates SMPTE timecode cannot express (15, 21.5 fps…) are restated at the edit rate.
- FCPX XML: the adapter knows only 24, 25, 30, 50 and 60 fps; every range is snapped to the
  edit rate, and other edit rates are refused with a clear message.
- EDL: picture only; stacked video tracks flattened (top-most wins); ranges snapped to whole
  frames; record timecodes start at the timeline's start timecode; an `FCM:` line states drop
  / non-drop; a dissolve's incoming clip is linked to its own media (see `finish_edl`).

"Snapping" restates every top-level item in whole frames at the edit rate so that each
record position is the exact one, rounded — what `tasks.ingest` computes for a shot — rather
than a sum of individually rounded lengths, which drifts on mixed-rate edits.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import re
from typing import Any

import opentimelineio as otio

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange


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


def prepare(timeline: otio.schema.Timeline, suffix: str) -> tuple[otio.schema.Timeline,
                                                                  dict[str, Any]]:
    """A copy of `timeline` the writer for `suffix` accepts, and the writer's keyword args."""
    tl = copy.deepcopy(timeline)
    rate = edit_rate(timeline)
    if suffix == ".aaf":
        for track in tl.tracks:  # the rest is tasks.timeline_aaf's
            snap_track(track, rate)
    elif suffix == ".xml":
        fcp = dict(tl.metadata.get("fcp_xml", {}) or {})
        tc = dict(fcp.get("timecode", {}) or {})
        tc["displayformat"] = "DF" if drop_frame(timeline) else "NDF"
        fcp["timecode"] = tc
        tl.metadata["fcp_xml"] = fcp
        for item in tl.find_children():
            if isinstance(item, (otio.schema.Clip, otio.schema.Gap)) and item.source_range and \
                    not RT.is_valid_timecode_rate(item.source_range.duration.rate):
                _restate(item, rate)
    elif suffix == ".edl":
        return _prepare_edl(tl, rate), {"rate": rate}
    elif suffix == ".fcpxml":
        if not any(abs(rate - r) < 1e-6 for r in (24, 25, 30, 50, 60)):
            raise ValueError(f"the FCPX XML adapter cannot write a {rate:.3f} fps edit (only "
                             f"24, 25, 30, 50 or 60): deliver FCP7 .xml or .otio instead")
        for track in tl.tracks:
            snap_track(track, rate)
    return tl, {}


# --- frames at the edit rate -------------------------------------------------------------------

def _frame(seconds: float, rate: float) -> int:
    return math.floor(seconds * rate + 0.5 + 1e-9)


def at_rate(r: otio.opentime.TimeRange, rate: float) -> otio.opentime.TimeRange:
    """`r` in whole frames at `rate`."""
    return TR(RT(_frame(r.start_time.to_seconds(), rate), rate),
              RT(_frame(r.duration.to_seconds(), rate), rate))


def _restate(item: otio.core.Item, rate: float, frames: int | None = None) -> None:
    """Restate an item (its markers, its media's range) at `rate`; `frames` sets its length."""
    r = at_rate(item.trimmed_range(), rate)
    if frames is not None:
        r = TR(r.start_time, RT(frames, rate))
    item.source_range = r
    for marker in item.markers:
        marker.marked_range = at_rate(marker.marked_range, rate)
    ref = getattr(item, "media_reference", None)
    if ref is not None and ref.available_range is not None:
        ref.available_range = at_rate(ref.available_range, rate)
    if isinstance(item, otio.core.Composition):
        for child in item:
            if isinstance(child, otio.schema.Transition):
                _restate_transition(child, rate)
            else:
                _restate(child, rate)


def _restate_transition(tr: otio.schema.Transition, rate: float) -> None:
    tr.in_offset = RT(_frame(tr.in_offset.to_seconds(), rate), rate)
    tr.out_offset = RT(_frame(tr.out_offset.to_seconds(), rate), rate)


def snap_track(track: otio.schema.Track, rate: float) -> None:
    """Restate `track`'s items in whole frames so each lands on its exact position, rounded."""
    pos = 0.0
    for child in track:
        if isinstance(child, otio.schema.Transition):
            _restate_transition(child, rate)
            continue
        length = child.trimmed_range().duration.to_seconds()
        _restate(child, rate, _frame(pos + length, rate) - _frame(pos, rate))
        pos += length


# --- EDL -------------------------------------------------------------------------------------

def _prepare_edl(tl: otio.schema.Timeline, rate: float) -> otio.schema.Timeline:
    video = [t for t in tl.tracks if t.kind == otio.schema.TrackKind.Video and t.enabled]
    if not video:
        raise ValueError("an EDL needs a picture track and this edit has none enabled")
    for track in video:
        snap_track(track, rate)
    track = otio.algorithms.flatten_stack(video) if len(video) > 1 else copy.deepcopy(video[0])
    track.name = track.name or "V"
    start = _frame(tl.global_start_time.to_seconds(), rate) if tl.global_start_time else 0
    if start > 0:  # the EDL writer counts record time from 0: lead with the start
        track.insert(0, otio.schema.Gap(source_range=TR(RT(0, rate), RT(start, rate))))
    return otio.schema.Timeline(name=tl.name, tracks=[track], metadata=tl.metadata)


def finish_edl(text: str, timeline: otio.schema.Timeline) -> str:
    """Add the `FCM:` line after the title (as Avid does) and fix dissolve media links.

    In a dissolve event the OTIO writer links the outgoing clip's file with `* FROM CLIP:` and
    the incoming one's with `* TO CLIP:`, and its reader gives the incoming clip the FROM file.
    The outgoing clip has its own event, so the dissolve event keeps only the incoming link."""
    fcm = "FCM: DROP FRAME" if drop_frame(timeline) else "FCM: NON-DROP FRAME"
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("TITLE:") else 0
    lines = lines[:at] + [fcm] + lines[at:]
    out: list[str] = []
    event: list[str] = []
    for line in lines + [""]:
        if re.match(r"^\d{3,}\s", line) and not (event and line.split()[0] ==
                                                 event[0].split()[0]):
            out.extend(_fix_dissolve(event))
            event = []
        (event if event or re.match(r"^\d{3,}\s", line) else out).append(line)
    out.extend(_fix_dissolve(event))
    return "\n".join(out).rstrip("\n") + "\n"


def _fix_dissolve(event: list[str]) -> list[str]:
    if not any(re.match(r"\*\s*TO CLIP:", ln) for ln in event):
        return event
    kept = [ln for ln in event if not re.match(r"\*\s*FROM CLIP:", ln)]
    return [re.sub(r"^\*\s*TO CLIP:", "* FROM CLIP:", ln) for ln in kept]
