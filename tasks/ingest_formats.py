"""Open a locked edit in any format OTIO's adapters read, and learn its rate, start and drop-frame.

Part of `tasks.ingest` (the public API lives there). Everything a person can get wrong about
an input file ends here as one `TimelineError` that names the file and says what to do.

The returned timeline is normalised so every writer downstream sees plain OTIO: the EDL
reader's record offset (a negative `track.source_range.start_time`) becomes
`global_start_time` plus a leading gap, and `metadata["foleyflow"]` records
`rate` `[num, den]`, `drop_frame` and `start_frame`.

Three adapters need help to read an edit right:

* CMX 3600 (`_prepare_edl`): the text is checked and normalised before the adapter sees it.
  Timecodes under `FCM: DROP FRAME` are drop-frame whatever their separator; locators in
  drop-frame are handed over at the frame they name (the adapter only reads "hh:mm:ss:ff");
  a fade up from black on a track's first event is read as a cut; a record range that wraps
  past midnight carries on into hour 24. An event whose record duration differs from its
  source duration without an M2 (speed) or freeze-frame line, events out of record order,
  timecodes that do not fit --fps and impossible drop-frame timecodes are refused, naming
  the event. An M2 whose speed is not the edit rate makes the clip retimed (a skipped shot)
  even when both sides last the same (a reverse clip), and the reel's drop-frame flag is the
  FCM in force at the first event (`_scan_edl`), the same reading the events get.
* FCPX XML: `tasks.ingest_fcpx`; FCP7 XML: `tasks.ingest_fcp7`.

An OTIO `global_start_time` counts in its own rate only when that is a picture rate (8–240
fps); a start in seconds (rate 1) or milliseconds is converted, exactly, to the edit's rate,
and a start between two frames is refused.
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
from otio_cmx3600_adapter.cmx_3600 import SPEED_EFFECT_RE as _EDL_M2_SPEED
from otio_cmx3600_adapter.cmx_3600 import channel_map as _EDL_CHANNELS

from tasks.stage import one_line

ADAPTERS = {
    ".otio": ("otio_json", "OTIO file"),
    ".otioz": ("otioz", "OTIO bundle"),
    ".otiod": ("otiod", "OTIO directory bundle"),
    ".edl": ("cmx_3600", "CMX 3600 EDL"),
    ".xml": ("fcp_xml", "Final Cut Pro 7 XML"),
    ".fcpxml": ("fcpx_xml", "Final Cut Pro X XML"),
    ".fcpxmld": ("fcpx_xml", "Final Cut Pro X XML bundle"),
    ".aaf": ("AAF", "AAF"),
}
SUPPORTED = ".otio, .otioz, .edl, FCP7 .xml, .fcpxml (.fcpxmld) or .aaf"
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
_EDL_M2_LINE = re.compile(r"\*?\s*M2:?\s*(.*)")  # the adapter's M2 comment
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
    """The reel and the clip's name, "A001 (shot_12)"; the reel alone when they are the same."""
    for i in group.comments:
        m = re.match(r"\*?\s*(?:TO|FROM) CLIP NAME:?\s*(.+)", lines[i])
        if m and m.group(1).strip() and m.group(1).strip() != event.reel:
            return f"{event.reel} ({m.group(1).strip()})"
    return event.reel


@dataclass
class _EdlScan:
    """The EDL's lines, each event read under the FCM line in force above it."""

    lines: list[str]  # the non-blank lines, stripped
    out: list[str | None]  # the lines as the adapter will see them (None: dropped)
    events: dict[int, _EdlEvent]
    drop_frame: bool  # the reel's drop flag: the frame code mode of the first event


def _scan_edl(path: Path, text: str, num: int, den: int) -> _EdlScan:
    """Read every event line in the frame code mode in force for it (its FCM, or ';').

    The one parse behind both the events (`_prepare_edl`) and the reel's drop flag
    (`_detect_drop`): the flag is the FCM in force at the first event (an FCM line after the
    header counts, with or without its colon), or without an FCM line above it, whether its
    record in is written with ';'. The FCM wins over a ';' for the flag: our own EDLs (OTIO's
    writer, then `timeline_prep.finish_edl`) have ';' at 29.97 in either mode, and the FCM
    says which."""
    nominal, can_drop = _nominal(num, den), (num, den) in _DF_RATES
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out: list[str | None] = list(lines)
    events: dict[int, _EdlEvent] = {}
    drop_mode, fcm_seen, first_drop = False, False, None
    for i, line in enumerate(lines):
        fcm = _EDL_FCM.match(line)
        if fcm:
            drop_mode = can_drop and not fcm.group(1).upper().startswith("NON")
            fcm_seen = True
        elif line[0].isdigit():
            event = _edl_event(path, i, line, drop_mode, nominal, can_drop)
            if event is not None:
                events[i] = event
                if first_drop is None:
                    rec_in = event.tcs[2]
                    first_drop = drop_mode if fcm_seen or rec_in.text.isdigit() else rec_in.drop
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
    return _EdlScan(lines, out, events, drop_mode if first_drop is None else first_drop)


