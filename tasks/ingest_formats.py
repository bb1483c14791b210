"""Open a locked edit in any format OTIO's adapters read, and learn its rate, start and drop-frame.

Part of `tasks.ingest` (the public API lives there). Everything a person can get wrong about
an input file ends here as one `TimelineError` that names the file and says what to do.

The returned timeline is normalised so every writer downstream sees plain OTIO: the EDL
reader's record offset (a negative `track.source_range.start_time`) becomes
`global_start_time` plus a leading gap, and `metadata["foleyflow"]` records
`rate` `[num, den]`, `drop_frame` and `start_frame`.

Two adapters need help to read an edit right:

* CMX 3600 (`_prepare_edl`): the text is checked and normalised before the adapter sees it.
  Timecodes under `FCM: DROP FRAME` are drop-frame whatever their separator; locators in
  drop-frame are handed over at the frame they name (the adapter only reads "hh:mm:ss:ff");
  a fade up from black on a track's first event is read as a cut; a record range that wraps
  past midnight carries on into hour 24. An event whose record duration differs from its
  source duration without an M2 (speed) or freeze-frame line, events out of record order,
  timecodes that do not fit --fps and impossible drop-frame timecodes are refused, naming
  the event.
* FCPX XML (`_ExactFcpx`): the adapter truncates frame rates and frame counts to integers
  (23.976 fps read as 23) and ignores the sequence's `tcStart`; our reader does its time
  arithmetic in exact fractions of the format's `frameDuration`, starts the reel at `tcStart`
  and takes drop-frame from `tcFormat`.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio
from otio_cmx3600_adapter.cmx_3600 import channel_map as _EDL_CHANNELS
from otio_fcpx_xml_adapter import fcpx_xml as _fcpx

from tasks.stage import one_line

ADAPTERS = {
    ".otio": ("otio_json", "OTIO file"),
    ".otioz": ("otioz", "OTIO bundle"),
    ".otiod": ("otiod", "OTIO directory bundle"),
    ".edl": ("cmx_3600", "CMX 3600 EDL"),
    ".xml": ("fcp_xml", "Final Cut Pro 7 XML"),
    ".fcpxml": ("fcpx_xml", "Final Cut Pro X XML"),
    ".aaf": ("AAF", "AAF"),
}
SUPPORTED = ".otio, .otioz, .edl, FCP7 .xml, .fcpxml or .aaf"
_NTSC_BASES = (24, 30, 48, 60, 120, 240)
_DF_RATES = ((30000, 1001), (60000, 1001))


class TimelineError(ValueError):
    """Bad input timeline; message names the file and what to do."""


@dataclass(frozen=True)
class LoadedEdit:
    """A normalised timeline and the facts about its clock."""

    timeline: otio.schema.Timeline
    rate_num: int
    rate_den: int
    drop_frame: bool
    start_frame: int
    bundle_dir: Path | None  # where an .otioz's media was unpacked (relative media lives here)


def rational_rate(rate: float) -> tuple[int, int]:
    """Frame rate as an exact fraction: 23.976 → 24000/1001, 29.97 → 30000/1001, 21.5 → 43/2."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"not a frame rate: {rate!r}")
    for base in _NTSC_BASES:
        if abs(rate - base * 1000 / 1001) < 0.005:
            return base * 1000, 1001
    if abs(rate - round(rate)) < 1e-6:
        return round(rate), 1
    f = Fraction(rate).limit_denominator(1001)
    return f.numerator, f.denominator


