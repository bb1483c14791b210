"""Read Final Cut Pro 7 XML (xmeml) as Final Cut plays it.

Part of `tasks.ingest` (called from `tasks.ingest_formats`). OTIO's fcp_xml adapter reads the
file; `_Fcp7Reader` corrects it where picture or timing would be lost without a word:

* Nested sequences: the adapter builds a nest's Stack from `<sequence>` instead of its
  `<media>`, so the Stack has no tracks and the nest's picture vanishes. Here it holds the
  nest's tracks; the clipitem's `<in>` counts from the nest's first frame, whatever its
  timecode. A nest that still shows no video track is refused by name.
* `<enabled>FALSE</enabled>` on a clipitem or a track (which the adapter keeps only in
  `metadata["fcp_xml"]`) becomes `.enabled = False`: the clip shows nothing, lower tracks
  show through.
* A Time Remap filter becomes a `LinearTimeWarp` (`speed` in percent; `reverse`, or a
  negative speed, runs backwards), so the shot is skipped as retimed. A variable-speed remap
  (a ramp) is skipped at its average `speed`; one averaging 100 % is refused.
* A video clip whose source length (`<out>` − `<in>`) differs from its record length
  (`<end>` − `<start>`) with no Time Remap, or whose `<out>` lies before its `<in>` without
  a reverse one, is refused naming the clip and the fields, as an EDL event whose two sides
  differ without an M2 line is: the adapter never reads `<out>`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import opentimelineio as otio

from tasks.ingest import timecode
from tasks.ingest_formats import TimelineError, rational_rate

_fcp = otio.adapters.from_name("fcp_xml").module()

_FIX_IN_OUT = "fix its in and out points in the editing system and re-export the XML"


def _text(element: Any, path: str) -> str:
    found = element.find(path) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _disabled(element: Any) -> bool:
    return _text(element, "./enabled").upper() == "FALSE"


def _what(element: Any, item: Any) -> str:
    """"clip 'A001'" or "nested sequence 'Nest 1'", as the editor named it."""
    name = _fcp._name_from_element(element) or item.name
    return f"{'nested sequence' if isinstance(item, otio.schema.Stack) else 'clip'} '{name}'"


def _track_labels(root: Any) -> dict[Any, str]:
    """"V1", "V2", "A1" … for every track element, counted inside its own `<media>`."""
    labels: dict[Any, str] = {}
    for media in root.iter("media"):
        for kind, letter in (("video", "V"), ("audio", "A")):
            for i, track in enumerate(media.findall(f"./{kind}/track"), 1):
                labels[track] = f"{letter}{i}"
    return labels


class _Fcp7Reader(_fcp.FCP7XMLParser):
    """The adapter's parser, reading nests, `<enabled>`, Time Remap and `<out>` (see the
    module docstring)."""

    def __init__(self, root: Any, path: Path) -> None:
        super().__init__(root)
        self.path = path
        self.labels = _track_labels(root)
        self.tracks: list[tuple[str, Any]] = []  # (label, kind) of the tracks being read
        self.nests: list[str] = []  # names of the nested sequences being read
        self.transitions: tuple[Any, Any] = (None, None)  # around the item being read
        self.clock: tuple[otio.opentime.RationalTime, int, int, bool] | None = None

    # --- where an item is, for messages ----------------------------------------------------

    def _where(self, item_range: otio.opentime.TimeRange) -> str:
        label = self.tracks[-1][0] if self.tracks else "a track"
        if self.nests:
            return f"{label} of nested sequence '{self.nests[-1]}'"
        if self.clock is None:
            return label
        start, num, den, drop = self.clock
        frames = math.floor((start.to_seconds() + item_range.start_time.to_seconds())
                            * num / den + 0.5)
        return f"{label}, record {timecode(frames, num, den, drop)}"

    def _fail(self, what: str, item_range: otio.opentime.TimeRange, problem: str) -> None:
        raise TimelineError(f"{self.path}: {what} ({self._where(item_range)}) {problem}")

    # --- the adapter's parsing steps, corrected ----------------------------------------------

    def timeline_for_sequence(self, sequence_element: Any, context: Any) -> Any:
        self.clock = None
        tc = self._derefed_element(sequence_element.find("./timecode"))
        try:
            start = _fcp._time_from_timecode_element(
                tc, context.context_pushing_element(sequence_element))
            num, den = rational_rate(start.rate)
            self.clock = (start, num, den, _text(tc, "./displayformat").upper() == "DF")
        except Exception:  # no usable timecode: messages give the track only
            pass
        return super().timeline_for_sequence(sequence_element, context)

    def track_for_element(self, track_element: Any, track_kind: Any, context: Any) -> Any:
        self.tracks.append((self.labels.get(track_element, "a track"), track_kind))
        try:
            track = super().track_for_element(track_element, track_kind, context)
        finally:
            self.tracks.pop()
        if _disabled(track_element):
            track.enabled = False
        return track

    def item_and_timing_for_element(self, item_element: Any, head_transition: Any,
                                    tail_transition: Any, context: Any) -> Any:
        self.transitions = (head_transition, tail_transition)
        item, item_range = super().item_and_timing_for_element(
            item_element, head_transition, tail_transition, context)
        if item_element.tag in ("clipitem", "generatoritem") and _disabled(item_element):
            item.enabled = False
        return item, item_range

    def clip_for_element(self, clipitem_element: Any, item_range: Any, start_offset: Any,
                         context: Any) -> Any:
        transitions = self.transitions
        item = super().clip_for_element(clipitem_element, item_range, start_offset, context)
        sequence = self._derefed_element(clipitem_element.find("./sequence"))
        if sequence is not None:
            self._fill_nest(item, clipitem_element, sequence, item_range, context)
        scalar = self._retime(item, clipitem_element, item_range)
        on_video = bool(self.tracks) and self.tracks[-1][1] == otio.schema.TrackKind.Video
        if on_video and clipitem_element.tag == "clipitem":
            self._check_in_out(item, clipitem_element, item_range, transitions, scalar, context)
        return item

    # --- nested sequences ----------------------------------------------------------------

    def _fill_nest(self, stack: otio.schema.Stack, clipitem: Any, sequence: Any,
                   item_range: Any, context: Any) -> None:
        """Give the nest's Stack the tracks of `<sequence><media>` (the adapter looked for
        them in `<sequence>` itself)."""
        name = _fcp._name_from_element(sequence) or _fcp._name_from_element(clipitem)
        media = self._derefed_element(sequence.find("./media"))
        if media is not None:
            seq_context = context.context_pushing_element(clipitem) \
                .context_pushing_element(sequence)
            self.nests.append(name)
            try:
                nested = self.stack_for_element(media, seq_context)
            finally:
                self.nests.pop()
            tracks = list(nested)
            del nested[:]  # a track has one parent: free them for the nest's Stack
            stack.extend(tracks)
        on_video = bool(self.tracks) and self.tracks[-1][1] == otio.schema.TrackKind.Video
        has_video = any(isinstance(t, otio.schema.Track) and t.kind == otio.schema.TrackKind.Video
                        for t in stack)
        if on_video and not has_video and item_range.duration.value > 0:
            self._fail(f"nested sequence '{name}'", item_range,
                       "holds no video track foleyflow can read, so its picture would be lost "
                       f"— flatten nested sequence '{name}' in the editing system and "
                       f"re-export the XML")

    # --- Time Remap ------------------------------------------------------------------------

    def _retime(self, item: Any, element: Any, item_range: Any) -> float:
        """Turn each enabled Time Remap filter into a LinearTimeWarp; the product of their
        time scalars (1.0 without one)."""
        scalar = 1.0
        for i, filt in enumerate(self._derefed_iterfind(element, "./filter")):
            effect = filt.find("./effect")
            if effect is None or _disabled(filt):
                continue
            if _text(effect, "./effectid").lower() != "timeremap" \
                    and _text(effect, "./name").lower() != "time remap":
                continue
            params = {}
            for p in effect.iterfind("./parameter"):
                key = (_text(p, "./parameterid") or _text(p, "./name")).lower()
                params[key] = _text(p, "./value")
            what = _what(element, item)
            try:
                speed = float(params.get("speed") or 100)
            except ValueError:
                speed = math.nan
            if not math.isfinite(speed):
                self._fail(what, item_range,
                           f"has a Time Remap speed {params.get('speed')!r}, not a number — "
                           f"set the clip's speed in the editing system and re-export the XML")
            reverse = speed < 0 or params.get("reverse", "").upper() in ("1", "TRUE")
            warp = abs(speed) / 100 * (-1 if reverse else 1)
            variable = params.get("variablespeed", "0").upper() in ("1", "TRUE")
            if variable and abs(warp - 1) * item_range.duration.value < 0.5:
                # `speed` is then the ramp's average: at 100 % the shot would pass as unretimed
                self._fail(what, item_range,
                           "has a variable-speed Time Remap (a speed ramp averaging 100 %), "
                           "which foleyflow cannot follow — render the ramp into a new media "
                           "file and re-export the XML with it")
            scalar *= warp
            if i < len(item.effects):
                old = item.effects[i]
                item.effects[i] = otio.schema.LinearTimeWarp(
                    name=(old.name or "Time Remap") + (" (variable speed)" if variable else ""),
                    time_scalar=warp, metadata=dict(old.metadata.items()))
        return scalar

    # --- in and out ------------------------------------------------------------------------

    def _check_in_out(self, item: Any, element: Any, item_range: Any,
                      transitions: tuple[Any, Any], scalar: float, context: Any) -> None:
        """Refuse a clip whose `<out>` the adapter would ignore: before its `<in>` (with no
        reverse Time Remap), or a source length unlike its record length at 100 %."""
        out_text, in_text = _text(element, "./out"), _text(element, "./in")
        if not out_text or not in_text:
            return
        try:
            in_f, out_f = float(in_text), float(out_text)
        except ValueError:
            return  # the adapter has already refused a non-numeric <in>
        what = _what(element, item)
        if out_f < in_f and scalar >= 0:
            self._fail(what, item_range,
                       f"has <out> {out_text} before <in> {in_text} and no reverse Time "
                       f"Remap — {_FIX_IN_OUT}")
        if abs(scalar - 1.0) > 1e-9:
            return  # a retimed clip: reported as such, its lengths are the remap's business
        clip_rate = _fcp._rate_from_context(context.context_pushing_element(element))
        rec_rate = item_range.duration.rate
        source_s = (out_f - in_f) / clip_rate
        candidates = [item_range.duration.to_seconds()]
        head, tail = transitions
        start, end = _text(element, "./start"), _text(element, "./end")
        if (start == "-1" and head is not None) or (end == "-1" and tail is not None):
            # at a transition, editing systems count <in>–<out> either from cut to cut or
            # over the whole transition: accept both
            lo = float(_text(head, "./start")) if start == "-1" and head is not None \
                else float(start)
            hi = float(_text(tail, "./end")) if end == "-1" and tail is not None \
                else float(end)
            candidates.append((hi - lo) / rec_rate)
        tolerance = 0.5 / min(clip_rate, rec_rate)
        if any(abs(source_s - c) < tolerance for c in candidates):
            return
        rec_frames = item_range.duration.value
        self._fail(what, item_range,
                   f"lasts {rec_frames:g} frames on the record side (<start> {start}, <end> "
                   f"{end}) but {out_f - in_f:g} frames on the source side (<in> {in_text}, "
                   f"<out> {out_text}), with no Time Remap (speed) filter — {_FIX_IN_OUT}; "
                   f"foleyflow does not guess which side is right")


def read_fcp7(path: Path) -> Any:
    """Read FCP7 XML at `path`: a Timeline (or a SerializableCollection of several)."""
    root = ElementTree.fromstring(path.read_bytes())
    sequences = _Fcp7Reader(root, path).top_level_sequences()
    if not sequences:
        raise ValueError("no top-level sequences found")
    if len(sequences) == 1:
        return sequences[0]
    return otio.schema.SerializableCollection(name="Sequences", children=sequences)