def _m2_speed(path: Path, name: str, number: str, out: list[str | None],
              comments: list[int], reel: str, single: bool) -> str | None:
    """The speed (frames per second, as written) of the M2 line that retimes the event's clip
    on reel `reel` — the last naming that reel — or None without one; an M2 line with no
    readable speed is refused. Under a dissolve, Avid repeats the *outgoing* clip's M2: it
    does not retime the incoming one. An M2 naming another reel counts only for an event
    alone in its group (`single`), whose M2 can be no one else's."""
    speeds: list[tuple[str, str]] = []
    for i in comments:
        line = out[i] or ""
        m2 = _EDL_M2_LINE.match(line)
        if m2 is None:
            continue
        found = _EDL_M2_SPEED.match(m2.group(1).strip())
        speed = found.group("speed") if found else ""
        try:
            float(speed)
        except ValueError:
            raise TimelineError(
                f"{path}: event {number} ({name}): M2 line {line!r} is not 'M2 <reel> "
                f"<speed> <timecode>' (speed in frames per second, like 012.0 or -024.0) — "
                f"fix the line or re-export the EDL") from None
        speeds.append(((found.group("name") if found else "").strip().upper(), speed))
    mine = [speed for named, speed in speeds if named == reel.strip().upper()]
    if mine:
        return mine[-1]
    return speeds[-1][1] if speeds and single else None


def _is_edit_rate(speed: str, num: int, den: int) -> bool:
    """Whether an M2 speed is the edit's rate (100 %) as the EDL writes it: rounded or cut to
    the speed's decimals (029.9 and 030.0 are both 29.97 fps)."""
    rate, places = num / den, len(speed.partition(".")[2])
    scale = 10 ** places
    return any(abs(float(speed) - r) < 1e-9
               for r in (rate, round(rate, places), math.floor(rate * scale) / scale))


def _prepare_edl(path: Path, text: str, num: int, den: int) -> str:
    """The EDL as the CMX adapter reads it right (see the module docstring); refusals name
    the event.

    The adapter applies an M2 only when the source and record durations differ, so a reverse
    clip (M2 -024.0) whose durations match would play forwards at 100 %. Such an event's
    source out is handed over one frame later: the adapter then applies the M2 as
    LinearTimeWarp(speed / rate), and keeps the source range the EDL gives (it takes the
    record duration from the source in)."""
    nominal = _nominal(num, den)
    scan = _scan_edl(path, text, num, den)
    lines, out = scan.lines, scan.out
    track_end: dict[str, int] = {}
    shift, last_in = 0, None
    for group in _edl_groups(lines, scan.events):
        used = group.transition or group.event
        if used is None or (group.transition is not None and group.event is None):
            continue  # a line the adapter will refuse, with its own message
        src_in, src_out, rec_in, rec_out = (tc.frames for tc in used.tcs)
        s_in, s_out, r_in, r_out = (tc.text for tc in used.tcs)
        name = _clip_name(lines, group, used)
        day = _label_frames(24, 0, 0, 0, nominal, used.tcs[2].drop)
        rec_in += shift
        if last_in is not None and rec_in < last_in - day // 2:  # past midnight
            shift += day
            rec_in += day
        rec_out += shift
        if rec_out < rec_in - day // 2:
            rec_out += day
        if rec_out < rec_in:
            raise TimelineError(
                f"{path}: event {used.number} ({name}) ends before it starts on the record "
                f"side ({r_in}–{r_out}) — the record out comes after the record in, even for "
                f"a reverse clip: fix the event's timecodes or re-export the EDL")
        if (rec_in, rec_out) != (used.tcs[2].frames, used.tcs[3].frames):
            for k, frames in ((-2, rec_in), (-1, rec_out)):
                used.fields[k] = _frames_label(frames, nominal, used.tcs[k].drop)
            out[used.line] = " ".join(used.fields)
        last_in = rec_in
        comments = [lines[i] for i in group.comments]
        speed = _m2_speed(path, name, used.number, out, group.comments, used.reel,
                          group.transition is None)
        timed = speed is not None or any("FREEZE FRAME" in c for c in comments)
        if rec_out - rec_in != src_out - src_in and not timed:
            raise TimelineError(
                f"{path}: event {used.number} ({name}) lasts "
                f"{rec_out - rec_in} frames on the record side ({r_in}–{r_out}) but "
                f"{src_out - src_in} frames on the source side ({s_in}–{s_out}), with no M2 "
                f"(speed) line — fix the event's timecodes (or re-export the EDL); foleyflow "
                f"does not guess which side is right")
        if (speed is not None and rec_out - rec_in == src_out - src_in
                and not _is_edit_rate(speed, num, den)):
            src = used.tcs[1]
            used.fields[-3] = (str(src_out + 1) if src.text.isdigit()
                               else _frames_label(src_out + 1, nominal, src.drop))
            out[used.line] = " ".join(used.fields)
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
                    f"{path}: event {used.number} ({name}) starts "
                    f"at {used.fields[-2]} on track {t}, before the event placed there "
                    f"before it ends ({_frames_label(track_end[t], nominal, used.tcs[2].drop)})"
                    f" — export the EDL in record order (A-mode) without overlapping events")
            track_end[t] = rec_out
    return "\n".join(line for line in out if line is not None) + "\n"