def _quiet_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an adapter with its stray print()s swallowed (the CLI's stdout is for people)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # unreachable: latin-1 decodes every byte string


def _unpack_otioz(path: Path) -> Path | None:
    """Unpack an .otioz's media next to it (`<name>.otioz.media/`), once; None if it has none."""
    with zipfile.ZipFile(path) as z:
        members = [m for m in z.infolist() if m.filename.startswith("media/") and not m.is_dir()]
        if not members:
            return None
        dest = path.with_name(path.name + ".media")
        for m in members:
            target = (dest / m.filename).resolve()
            if dest.resolve() not in target.parents:
                continue  # a path escaping the bundle folder: ignore it
            if target.exists() and target.stat().st_size == m.file_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return dest


# --- CMX 3600 ---------------------------------------------------------------------------------

_EDL_TC = re.compile(r"^(\d{1,3}):(\d\d):(\d\d)([:;.,])(\d\d)$")
_EDL_LOC = re.compile(r"^(\*?\s*LOC:?\s*)(\d\d:\d\d:\d\d[:;.,]\d\d)(?=\s|$)(.*)$")
_EDL_M2 = re.compile(r"^(\*?\s*M2\b.*?)(\d\d)[:;.,](\d\d)[:;.,](\d\d)[:;.,](\d\d)(\s*)$")
_EDL_FCM = re.compile(r"^FCM:?\s*(NON[- ]?DROP|DROP)", re.I)
_BLACK_REELS = ("BL", "BLACK")


def _nominal(num: int, den: int) -> int:
    """Frame numbers per timecode second: 24 at 23.976, 30 at 29.97."""
    return max(1, math.ceil(num / den - 1e-9))


def _label_frames(h: int, m: int, s: int, f: int, nominal: int, drop: bool) -> int:
    """Frames since 00:00:00:00 of the timecode label h:m:s:f (drop-frame skips labels)."""
    frames = ((h * 60 + m) * 60 + s) * nominal + f
    if drop:
        minutes = h * 60 + m
        frames -= nominal // 15 * (minutes - minutes // 10)
    return frames


def _frames_label(frames: int, nominal: int, drop: bool) -> str:
    """The timecode label of a frame count (inverse of `_label_frames`)."""
    sep = ":"
    if drop:
        skip = nominal // 15
        per_10min = nominal * 600 - skip * 9
        per_min = nominal * 60 - skip
        tens, rest = divmod(frames, per_10min)
        frames += skip * 9 * tens + (skip * ((rest - skip) // per_min) if rest > skip else 0)
        sep = ";"
    return (f"{frames // (nominal * 3600):02d}:{frames // (nominal * 60) % 60:02d}:"
            f"{frames // nominal % 60:02d}{sep}{frames % nominal:02d}")


@dataclass
class _EdlTc:
    """One timecode field of an EDL event, normalised."""

    text: str  # as the adapter will see it
    frames: int
    drop: bool


@dataclass
class _EdlEvent:
    """One event line (an edit, or the "to" side of a transition) of an EDL."""

    line: int  # index into the EDL's non-blank lines
    number: str
    reel: str
    channel: str
    fields: list[str]  # the whitespace-separated fields, timecodes normalised
    tcs: list[_EdlTc]  # source in, source out, record in, record out


@dataclass
class _EdlGroup:
    """What the adapter reads as one clip: an event, its transition line, its comments."""

    event: _EdlEvent | None
    transition: _EdlEvent | None
    comments: list[int]  # line indices


def _edl_timecodes(text: str) -> list[tuple[str, str]]:
    """(event number, timecode field) for every timecode in the EDL's event lines."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0][:1].isdigit() and len(fields) in (8, 9):
            found += [(fields[0], tc) for tc in fields[-4:] if _EDL_TC.match(tc)]
    return found


def _check_edl_rate(path: Path, text: str, fps: float, num: int, den: int) -> None:
    """Refuse an --fps the EDL's timecodes cannot have, saying which --fps to pass."""
    tcs = _edl_timecodes(text)
    fcm_drop = any(m and not m.group(1).upper().startswith("NON") for m in
                   (_EDL_FCM.match(line.strip()) for line in text.splitlines()))
    semi = next((tc for _, tc in tcs if ";" in tc), None)
    top = max(tcs, key=lambda t: int(t[1][-2:]), default=None)
    top_ff = int(top[1][-2:]) if top else 0
    if (fcm_drop or semi) and (num, den) not in _DF_RATES:
        why = "it says FCM: DROP FRAME" if fcm_drop else f"its timecodes use ';' ({semi})"
        want = "59.94" if top_ff >= 30 else "29.97"
        raise TimelineError(f"{path}: the EDL is drop-frame ({why}) but --fps {fps:g} has no "
                            f"drop-frame timecode — pass --fps {want}")
    nominal = _nominal(num, den)
    if top is not None and top_ff >= nominal:
        if top_ff >= 60:
            want = "no rate counts that far, fix the event's timecode"
        elif fcm_drop or semi:
            want = "--fps 59.94"
        elif top_ff >= 30:
            want = "--fps 50, 59.94 or 60"
        elif top_ff >= 25:
            want = "--fps 29.97 or 30"
        else:
            want = "--fps 25, 29.97 or 30"
        raise TimelineError(f"{path}: event {top[0]}'s timecode {top[1]} counts frames up to "
                            f"{top_ff}, which --fps {fps:g} does not have — pass the EDL's "
                            f"real frame rate: {want}")


def _edl_tc(path: Path, number: str, field: str, drop_mode: bool, nominal: int,
            can_drop: bool) -> _EdlTc | None:
    """A timecode field, drop-frame if its separator or the FCM in force says so."""
    if field.isdigit():  # a frame count, which the adapter accepts too
        return _EdlTc(field, int(field), False)
    m = _EDL_TC.match(field)
    if not m:
        return None
    h, mi, s, sep, f = int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    drop = can_drop and (sep == ";" or drop_mode)
    if drop:
        if s == 0 and f < nominal // 15 and mi % 10:
            fix = ("if the EDL is 29.97 fps, pass --fps 29.97; else fix the event's timecodes"
                   if nominal == 60 and f >= 2 else "fix the event's timecodes")
            raise TimelineError(
                f"{path}: event {number}: {field} is not a drop-frame timecode at "
                f"{'59.94' if nominal == 60 else '29.97'} fps (drop-frame skips frames :00 to "
                f":{nominal // 15 - 1:02d} at each minute not a multiple of ten) — {fix} "
                f"or re-export the EDL")
        field = f"{m[1]}:{m[2]}:{m[3]};{m[5]}"
    return _EdlTc(field, _label_frames(h, mi, s, f, nominal, drop), drop)


def _edl_event(path: Path, index: int, line: str, drop_mode: bool, nominal: int,
               can_drop: bool) -> _EdlEvent | None:
    fields = line.split()
    if len(fields) not in (8, 9):
        return None  # the adapter says what is wrong with it
    tcs = [_edl_tc(path, fields[0], f, drop_mode, nominal, can_drop) for f in fields[-4:]]
    if any(tc is None for tc in tcs):
        return None
    fields[-4:] = [tc.text for tc in tcs]  # type: ignore[union-attr]
    return _EdlEvent(index, fields[0], fields[1], fields[2], fields, tcs)  # type: ignore[arg-type]


def _edl_groups(lines: list[str], events: dict[int, _EdlEvent]) -> list[_EdlGroup]:
    """The EDL's lines grouped as the CMX adapter groups them (`EDLParser.parse_edl`)."""
    groups: list[_EdlGroup] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("SPLIT"):
            pair = [events.get(j) for j in (i + 1, i + 2)]
            i += 3
            comments = []
            while i < len(lines) and not lines[i][0].isdigit():
                comments.append(i)
                i += 1
            groups += [_EdlGroup(ev, None, comments) for ev in pair]
        elif line[0].isdigit():
            number = int(re.match(r"\d+", line).group(0))  # type: ignore[union-attr]
            group = _EdlGroup(events.get(i), None, [])
            i += 1
            seen_transition = False
            while i < len(lines):
                m = re.match(r"\d+", lines[i])
                if not m:
                    group.comments.append(i)
                elif int(m.group(0)) == number and not seen_transition:
                    group.transition, seen_transition = events.get(i), True
                else:
                    break
                i += 1
            groups.append(group)
        else:
            i += 1
    return groups


def _clip_name(lines: list[str], group: _EdlGroup, event: _EdlEvent) -> str:
    for i in group.comments:
        m = re.match(r"\*?\s*(?:TO|FROM) CLIP NAME:?\s*(.+)", lines[i])
        if m and m.group(1).strip():
            return f"{event.reel} ({m.group(1).strip()})"
    return event.reel


def _prepare_edl(path: Path, text: str, num: int, den: int) -> str:
    """The EDL as the CMX adapter reads it right (see the module docstring); refusals name
    the event."""
    nominal, can_drop = _nominal(num, den), (num, den) in _DF_RATES
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out: list[str | None] = list(lines)
    events: dict[int, _EdlEvent] = {}
    drop_mode = False
    for i, line in enumerate(lines):
        fcm = _EDL_FCM.match(line)
        if fcm:
            drop_mode = can_drop and not fcm.group(1).upper().startswith("NON")
        elif line[0].isdigit():
            event = _edl_event(path, i, line, drop_mode, nominal, can_drop)
            if event is not None:
                events[i] = event
                if [tc.text for tc in event.tcs] != line.split()[-4:]:
                    out[i] = " ".join(event.fields)
        elif (loc := _EDL_LOC.match(line)) is not None:
            h, mi, s, sep, f = _EDL_TC.match(loc.group(2)).groups()  # type: ignore[union-attr]
            drop = can_drop and (sep == ";" or drop_mode)
            if drop or sep != ":":  # the adapter reads "hh:mm:ss:ff" locators only, non-drop
                frames = _label_frames(int(h), int(mi), int(s), int(f), nominal, drop)
                out[i] = loc.group(1) + _frames_label(frames, nominal, False) + loc.group(3)
        elif (m2 := _EDL_M2.match(line)) is not None:  # the adapter's M2 regex wants ':'
            out[i] = f"{m2[1]}{m2[2]}:{m2[3]}:{m2[4]}:{m2[5]}"

    track_end: dict[str, int] = {}
    shift, last_in = 0, None
    for group in _edl_groups(lines, events):
        used = group.transition or group.event
        if used is None or (group.transition is not None and group.event is None):
            continue  # a line the adapter will refuse, with its own message
        src_in, src_out, rec_in, rec_out = (tc.frames for tc in used.tcs)
        day = _label_frames(24, 0, 0, 0, nominal, used.tcs[2].drop)
        rec_in += shift
        if last_in is not None and rec_in < last_in - day // 2:  # past midnight
            shift += day
            rec_in += day
        rec_out += shift
        if rec_out < rec_in - day // 2:
            rec_out += day
        if (rec_in, rec_out) != (used.tcs[2].frames, used.tcs[3].frames):
            for k, frames in ((-2, rec_in), (-1, rec_out)):
                used.fields[k] = _frames_label(frames, nominal, used.tcs[k].drop)
            out[used.line] = " ".join(used.fields)
        last_in = rec_in
        comments = [lines[i] for i in group.comments]
        speed = any(re.match(r"\*?\s*M2", c) or "FREEZE FRAME" in c for c in comments)
        if rec_out - rec_in != src_out - src_in and not speed:
            s_in, s_out, r_in, r_out = (tc.text for tc in used.tcs)
            raise TimelineError(
                f"{path}: event {used.number} ({_clip_name(lines, group, used)}) lasts "
                f"{rec_out - rec_in} frames on the record side ({r_in}–{r_out}) but "
                f"{src_out - src_in} frames on the source side ({s_in}–{s_out}), with no M2 "
                f"(speed) line — fix the event's timecodes (or re-export the EDL); foleyflow "
                f"does not guess which side is right")
        tracks = _EDL_CHANNELS.get(used.channel, [used.channel])
        if (group.transition is not None and group.event is not None
                and group.event.reel.upper() in _BLACK_REELS
                and any(t not in track_end for t in tracks)):
            # a fade up from black opening the track: for Foley, a cut where the fade starts
            out[group.event.line] = None
            out[used.line] = " ".join(used.fields[:3] + ["C"] + used.fields[-4:])
        for t in tracks:
            if t in track_end and rec_in < track_end[t]:
                raise TimelineError(
                    f"{path}: event {used.number} ({_clip_name(lines, group, used)}) starts "
                    f"at {used.fields[-2]} on track {t}, before the event placed there "
                    f"before it ends ({_frames_label(track_end[t], nominal, used.tcs[2].drop)})"
                    f" — export the EDL in record order (A-mode) without overlapping events")
            track_end[t] = rec_out
    return "\n".join(line for line in out if line is not None) + "\n"


# --- FCPX XML ---------------------------------------------------------------------------------

def _fcpx_time(value: str | None) -> Fraction:
    """An FCPX time attribute ("3600s", "1001/24000s", "0s") as exact seconds."""
    if value is None:
        return Fraction(0)
    text = value.strip()
    if not text.endswith("s"):
        raise ValueError(f"{value!r} is not an FCPX time (like '3600s' or '1001/24000s')")
    return Fraction(text[:-1])


class _ExactFcpx(_fcpx.FcpxXml):
    """The OTIO FCPX XML reader with exact time arithmetic.

    The adapter computes rates as `int(rate)` and frame counts with `int()` (23.976 fps
    becomes 23, 29.97 becomes 29) and ignores the sequence's timecode start. Here every time
    is `seconds × rate` at the exact rate 1 / `frameDuration` of its format (a format without
    one — a still, an audio asset — takes the sequence's rate), record offsets are at the
    sequence's rate, and the timeline starts at `tcStart` with `tcFormat` saying drop-frame
    (in `metadata["foleyflow"]`)."""

    def __init__(self, xml_string: str, path: Path) -> None:
        super().__init__(xml_string)
        self.path = path
        self.rates: dict[str, Fraction] = {}
        self.sequence_rate: Fraction | None = None

    def rate_of(self, format_id: str | None) -> Fraction:
        if format_id in self.rates:
            return self.rates[format_id]
        fmt = self._format_by_id(format_id) if format_id else None
        duration = fmt.get("frameDuration") if fmt is not None else None
        if duration:
            try:
                seconds = _fcpx_time(duration)
            except (ValueError, ZeroDivisionError):
                seconds = Fraction(0)
            if seconds <= 0:
                raise TimelineError(f"{self.path}: format {format_id!r} has frameDuration "
                                    f"{duration!r}, not a frame duration — re-export the XML")
            self.rates[format_id] = 1 / seconds  # type: ignore[index]
            return self.rates[format_id]  # type: ignore[index]
        if self.sequence_rate is not None:
            return self.sequence_rate
        raise TimelineError(f"{self.path}: the sequence's format {format_id!r} states no "
                            f"frameDuration, so its frame rate is unknown — re-export the XML")

    def time(self, value: str | None, format_id: str | None) -> otio.opentime.RationalTime:
        rate = self.rate_of(format_id)
        return otio.opentime.RationalTime(float(_fcpx_time(value) * rate), float(rate))

    # the adapter's time helpers, exact
    def _format_frame_rate(self, format_id: str | None) -> float:
        return float(self.rate_of(format_id))

    def _number_of_frames(self, time_value: str | None, format_id: str | None) -> float:
        return float(_fcpx_time(time_value) * self.rate_of(format_id))

    def _time_range(self, element: Any, format_id: str | None) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(self.time(element.get("start", "0s"), format_id),
                                       self.time(element.get("duration"), format_id))

    def _reference_from_id(self, asset_id: str, default_format: str | None) -> Any:
        asset = self._asset_by_id(asset_id)
        if not asset.get("src", ""):
            return otio.schema.MissingReference()
        fmt = asset.get("format", default_format)
        asset_clip = self._assetclip_by_ref(asset_id)
        return otio.schema.ExternalReference(
            target_url=asset.get("src"),
            available_range=otio.opentime.TimeRange(self.time(asset.get("start"), fmt),
                                                    self.time(asset.get("duration"), fmt)),
            metadata={"fcpx": self._create_metadta(asset_clip) if asset_clip else {}})

    def _offset_and_lane(self, element: Any, default_format: str | None) -> tuple[Any, str]:
        """Where a clip sits in the sequence, at the sequence's rate (as the adapter places
        it: its offset, less its parent clip's start, plus the parent's offset).

        The sound of a clip that also has picture (`<clip><video/><audio/></clip>`) gets a
        lane of its own: in the picture's lane it would play after the picture, as a second
        copy of the clip, and push every later clip of the lane back."""
        clip = self._timing_clip(element)
        parent = self.child_parent_map.get(clip)
        if parent.tag == "spine" and parent.get("lane", None):
            lane = parent.get("lane")
            parent = self.child_parent_map.get(parent)
            parent_start = Fraction(0)
        else:
            lane = clip.get("lane", "0")
            parent_start = _fcpx_time(parent.get("start", None))
        seconds = _fcpx_time(clip.get("offset")) - parent_start + _fcpx_time(
            parent.get("offset", None))
        rate = self.rate_of(default_format)
        if element.tag == "audio" and element is not clip and clip.find(".//video") is not None:
            lane = f"{lane}/audio"
        return otio.opentime.RationalTime(float(seconds * rate), float(rate)), lane

    def _squence_to_stack(self, sequence_element: Any, name: str = "",
                          source_range: Any = None) -> otio.schema.Stack:
        """The adapter's, with the gaps before clips measured at one rate."""
        seq_format = sequence_element.get("format")
        items = []
        stack = otio.schema.Stack(name=name, source_range=source_range)
        for element in sequence_element.iter():
            if element.tag not in _fcpx.COMPOSABLE_ELEMENTS:
                continue
            offset, lane = self._offset_and_lane(element, seq_format)
            items.append({"track": lane, "offset": offset,
                          "composable": self._build_composable(element, seq_format),
                          "audio_only": self._audio_only(element)})
        rate = float(self.rate_of(seq_format))
        for lane in sorted({item["track"] for item in items}):
            lane_items = self._sorted_items(lane, items)
            track = otio.schema.Track(name=lane, kind=self._track_type(lane_items))
            for item in lane_items:
                lead = (item["offset"] - track.duration()).value_rescaled_to(rate)
                if lead > 1e-6:
                    track.append(self._create_gap(0, lead, seq_format))
                track.append(item["composable"])
            stack.append(track)
        return stack

    def _from_project(self, project_element: Any) -> otio.schema.Timeline:
        sequence = project_element.find("./sequence")
        if sequence is None:
            raise TimelineError(f"{self.path}: project {project_element.get('name', '')!r} "
                                f"has no sequence — export the project's timeline")
        self.sequence_rate = None
        rate = self.sequence_rate = self.rate_of(sequence.get("format"))
        timeline = super()._from_project(project_element)
        try:
            start = _fcpx_time(sequence.get("tcStart", "0s"))
        except (ValueError, ZeroDivisionError) as exc:
            raise TimelineError(f"{self.path}: the sequence's tcStart "
                                f"{sequence.get('tcStart')!r} is not a time — re-export the "
                                f"XML") from exc
        timeline.global_start_time = otio.opentime.RationalTime(float(start * rate),
                                                                float(rate))
        drop = (sequence.get("tcFormat") or "").strip().upper() == "DF"
        timeline.metadata["foleyflow"] = {"rate": [rate.numerator, rate.denominator],
                                          "drop_frame": drop}
        return timeline


def _read_fcpx(path: Path, text: str) -> Any:
    """Read FCPX XML exactly; refuse it if any time came back at a rate its formats lack."""
    reader = _ExactFcpx(text, path)
    result = reader.to_otio()
    rates = [float(r) for r in reader.rates.values()]
    for tl in ([result] if isinstance(result, otio.schema.Timeline) else
               _timelines_in(result) if isinstance(result, otio.schema.SerializableCollection)
               else []):
        for item in tl.find_children(shallow_search=False):
            sr = getattr(item, "source_range", None)
            if sr is not None and not any(abs(sr.duration.rate - r) < 1e-9 * r for r in rates):
                raise TimelineError(
                    f"{path}: the FCPX reader gave '{item.name}' times at "
                    f"{sr.duration.rate:g} fps, a rate none of the file's formats has, so it "
                    f"cannot be read exactly — export the project as FCP7 XML or AAF instead")
    return result


def _read_any(path: Path, suffix: str, fps: float | None) -> tuple[Any, Path | None, str]:
    """Run the adapter for `suffix`; returns (what it read, otioz media dir, source text or '')."""
    adapter, label = ADAPTERS[suffix]
    text, bundle = "", None
    try:
        if suffix == ".edl":
            text = _read_text(path)
            num, den = rational_rate(fps or 0)
            _check_edl_rate(path, text, fps or 0, num, den)
            prepared = _prepare_edl(path, text, num, den)
            return _quiet_call(otio.adapters.read_from_string, prepared, adapter_name=adapter,
                               rate=num / den, ignore_timecode_mismatch=False), None, text
        if suffix in (".xml", ".fcpxml"):
            with open(path, "rb") as f:
                head = f.read(4096).decode("utf-8", "replace")
            if "<fcpxml" not in head and "<xmeml" not in head:
                raise TimelineError(
                    f"{path}: not a Final Cut Pro XML (no <xmeml> or <fcpxml> element) — "
                    f"export the sequence as FCP7 XML or FCPXML")
            if "<fcpxml" in head:
                label = ADAPTERS[".fcpxml"][1]
                text = path.read_text("utf-8", "replace")
                return _quiet_call(_read_fcpx, path, text), None, text
            adapter = "fcp_xml"
        if suffix == ".otioz":
            if not zipfile.is_zipfile(path):
                raise TimelineError(f"{path}: not an .otioz bundle (not a zip file) — re-export it")
            try:
                bundle = _unpack_otioz(path)
            except OSError as exc:
                raise TimelineError(
                    f"{path}: could not unpack the bundle's media next to it ({one_line(exc)}) — "
                    f"unzip it yourself and ingest the content.otio") from exc
        if suffix == ".otiod":
            bundle = path  # its media/ folder sits inside it
        result = _quiet_call(otio.adapters.read_from_file, str(path), adapter_name=adapter)
        return result, bundle, text
    except TimelineError:
        raise
    except ValueError as exc:
        if suffix == ".edl" and "beyond" in str(exc):
            raise TimelineError(
                f"{path}: the EDL's timecodes do not fit {fps:g} fps ({one_line(exc)}) — "
                f"pass the EDL's real frame rate with --fps") from exc
        if suffix == ".edl" and "does not support this rate" in str(exc):
            raise TimelineError(
                f"{path}: --fps {fps:g} has no SMPTE timecode, so no EDL runs at it — pass the "
                f"EDL's real frame rate (e.g. --fps 24, 25, 29.97 or 23.976)") from exc
        raise TimelineError(f"{path}: could not read this {label} ({one_line(exc)}) — "
                            f"check it opens in the editing system and re-export it") from exc
    except Exception as exc:  # adapters raise anything from KeyError to struct.error
        raise TimelineError(f"{path}: could not read this {label} ({type(exc).__name__}: "
                            f"{one_line(exc)}) — check it opens in the editing system and "
                            f"re-export it") from exc


def _one_timeline(path: Path, result: Any) -> otio.schema.Timeline:
    if isinstance(result, otio.schema.Timeline):
        return result
    if isinstance(result, otio.schema.SerializableCollection):
        found = list(_timelines_in(result))
        if len(found) == 1:
            return found[0]
        if not found:
            raise TimelineError(f"{path}: holds clips but no sequence — export the edited "
                                f"sequence (the reel), not the bin")
        names = ", ".join(repr(t.name) for t in found[:6]) + (" …" if len(found) > 6 else "")
        raise TimelineError(f"{path}: holds {len(found)} sequences ({names}) — export the one "
                            f"locked reel on its own")
    raise TimelineError(f"{path}: holds a {type(result).__name__}, not an edit — export the "
                        f"edited sequence")


def _timelines_in(collection: otio.schema.SerializableCollection) -> list[otio.schema.Timeline]:
    found = []
    for child in collection:
        if isinstance(child, otio.schema.Timeline):
            found.append(child)
        elif isinstance(child, otio.schema.SerializableCollection):
            found.extend(_timelines_in(child))
    return found


def _video_tracks(tl: otio.schema.Timeline) -> list[otio.schema.Track]:
    return [t for t in tl.tracks if isinstance(t, otio.schema.Track)
            and t.kind == otio.schema.TrackKind.Video]


def _detect_rate(tl: otio.schema.Timeline, suffix: str, fps: float | None,
                 ours: dict[str, Any]) -> tuple[int, int]:
    if suffix == ".edl":
        return rational_rate(fps or 0)
    rate = ours.get("rate")
    if isinstance(rate, (list, tuple)) and len(rate) == 2 and rate[0] and rate[1]:
        return int(rate[0]), int(rate[1])
    if tl.global_start_time is not None and tl.global_start_time.rate > 0:
        return rational_rate(tl.global_start_time.rate)
    if fps:
        return rational_rate(fps)
    rates: Counter[float] = Counter()
    for track in _video_tracks(tl):
        for item in track.find_children(shallow_search=False):
            if isinstance(item, (otio.schema.Clip, otio.schema.Gap)) and item.source_range:
                rates[round(item.source_range.duration.rate, 3)] += 1
    if not rates:
        raise TimelineError("the edit states no frame rate — pass it with --fps")
    return rational_rate(rates.most_common(1)[0][0])


def _find_key(md: Any, keys: set[str], depth: int = 0) -> Any:
    """First value under any of `keys` in nested metadata (shallow first, a few levels deep)."""
    if depth > 4 or not hasattr(md, "items"):
        return None
    items = list(md.items())
    for k, v in items:
        if str(k).lower() in keys and not hasattr(v, "items"):
            return v
    for _, v in items:
        if hasattr(v, "items"):
            found = _find_key(v, keys, depth + 1)
            if found is not None:
                return found
    return None


def _aaf_drop_frame(path: Path) -> bool | None:
    """The drop flag of the top-level composition's timecode in an AAF (pyaaf2, no essence)."""
    try:
        import aaf2

        with aaf2.open(str(path), "r") as f:
            for mob in f.content.toplevel():
                for slot in mob.slots:
                    seg = slot.segment
                    if isinstance(seg, aaf2.components.Timecode):
                        return bool(seg.drop)
    except Exception:  # an unreadable AAF has already been reported by the adapter
        return None
    return None


def _detect_drop(tl: otio.schema.Timeline, path: Path, suffix: str, text: str,
                 rate: tuple[int, int], ours: dict[str, Any]) -> bool:
    if rate not in _DF_RATES:
        return False
    if isinstance(ours.get("drop_frame"), bool):
        return ours["drop_frame"]
    if suffix == ".edl":
        fcm = re.search(r"^\s*FCM:\s*(NON[- ]DROP|DROP)", text, re.I | re.M)
        if fcm:
            return not fcm.group(1).upper().startswith("NON")
        return bool(re.search(r"\d\d[;.]\d\d\s", text))
    if suffix == ".fcpxml":
        return bool(re.search(r'tcFormat="DF"', text))
    if suffix == ".aaf":
        flag = _aaf_drop_frame(path)
        if flag is not None:
            return flag
    value = _find_key(tl.metadata, {"drop_frame", "dropframe", "displayformat", "tcformat"})
    if isinstance(value, str):
        return value.strip().upper() in ("DF", "DROP", "TRUE", "1", "YES")
    return bool(value)


def _frames(t: otio.opentime.RationalTime, fps: float) -> float:
    """A time as frames at `fps` (values already at ~`fps`, like 23.976 vs 24000/1001, kept)."""
    if abs(t.rate - fps) < 1e-3 * fps:
        return t.value
    return t.to_seconds() * fps


def _normalise_start(tl: otio.schema.Timeline, num: int, den: int) -> int:
    """Fold EDL-style record offsets into global_start_time + leading gaps; return start frame."""
    fps = num / den
    offsets: dict[int, float] = {}
    for i, track in enumerate(tl.tracks):
        sr = getattr(track, "source_range", None)
        if sr is not None and sr.start_time.value < 0:
            offsets[i] = -_frames(sr.start_time, fps)
    if tl.global_start_time is not None:
        start = math.floor(_frames(tl.global_start_time, fps) + 0.5)
    elif offsets:
        start = math.floor(min(offsets.values()) + 0.5) if len(offsets) == len(tl.tracks) else 0
    else:
        start = 0
    for i, abs_in in offsets.items():
        track = tl.tracks[i]
        lead = round(abs_in - start)
        track.source_range = None
        if lead > 0:
            track.insert(0, otio.schema.Gap(source_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(0, fps), otio.opentime.RationalTime(lead, fps))))
        elif lead < 0:
            avail = track.available_range()
            track.source_range = otio.opentime.TimeRange(
                otio.opentime.RationalTime(-lead, fps),
                avail.duration - otio.opentime.RationalTime(-lead, fps))
    tl.global_start_time = otio.opentime.RationalTime(start, fps)
    return start


def load_edit(path: Path, fps: float | None) -> LoadedEdit:
    """Read `path` by its extension; raise TimelineError for anything a person must fix."""
    if not path.exists():
        raise TimelineError(f"{path}: timeline file not found — check the path")
    suffix = path.suffix.lower()
    if suffix not in ADAPTERS:
        raise TimelineError(f"{path}: '{path.suffix or path.name}' is not a timeline format "
                            f"foleyflow reads — export the edit as {SUPPORTED}")
    if path.is_dir() != (suffix == ".otiod"):
        raise TimelineError(f"{path}: expected a {'folder' if suffix == '.otiod' else 'file'}")
    if suffix == ".edl" and not fps:
        raise TimelineError(f"{path}: an EDL carries no frame rate — pass it with --fps "
                            f"(e.g. --fps 24, --fps 23.976 or --fps 29.97)")
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise TimelineError(f"{path}: --fps must be a positive frame rate, not {fps!r}")
    result, bundle, text = _read_any(path, suffix, fps)
    tl = _one_timeline(path, result)
    if not any(t.enabled for t in _video_tracks(tl)):
        raise TimelineError(f"{path}: the edit has no {'enabled ' if _video_tracks(tl) else ''}"
                            f"video track — foleyflow follows picture: include the picture "
                            f"track(s) in the export")
    raw_ours = tl.metadata.get("foleyflow")
    ours: dict[str, Any] = dict(raw_ours.items()) if hasattr(raw_ours, "items") else {}
    try:
        num, den = _detect_rate(tl, suffix, fps, ours)
        drop = _detect_drop(tl, path, suffix, text, (num, den), ours)
        start = _normalise_start(tl, num, den)
    except TimelineError as exc:
        raise TimelineError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise TimelineError(f"{path}: could not work out the edit's frame rate and start "
                            f"({type(exc).__name__}: {one_line(exc)}) — re-export it") from exc
    meta = dict(ours)
    meta.update(rate=[num, den], drop_frame=drop, start_frame=start)
    tl.metadata["foleyflow"] = meta
    return LoadedEdit(tl, num, den, drop, start, bundle)
