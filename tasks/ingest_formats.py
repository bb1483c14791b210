"""Open a locked edit in any format OTIO's adapters read, and learn its rate, start and drop-frame.

Part of `tasks.ingest` (the public API lives there). Everything a person can get wrong about
an input file ends here as one `TimelineError` that names the file and says what to do.

The returned timeline is normalised so every writer downstream sees plain OTIO: the EDL
reader's record offset (a negative `track.source_range.start_time`) becomes
`global_start_time` plus a leading gap, and `metadata["foleyflow"]` records
`rate` `[num, den]`, `drop_frame` and `start_frame`.
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
_MAX_DETAIL = 300


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


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


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


def _read_any(path: Path, suffix: str, fps: float | None) -> tuple[Any, Path | None, str]:
    """Run the adapter for `suffix`; returns (what it read, otioz media dir, source text or '')."""
    adapter, label = ADAPTERS[suffix]
    text, bundle = "", None
    try:
        if suffix == ".edl":
            text = _read_text(path)
            num, den = rational_rate(fps or 0)
            return _quiet_call(otio.adapters.read_from_string, text, adapter_name=adapter,
                               rate=num / den, ignore_timecode_mismatch=True), None, text
        if suffix in (".xml", ".fcpxml"):
            with open(path, "rb") as f:
                head = f.read(4096).decode("utf-8", "replace")
            if "<fcpxml" not in head and "<xmeml" not in head:
                raise TimelineError(
                    f"{path}: not a Final Cut Pro XML (no <xmeml> or <fcpxml> element) — "
                    f"export the sequence as FCP7 XML or FCPXML")
            adapter = "fcpx_xml" if "<fcpxml" in head else "fcp_xml"
            text = path.read_text("utf-8", "replace") if adapter == "fcpx_xml" else ""
        if suffix == ".otioz":
            if not zipfile.is_zipfile(path):
                raise TimelineError(f"{path}: not an .otioz bundle (not a zip file) — re-export it")
            try:
                bundle = _unpack_otioz(path)
            except OSError as exc:
                raise TimelineError(
                    f"{path}: could not unpack the bundle's media next to it ({_detail(exc)}) — "
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
                f"{path}: the EDL's timecodes do not fit {fps:g} fps ({_detail(exc)}) — "
                f"pass the EDL's real frame rate with --fps") from exc
        raise TimelineError(f"{path}: could not read this {label} ({_detail(exc)}) — "
                            f"check it opens in the editing system and re-export it") from exc
    except Exception as exc:  # adapters raise anything from KeyError to struct.error
        raise TimelineError(f"{path}: could not read this {label} ({type(exc).__name__}: "
                            f"{_detail(exc)}) — check it opens in the editing system and "
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
                            f"({type(exc).__name__}: {_detail(exc)}) — re-export it") from exc
    meta = dict(ours)
    meta.update(rate=[num, den], drop_frame=drop, start_frame=start)
    tl.metadata["foleyflow"] = meta
    return LoadedEdit(tl, num, den, drop, start, bundle)
