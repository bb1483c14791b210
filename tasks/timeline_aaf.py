"""Make a timeline the OTIO AAF writer accepts, and a file Pro Tools and Media Composer open.

- Every clip gets a MobID in `metadata["AAF"]["MobID"]` (the adapter's own key, tried before
  any file lookup) derived from the media it references (for our stems, with their digest):
  the same media always gets the same real, non-empty SMPTE UMID, across clips and across
  runs, and a stem's new sound a new one.
- Every clip and media range is stated at the edit rate (the writer refuses mixed rates);
  a media range that does not hold its clip's range is widened to.
- Our audio stems are described as 48 kHz / 24-bit PCM with their channel count.
- Transitions without AAF metadata become plain video / mono-audio dissolves.
- The adapter always writes non-drop start timecode; `finish` sets the drop flag afterwards.
- `reproducible(when, key)` makes the file a function of its content: pyaaf2 stamps the clock
  into the header and every mob, draws mob IDs and the generation id from uuid4 and shuffles
  the compound file's directory tree; inside the block those come from `when` and a generator
  seeded by `key`, so the same edit renders a byte-identical AAF.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import aaf2
import aaf2.cfb
import aaf2.file
import aaf2.mobid
import aaf2.mobs
import opentimelineio as otio

from tasks.timeline_prep import at_rate

_NAMESPACE = uuid.UUID("5b0f4a52-57c1-4c6a-9b1e-f0e1e7f1a7d1")  # foleyflow MobIDs
_VIDEO_DISSOLVE = "0c3bea40-fc05-11d2-8a29-0050040ef7d2"  # OperationDef_VideoDissolve
_AUDIO_DISSOLVE = "0c3bea44-fc05-11d2-8a29-0050040ef7d2"  # OperationDef_MonoAudioDissolve
RT = otio.opentime.RationalTime


_REPRODUCIBLE = threading.Lock()  # the patches below are process-wide: one writer at a time


class _Uuid:
    """`uuid` as aaf2.mobid sees it inside `reproducible`: uuid4 drawn from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


