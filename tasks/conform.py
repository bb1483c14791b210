"""Conform stage: the delivery folder a sound editor receives (DESIGN.md, "Delivery folder").

All delivered files are rendered in one cached stage (so each is an artifact with provenance back
to the stems, envelopes and the edit), then copied into the delivery folder, each file atomically.
Stems are stamped with their own record position as BWF TimeReference; the reel mixes start at
the timeline start.

Per shot: mono (placed: distance gain and air absorption, no direction), stereo, first-order
B-format (AmbiX, or FuMa if the reel asked), 5.1 (L R C LFE Ls Rs, WAVE_FORMAT_EXTENSIBLE with
channel mask 0x3F as Pro Tools and ffmpeg read 5.1) and binaural stems, and the position track
the spatial stage followed. Per reel: a mix of each but mono. The timelines carry one Foley
track per format — FOLEY (stereo, what the preview plays), FOLEY 5.1, FOLEY BINAURAL, FOLEY FOA —
each clip referencing the stem with its channel count.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import opentimelineio as otio
import soundfile as sf
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import api
from db.schema import Usage
from tasks import (bwf, ingest, ingest_flatten, ingest_formats, mixdown, plots, runtime,
                   timeline_aaf, timeline_io, timeline_prep)
from tasks.decisions import read_envelope
from tasks.spatial import STEMS, reel_settings, stems_of
from tasks.bwf import time_reference, write_bwf
from tasks.stage import StageOutput, run_stage, transaction
from tasks.store import ArtifactRef, sha256_file

SR = 48000
MASK_51 = 0x3F  # FL FR FC LFE BL BR: the 5.1 of WAVE_FORMAT_EXTENSIBLE (ffmpeg "5.1", Pro Tools)
FORMAT_LABEL = {"ambix": "AmbiX (ACN/SN3D)", "fuma": "FuMa (WXYZ, W -3 dB)"}
# Each file's channels as its iXML TRACK_LIST names them: (NAME, FUNCTION from iXML's
# dictionary; B-format has none there, so its channels are named only)
CHANNELS: dict[str, list[tuple[str, str | None]]] = {
    "mono": [("Foley", "MIX")],
    "stereo": [("L", "L-MIX"), ("R", "R-MIX")],
    "binaural": [("L ear", "LEFT"), ("R ear", "RIGHT")],
    "51": [(c, f"{c}-5.1") for c in ("L", "R", "C", "LFE", "Ls", "Rs")],
    "ambix": [(c, None) for c in ("W", "Y", "Z", "X")],
    "fuma": [(c, None) for c in ("W", "X", "Y", "Z")],
}
# The code that decides the delivered bytes, part of the conform stage's cache key: this module
# (`_render`), the BWF writer of stems and mixes, the mixdown and preview, the plots, the
# timeline writers (and the flattening they use), and the reading of the stored edit that they
# write out again with its Foley tracks (`ingest.read_timeline`; `ingest.timecode` for the
# descriptions). Envelope JSON is copied as it is (`decisions.read_envelope` only parses it).
CODE = [sys.modules[__name__], bwf, mixdown, plots, timeline_io, timeline_prep, timeline_aaf,
        ingest, ingest_formats, ingest_flatten]


@dataclass(frozen=True)
class ReelMix:
    """One reel-length mix and the Foley track that references its stems."""

    kind: str          # the stem kind it sums
    channels: int
    mask: int | None
    label: str         # for descriptions
    track: str         # the timeline track holding its stems


MIXES = (ReelMix("stereo", 2, None, "stereo", "FOLEY"), ReelMix("51", 6, MASK_51, "5.1", "FOLEY 5.1"),
         ReelMix("binaural", 2, None, "binaural", "FOLEY BINAURAL"),
         ReelMix("foa", 4, None, "FOA", "FOLEY FOA"))


@dataclass(frozen=True)
class ShotDelivery:
    """What the pass produced for one shot (all refs), or why it did not."""

    shot_id: int
    status: str  # delivered | skipped | failed | omitted | pending_review | retake_requested
    reason: str | None = None
    envelope: ArtifactRef | None = None
    envelope_version: int | None = None
    stems: Mapping[str, ArtifactRef] = field(default_factory=dict)  # STEMS and "position"
    proxy: ArtifactRef | None = None


def delivered(shot_id: int, *, envelope: ArtifactRef, envelope_version: int | None,
              spatial: dict[str, Any], proxy: ArtifactRef) -> ShotDelivery:
    """A delivered shot from its approved envelope and its `tasks.spatial.spatialize` result."""
    return ShotDelivery(shot_id, "delivered", envelope=envelope, envelope_version=envelope_version,
                        stems=stems_of(spatial), proxy=proxy)


def shot_prefix(reel: str, shot: str) -> str:
    return f"{reel}_{shot}_foley"


def event_frame(t: float, num: int, den: int) -> int:
    """The frame (from the shot's start) an event `t` seconds in sounds in, as the review app's
    `frameAt` (review/static/shot.js) shows it: t read as the decimal it was stored as, with the
    app's 1e-4-frame tolerance (a few microseconds: an edit's time is kept to the microsecond,
    so a frame start at an NTSC rate is stored up to 0.5 µs short of it), so t = 1.16 at
    25 fps is frame 29 (a float floor gave 28)."""
    from fractions import Fraction

    return (Fraction(str(float(t))) * num + Fraction(den, 10**4)) // den


def _render(
    work: Path, paths: dict[str, Path], reel: dict[str, Any], shots: list[dict[str, Any]]
) -> StageOutput:
    """Write every delivered file into `work`, keyed by its relative delivery path."""
    files: dict[str, tuple[Path, str]] = {}
    name, num, den = reel["name"], reel["rate_num"], reel["rate_den"]
    start_ref = time_reference(reel["start_frame"], num, den, SR)
    made = dt.datetime.fromisoformat(reel["origination"])

    def tc(frames: int) -> str:
        return ingest.timecode(reel["start_frame"] + frames, num, den, reel["drop_frame"])

    def ixml(kind: str, stamp: int, note: str, shot: str | None = None) -> str:
        return bwf.ixml(project=name, scene=shot, note=note, rate_num=num, rate_den=den,
                        drop_frame=reel["drop_frame"], time_reference=stamp, sr=SR,
                        tracks=CHANNELS[fmt if kind == "foa" else kind])

    def add(rel: str, mime: str) -> Path:
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        files[rel] = (p, mime)
        return p

    fmt = reel["spatial"]["fmt"]
    placed: dict[str, list[mixdown.Placed]] = {m.kind: [] for m in MIXES}
    clips: dict[str, list[timeline_io.FoleyClip]] = {m.kind: [] for m in MIXES}
    segments = []
    cursor = 0
    for sh in shots:
        if sh["record_in_frame"] > cursor:
            segments.append(mixdown.Segment(sh["record_in_frame"] - cursor, None))
        seg_frames = sh["record_in_frame"] + sh["duration_frames"] - max(cursor, sh["record_in_frame"])
        if seg_frames > 0:
            proxy = paths.get(f"{sh['name']}/proxy") if sh["status"] == "delivered" else None
            segments.append(mixdown.Segment(seg_frames, proxy))
        cursor = max(cursor, sh["record_in_frame"] + sh["duration_frames"])
        if sh["status"] != "delivered":
            continue
        offset = round(sh["record_in_s"] * SR)
        stamp = start_ref + offset
        prefix = f"shots/{sh['name']}/{shot_prefix(name, sh['name'])}"
        desc = f"{name} {sh['name']} Foley @ {tc(sh['record_in_frame'])}"
        digests = {}
        sh["silent"] = True
        for kind in STEMS:
            audio, sr = sf.read(paths[f"{sh['name']}/{kind}"], dtype="float32")
            sh["silent"] = sh["silent"] and not np.any(audio)
            label = FORMAT_LABEL[fmt] if kind == "foa" else kind
            stem = add(f"{prefix}_{kind}.wav", "audio/wav")
            write_bwf(stem, audio, sr, time_reference=stamp, description=f"{desc} ({label})",
                      origination_datetime=made, channel_mask=MASK_51 if kind == "51" else None,
                      ixml=ixml(kind, stamp, f"{desc} ({label})", sh["name"]))
            digests[kind] = sha256_file(stem)
        pos_rel = f"{prefix}_position.json"
        shutil.copyfile(paths[f"{sh['name']}/position"], add(pos_rel, "application/json"))
        env = read_envelope(paths[f"{sh['name']}/envelope"])
        env_rel = f"shots/{sh['name']}/envelope_v{env['version']}.json"
        shutil.copyfile(paths[f"{sh['name']}/envelope"], add(env_rel, "application/json"))
        plots.plot_envelope(
            env, add(f"shots/{sh['name']}/envelope_v{env['version']}.png", "image/png"),
            label_time=lambda t, rin=sh["record_in_frame"]: tc(rin + round(t * num / den)),
            title=f"{name} {sh['name']} v{env['version']}",
        )
        for m in MIXES:
            placed[m.kind].append(mixdown.Placed(paths[f"{sh['name']}/{m.kind}"], offset))
            clips[m.kind].append(timeline_io.FoleyClip(
                shot=sh["name"], record_in_frame=sh["record_in_frame"],
                duration_frames=sh["duration_frames"], media_path=f"{prefix}_{m.kind}.wav",
                channels=m.channels, metadata={"format": fmt} if m.kind == "foa" else {},
                sha256=digests[m.kind]))
        sh["envelope_file"], sh["position_file"] = env_rel, pos_rel
        sh["stems"] = {k: f"{prefix}_{k}.wav" for k in STEMS}
        # the approved events as delivered: shot-relative seconds, and where each falls on the
        # record side as a timecode (the frame it sounds in)
        sh["events"] = [{**ev, "record_tc": tc(sh["record_in_frame"]
                                                + event_frame(ev["t"], num, den))}
                        for ev in env.get("events", [])]
    total = round(reel["duration_s"] * SR)
    for m in MIXES:
        label = f"{m.label} {FORMAT_LABEL[fmt]}" if m.kind == "foa" else m.label
        desc = f"{name} Foley {label} mix @ {reel['start_timecode']}"
        mixdown.mix_reel(placed[m.kind], add(mix_name(name, m.kind), "audio/wav"), frames=total,
                         channels=m.channels, sr=SR, time_reference=start_ref, made=made,
                         channel_mask=m.mask, description=desc,
                         ixml=ixml(m.kind, start_ref, desc))
    mix = work / mix_name(name, "stereo")
    edit, _ = ingest.read_timeline(paths["timeline"], fps=num / den)
    timeline_io.relink_picture(edit, reel.get("media", []))
    for m in MIXES:  # each call returns a copy with one more track
        edit = timeline_io.add_foley_track(edit, clips[m.kind], rate_num=num, rate_den=den,
                                           name=m.track)
    timeline_io.write_timeline(edit, add(f"{name}.otio", "application/json"))
    timeline_io.write_timeline(edit, add(f"{name}.xml", "application/xml"))
    # AAF stamps the clock and random ids into the file: the edit's own time and content stand
    # in for them, so the same edit delivers the same bytes (any backend, any rerun).
    edit_key = hashlib.sha256(otio.adapters.write_to_string(edit, "otio_json").encode()).hexdigest()
    with timeline_aaf.reproducible(made, edit_key):
        timeline_io.write_timeline(edit, add(f"{name}.aaf", "application/octet-stream"))
    mixdown.render_preview(segments, mix, add(f"{name}_preview.mp4", "video/mp4"), rate=(num, den),
                           start_timecode=reel["start_timecode"])
    return StageOutput(files=files, result={"shots": shots})


def mix_name(reel: str, kind: str) -> str:
    """File name of a reel mix: `<reel>_foley_stereo.wav`, `_51`, `_binaural`, `_foa`."""
    return f"{reel}_foley_{kind}.wav"


EPOCH_STAMP = "1970-01-01T00:00:00"


def _saved_at(timeline_path: str, stored: ArtifactRef | None) -> dt.datetime | None:
    """When the file at the reel's `timeline_path` was saved, if it still holds the edit the
    reel stored at ingest (`stored`); None if it is gone or holds another edit."""
    p = Path(timeline_path)
    try:
        if not p.is_file() or (stored is not None and (
                p.stat().st_size != stored["bytes"] or sha256_file(p) != stored["sha256"])):
            return None
        return dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc)
    except OSError:
        return None


def origination(s: Session, reel: api.Reel, saved: dt.datetime | None) -> str:
    """The BWF origination stamp: when the locked edit was saved (its file's modification time).

    Derived from the input rather than the clock, so the same edit renders byte-identical files.
    The stamp is part of the conform stage's parameters, so it must not change while the edit
    does not: once the file at the reel's `timeline_path` is gone (moved, archived) or holds
    another edit than the one ingested (the reel's timeline artifact, which is what conform
    renders), it is the stamp this reel's last conform of that edit used — the file's time back
    then, so a review re-conform after the edit moved reuses the delivery instead of re-rendering
    it — else (never conformed) when foleyflow stored that edit at ingest. Never the epoch.
    `saved`: the file's time when it holds the stored edit (`_saved_at`), else None."""
    if saved is not None:
        return _stamp(saved)
    art = s.get(api.Artifact, reel.timeline_artifact_id) if reel.timeline_artifact_id else None
    if art is not None:
        used = (select(api.Activity.parameters)
                .join(Usage, Usage.activity_id == api.Activity.id)
                .where(api.Activity.task == "conform", api.Activity.status == "completed",
                       api.Activity.reel_id == reel.id, Usage.artifact_id == art.id,
                       Usage.role == "timeline")
                .order_by(api.Activity.id.desc()).limit(20))
        for params in s.scalars(used):
            stamp = ((params or {}).get("reel") or {}).get("origination")
            if isinstance(stamp, str) and stamp != EPOCH_STAMP:  # (the epoch: an old fallback)
                with contextlib.suppress(ValueError):
                    dt.datetime.fromisoformat(stamp)
                    return stamp
        if art.created_at is not None:
            return _stamp(art.created_at)
    return _stamp(reel.created_at)


def _stamp(when: dt.datetime) -> str:
    if when.tzinfo is None:  # SQLite keeps UTC without a zone
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@task(name="conform", cache_policy=NO_CACHE)
def conform(reel_id: int, deliveries: list[ShotDelivery], out_dir: str) -> dict[str, Any]:
    """Render the delivery folder for the reel into `out_dir`; returns the manifest."""
    def edit(s: Session) -> tuple[str, ArtifactRef | None]:
        r = s.get(api.Reel, reel_id)
        art = s.get(api.Artifact, r.timeline_artifact_id) if r.timeline_artifact_id else None
        return r.timeline_path, art.ref() if art is not None else None

    saved = _saved_at(*transaction(edit))  # the file is hashed outside any transaction

    def read(s: Session) -> tuple[ArtifactRef, dict[str, Any], list[dict[str, Any]], list[int],
                                  str]:
        r = s.get(api.Reel, reel_id)
        assert r is not None
        timeline_ref = s.get(api.Artifact, r.timeline_artifact_id).ref()
        by_id = {sh.id: sh for sh in r.shots}
        reel = {"name": r.name, "rate_num": r.rate_num, "rate_den": r.rate_den,
                "drop_frame": r.drop_frame, "start_frame": r.start_frame,
                "start_timecode": r.start_timecode, "origination": origination(s, r, saved),
                "spatial": reel_settings(r.pass_params)[0].to_dict(),
                "media": sorted({sh.source_path for sh in r.shots
                                 if sh.in_edit and sh.source_path})}
        order = sorted(deliveries, key=lambda d: by_id[d.shot_id].index)
        shots = []
        for d in order:
            sh = by_id[d.shot_id]
            shots.append({"name": sh.name, "clip_name": sh.clip_name,
                          "record_in_frame": sh.record_in_frame,
                          "duration_frames": sh.duration_frames, "record_in_s": sh.record_in_s,
                          "duration_s": sh.duration_s, "status": d.status,
                          "skipped_reason": d.reason, "envelope_version": d.envelope_version,
                          "foley_hint": sh.foley_hint})
        last = max((s_["record_in_frame"] + s_["duration_frames"] for s_ in shots), default=0)
        reel["duration_s"] = last * r.rate_den / r.rate_num
        return timeline_ref, reel, shots, [d.shot_id for d in order], r.timeline_path

    timeline_ref, reel, shots, order, timeline_path = transaction(read)
    by_shot = {d.shot_id: d for d in deliveries}
    inputs: dict[str, ArtifactRef] = {"timeline": timeline_ref}
    for d, sh in zip((by_shot[i] for i in order), shots):
        if d.status != "delivered":
            continue
        refs = {"envelope": d.envelope, "proxy": d.proxy, **d.stems}
        missing = [k for k in (*STEMS, "position", "envelope", "proxy") if refs.get(k) is None]
        if missing:
            raise ValueError(f"shot {sh['name']} is marked delivered without {', '.join(missing)}")
        inputs |= {f"{sh['name']}/{kind}": ref for kind, ref in refs.items()}

    res = run_stage(
        "conform",
        inputs=inputs,
        params={"reel": reel, "shots": shots},
        code=CODE,
        compute=lambda paths, work: _render(work, paths, reel, [dict(x) for x in shots]),
        reel_id=reel_id,
    )
    # the run that rendered these files (earlier, if cached)
    run_id = transaction(lambda s: s.get(api.Activity, res.activity_id).prefect_flow_run_id)
    manifest = build_manifest(reel, res.result["shots"], res.outputs, run_id=run_id,
                              activity_id=res.activity_id)

    def write_manifest(_paths: dict[str, Path], work: Path) -> StageOutput:
        out = work / "manifest.json"
        out.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return StageOutput(files={"manifest.json": (out, "application/json")})

    man = run_stage("manifest", inputs=res.outputs, params={"manifest": manifest}, code=[],
                    compute=write_manifest, reel_id=reel_id)
    from tasks.delivery import deliver  # it imports this module's names of delivered files
    deliver(res.outputs | man.outputs, Path(out_dir), keep=[timeline_path])
    return manifest


def build_manifest(reel: dict[str, Any], shots: list[dict[str, Any]], outputs: dict[str, ArtifactRef],
                   *, run_id: str | None, activity_id: int) -> dict[str, Any]:
    """`manifest.json` as DESIGN.md specifies; paths relative to the delivery folder."""
    name = reel["name"]
    return {
        "reel": name,
        "fps": round(reel["rate_num"] / reel["rate_den"], 6),
        "rate": f"{reel['rate_num']}/{reel['rate_den']}",
        "drop_frame": reel["drop_frame"],
        "timeline_start": reel["start_timecode"],
        "samplerate": SR,
        "bit_depth": 24,
        "mix": mix_name(name, "stereo"),
        "foa": mix_name(name, "foa"),
        "foa_format": reel["spatial"]["fmt"],
        "surround_51": mix_name(name, "51"),
        "binaural": mix_name(name, "binaural"),
        "spatial": reel["spatial"],
        "timelines": {"otio": f"{name}.otio", "aaf": f"{name}.aaf", "fcp_xml": f"{name}.xml"},
        "preview": f"{name}_preview.mp4",
        "shots": [
            {
                "name": sh["name"], "clip": sh["clip_name"],
                "record_in_s": round(sh["record_in_s"], 6), "duration_s": round(sh["duration_s"], 6),
                "record_in": ingest.timecode(reel["start_frame"] + sh["record_in_frame"],
                                             reel["rate_num"], reel["rate_den"], reel["drop_frame"]),
                "status": sh["status"],
                "skipped_reason": sh["skipped_reason"], "foley": sh["foley_hint"],
                "envelope": ({"version": sh["envelope_version"], "uri": sh["envelope_file"]}
                             if sh.get("envelope_file") else None),
                "stems": sh.get("stems", {}),
                # delivered with nothing to hear (a still shot, no events): every stem is
                # digital silence, so an editor can leave its regions out
                **({"silent": sh["silent"]} if "silent" in sh else {}),
                "events": sh.get("events", []),
                "position": sh.get("position_file"),
            }
            for sh in shots
        ],
        "files": {rel: ref["sha256"] for rel, ref in sorted(outputs.items())},
        "provenance": {"run_id": run_id, "conform_activity": activity_id,
                       "db": api.redact_url(runtime.db().url)},
    }