# --- FCPX XML ---------------------------------------------------------------------------------

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
        if suffix == ".fcpxmld":  # Final Cut Pro 10.6+: a folder holding Info.fcpxml
            info = path / "Info.fcpxml"
            if not info.is_file():
                raise TimelineError(f"{path}: an .fcpxmld bundle without its Info.fcpxml — "
                                    f"export the project from Final Cut Pro again")
            text = info.read_text("utf-8", "replace")
            if "<fcpxml" not in text[:4096]:
                raise TimelineError(f"{info}: not FCPX XML (no <fcpxml> element) — export "
                                    f"the project from Final Cut Pro again")
            from tasks.ingest_fcpx import read_fcpx  # it imports this module: load it late
            return _quiet_call(read_fcpx, path, text), None, text
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
                from tasks.ingest_fcpx import read_fcpx  # it imports this module: load it late
                return _quiet_call(read_fcpx, path, text), None, text
            from tasks.ingest_fcp7 import read_fcp7  # it imports this module: load it late
            return _quiet_call(read_fcp7, path), None, text
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


_PICTURE_FPS = (8.0, 240.0)  # a global_start_time at a rate outside these counts a clock


def _detect_rate(tl: otio.schema.Timeline, suffix: str, fps: float | None,
                 ours: dict[str, Any]) -> tuple[int, int]:
    """The reel's rate: ours, else global_start_time's when it is a picture rate, else --fps,
    else the clips' commonest rate.

    A start in seconds (`opentime.from_seconds`, rate 1) or on another clock (1000, 48000) says
    nothing about the picture; `_normalise_start` rescales it to the rate chosen here. A picture
    rate no clip runs at is kept: a 24 fps edit may hold nothing but 29.97 media."""
    if suffix == ".edl":
        return rational_rate(fps or 0)
    rate = ours.get("rate")
    if isinstance(rate, (list, tuple)) and len(rate) == 2 and rate[0] and rate[1]:
        return int(rate[0]), int(rate[1])
    start = tl.global_start_time
    if start is not None and _PICTURE_FPS[0] <= start.rate <= _PICTURE_FPS[1]:
        return rational_rate(start.rate)
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
    if suffix == ".edl":  # the parse that read the events decides
        return _scan_edl(path, text, *rate).drop_frame
    if suffix in (".fcpxml", ".fcpxmld"):
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
    """Fold EDL-style record offsets into global_start_time + leading gaps; return start frame.

    A global_start_time at another rate than the reel's (seconds, say) is rescaled exactly; one
    that falls between the reel's frames is refused, not rounded: a rounded start would move
    every record timecode and BWF time stamp off the editor's."""
    fps = num / den
    offsets: dict[int, float] = {}
    for i, track in enumerate(tl.tracks):
        sr = getattr(track, "source_range", None)
        if sr is not None and sr.start_time.value < 0:
            offsets[i] = -_frames(sr.start_time, fps)
    gst = tl.global_start_time
    if gst is not None:
        exact = _frames(gst, fps)
        if abs(gst.rate - fps) >= 1e-3 * fps and abs(exact - round(exact)) > 1e-3:
            raise TimelineError(
                f"the edit's global_start_time ({gst.value:.10g} at rate {gst.rate:g}, "
                f"{gst.to_seconds():.10g} s) falls between frames at the reel's {fps:.6g} fps "
                f"({exact:.3f} frames) — write the start as a whole number of frames at "
                f"{fps:.6g} fps (01:00:00:00 is RationalTime({_nominal(num, den) * 3600}, "
                f"{fps:.6g}))")
        start = math.floor(exact + 0.5)
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
    bundle_dir = suffix in (".otiod", ".fcpxmld")
    if path.is_dir() != bundle_dir:
        raise TimelineError(f"{path}: expected a {'folder' if bundle_dir else 'file'}")
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