@contextlib.contextmanager
def reproducible(when: dt.datetime, key: str) -> Iterator[None]:
    """AAF files written in this block carry `when` as every timestamp and ids drawn from a
    generator seeded by `key` (e.g. a hash of the edit): same edit and key, same bytes."""
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    stamp = when.replace(tzinfo=None, microsecond=0)  # AAF timestamps are naive, whole seconds

    class _Clock(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> dt.datetime:  # type: ignore[override]
            return stamp

    class _DatetimeModule:
        datetime = _Clock

        def __getattr__(self, name: str) -> Any:
            return getattr(dt, name)

    ids = _Uuid(rng)
    patches = ((aaf2.mobs, "datetime", _Clock), (aaf2.file, "datetime", _DatetimeModule()),
               (aaf2.file, "uuid4", ids.uuid4), (aaf2.mobid, "uuid", ids),
               (aaf2.cfb, "random", random.Random(rng.getrandbits(64))))
    with _REPRODUCIBLE:
        saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        try:
            for mod, name, value in patches:
                setattr(mod, name, value)
            yield
        finally:
            for mod, name, value in saved:
                setattr(mod, name, value)


def mob_id(key: str) -> str:
    """A SMPTE UMID (as its urn) derived from `key`: the same media always gets the same one."""
    m = aaf2.mobid.MobID.new()
    m.material = uuid.uuid5(_NAMESPACE, key)
    return str(m.urn)


def _media_key(clip: otio.schema.Clip, kind: str) -> str:
    """What a clip's MobID is derived from: its media's URL (else its names) and, for a stem
    whose digest the timeline carries, that digest — a re-conform after a retake writes new
    sound under the same file name, and an AAF naming it with the old MobID would have Media
    Composer or Pro Tools link the clip to the old sound they already hold."""
    ref = clip.media_reference
    url = getattr(ref, "target_url", None)
    key = f"{kind}|{url}" if url else f"{kind}|name|{clip.name}|{ref.name}"
    ours = ref.metadata.get("foleyflow")
    digest = ours.get("sha256") if hasattr(ours, "get") else None
    return f"{key}|{digest}" if digest else key


def _prepare_clip(clip: otio.schema.Clip, rate: float, kind: str) -> None:
    ref = clip.media_reference
    if isinstance(ref, otio.schema.GeneratorReference):
        return
    if not isinstance(ref, otio.schema.ExternalReference):
        ref = otio.schema.MissingReference(name=clip.name, metadata=ref.metadata)
        clip.media_reference = ref
    ref_md = dict(ref.metadata.get("AAF", {}) or {})
    desc = ref_md.get("EssenceDescription")
    if kind == "picture" and hasattr(desc, "get") and \
            desc.get("ClassName") not in ("CDCIDescriptor", "RGBADescriptor"):
        del ref_md["EssenceDescription"]  # e.g. a MultipleDescriptor the writer cannot fill
        ref.metadata["AAF"] = ref_md
    source = at_rate(clip.trimmed_range(), rate)
    avail = at_rate(ref.available_range, rate) if ref.available_range is not None else source
    lo = min(source.start_time, avail.start_time)
    hi = max(source.end_time_exclusive(), avail.end_time_exclusive())
    ref.available_range = otio.opentime.range_from_start_end_time(lo, hi)
    clip.source_range = source
    aaf_md = dict(clip.metadata.get("AAF", {}) or {})
    if not (aaf_md.get("MobID") or aaf_md.get("SourceID")):
        aaf_md["MobID"] = mob_id(_media_key(clip, kind))
        clip.metadata["AAF"] = aaf_md
    ours = clip.metadata.get("foleyflow")
    if kind == "sound" and hasattr(ours, "get") and ours.get("channels"):
        channels = int(ours["channels"])
        ref_md = dict(ref.metadata.get("AAF", {}) or {})
        ref_md.setdefault("EssenceDescription", {
            "Channels": channels, "QuantizationBits": 24, "AudioSamplingRate": 48000,
            "SampleRate": 48000, "BlockAlign": 3 * channels, "AverageBPS": 48000 * 3 * channels,
        })
        ref.metadata["AAF"] = ref_md


def _prepare_transition(tr: otio.schema.Transition, kind: str) -> None:
    md = tr.metadata.get("AAF")
    if hasattr(md, "get") and md.get("PointList") and md.get("OperationGroup"):
        return
    tr.transition_type = otio.schema.TransitionTypes.SMPTE_Dissolve
    tr.metadata["AAF"] = {
        "PointList": [{"Value": "0", "Time": "0"}, {"Value": "1", "Time": "1"}],
        "CutPoint": int(tr.in_offset.value),
        "OperationGroup": {"Operation": {
            "Identification": _VIDEO_DISSOLVE if kind == "picture" else _AUDIO_DISSOLVE,
            "Name": "Video Dissolve" if kind == "picture" else "Mono Audio Dissolve",
            "Description": "", "IsTimeWarp": False, "Bypass": 1, "NumberInputs": 2,
            "OperationCategory": "OperationCategory_Effect",
            "DataDefinition": {"Name": "Picture" if kind == "picture" else "Sound"},
        }},
    }


def prepare(tl: otio.schema.Timeline, rate: float) -> None:
    """Fit `tl` (from `timeline_prep.prepare`, snapped to `rate`) for the AAF writer, in place."""
    for track in tl.tracks:
        kind = "picture" if track.kind == otio.schema.TrackKind.Video else "sound"
        for item in track.find_children():
            if isinstance(item, otio.schema.Clip):
                _prepare_clip(item, rate, kind)
            elif isinstance(item, otio.schema.Transition):
                _prepare_transition(item, kind)
    if tl.global_start_time is not None:
        tl.global_start_time = RT(round(tl.global_start_time.value_rescaled_to(rate)), rate)


def finish(path: str, drop_frame: bool) -> None:
    """Mark the composition's start timecode drop-frame when the edit is (pyaaf2, in place)."""
    if not drop_frame:
        return
    with aaf2.open(path, "rw") as f:
        for mob in f.content.toplevel():
            for slot in mob.slots:
                if isinstance(slot.segment, aaf2.components.Timecode):
                    slot.segment.drop = True
