"""`foley eval spatial`: is every sound where it was meant to be, and is that where it is seen?

Delivery mode (`evaluate_delivery(DIR)`), from the files a mix stage receives:
- direction of arrival per event from the reel's B-format mix: the active intensity vector
  I = <W·[X, Y, Z]> over the 100 ms after the event's onset, band-limited to 200 Hz–4 kHz
  (4th-order Butterworth, zero phase), converted to AmbiX first if the reel is FuMa; compared
  with the direction the spatial stage intended (the shot's `position.json`: the tracked or
  overridden direction at the event's time). Targets: within 2° for static sources (the track
  moves < 1° over the window); moving sources are reported apart, and so are events heard
  from several layers at once (`shared`: the stem split across frequency between objects,
  whose broadband intensity points between them, weighted by their spectra).
- the B-format's W against the mono sum (every shot's placed mono stem at its record
  position), RMS per shot in dB: within 0.5 dB (exactly equal when the reverb send is off).
- the reel's 4 channels and format; the binaural mix's ITD at each lateral event (> 10° off
  centre; interaural cross-correlation over the same window, ±1 ms) against the head model's
  Woodworth ITD of the intended direction, and its sign; the stereo mix's left/right order
  (the louder side follows the azimuth's sign).

Rendered-scenes mode (`evaluate_scenes(n)`): N procedural paired scenes (`models.paired_scenes`:
drops, bounces, walkers, slides, rubs, with camera pans, occluders, flicker) whose object
positions are known. Each is rendered, cut to a 320-px proxy exactly as the pass does, and its
features, motion-baseline envelope and sounding objects computed as in the pass. Points: every
true contact and every 100 ms of every sliding sound, with the truth's screen x mapped through
the same camera (HFOV 60°, the scene's aspect). Each point is scored against the layer that
plays it (`score_points`: several objects sounding at once each against their own layer, one
to one), and counts when the pass plays something for it (`sounded`: an envelope event within
two frames of a contact, the curve on during a slide) — a sound the envelope missed is not
heard anywhere, so it has no direction to be wrong about; those points are counted apart
(`unsounded_points`, and `all_points_deg` scores them against whatever plays then). Target:
within 5° (Zen-Foley's listeners: 6.2°) at the 90th percentile, the median well under.
"""
from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.optimize import linear_sum_assignment
from scipy.signal import butter, sosfiltfilt

from models import hrtf, motion_baseline, paired_scenes, scenes, spatial, spatial_track
from tasks import ingest
from tasks.dataset import PROXY_WIDTH  # = the pass's proxy width (tasks.prepare)
from tasks.features import compute_features
from tasks.media import make_proxy

WINDOW_S = 0.1
BAND_HZ = (200.0, 4000.0)
PAD_S = 0.05               # filter run-in either side of the window
STATIC_DEG = 1.0           # the track moves less than this over the window: a static source
LATERAL_DEG = 10.0
DOA_TARGET_DEG = 2.0
W_TARGET_DB = 0.5
ITD_TARGET_MS = 0.1
TRACK_TARGET_DEG = 5.0
SCENE_KINDS = ("impacts", "bounce", "steps", "scrape", "rub")


class DeliveryError(ValueError):
    """The folder is not a foleyflow delivery (or lacks what the evaluation reads)."""


def _excerpt(f: sf.SoundFile, start_s: float, dur_s: float) -> tuple[np.ndarray, int]:
    """(n, ch) samples of [start − PAD, start + dur + PAD) and the index where `start` lies."""
    sr = f.samplerate
    lo = max(0, int(round((start_s - PAD_S) * sr)))
    hi = min(f.frames, int(round((start_s + dur_s + PAD_S) * sr)))
    f.seek(lo)
    return f.read(max(hi - lo, 0), dtype="float64", always_2d=True), int(round(start_s * sr)) - lo


def _band(x: np.ndarray, sr: int) -> np.ndarray:
    sos = butter(4, BAND_HZ, btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, x, axis=0) if len(x) > 30 else x


def itd_ms(left: np.ndarray, right: np.ndarray, sr: int) -> float:
    """Lag (ms) of the interaural cross-correlation peak within ±1 ms; positive: left leads."""
    n = len(left)
    cc = np.fft.irfft(np.fft.rfft(right, 2 * n) * np.conj(np.fft.rfft(left, 2 * n)))
    lag = int(sr / 1000)
    cc = np.concatenate([cc[-lag:], cc[:lag + 1]])
    i = int(np.argmax(cc))
    frac = 0.0
    if 0 < i < len(cc) - 1:
        a, b, c = cc[i - 1], cc[i], cc[i + 1]
        frac = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else 0.0
    return float((i - lag + frac) / sr * 1000)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise DeliveryError(f"{folder}: no readable manifest.json ({exc}); point at a folder "
                            "`foley run --out` wrote") from None
    for key in ("foa", "mix", "binaural", "shots", "rate"):
        if key not in m:
            raise DeliveryError(f"{folder}/manifest.json has no {key!r}: deliver it again with "
                                "this version of foleyflow")
    return m


def _event_row(shot: dict[str, Any], ev: dict[str, Any], files: dict[str, sf.SoundFile],
               fmt: str, sr: int, tc: Callable[[float], str]) -> dict[str, Any] | None:
    t = shot["record_in_s"] + ev["t"]
    block, at = _excerpt(files["foa"], t, WINDOW_S)
    win = slice(at, at + int(WINDOW_S * sr))
    ambix = spatial.to_ambix(_band(block, sr), fmt)[win]
    if len(ambix) == 0 or float(np.mean(ambix[:, 0] ** 2)) < 1e-12:
        return None  # nothing sounds here (a silent event): no direction to measure
    az, el, coherence = spatial.intensity_doa(ambix)
    error = abs((math.degrees(az) - ev["azimuth_deg"] + 180) % 360 - 180)
    row = {"shot": shot["name"], "t": ev["t"], "kind": ev.get("kind"),
           "timecode": tc(t),
           "intended_az": ev["azimuth_deg"], "intended_el": ev["elevation_deg"],
           "measured_az": round(math.degrees(az), 3), "measured_el": round(math.degrees(el), 3),
           "error_deg": round(error, 3), "shared": bool(ev.get("shared")),
           "static": ev["moving_deg"] < STATIC_DEG and not ev.get("shared"),
           "coherence": round(coherence, 3)}
    st, at_s = _excerpt(files["stereo"], t, WINDOW_S)
    lvl = np.sqrt(np.mean(st[at_s:at_s + int(WINDOW_S * sr)] ** 2, axis=0))
    row["stereo_lr_db"] = round(20 * math.log10(max(lvl[0], 1e-12) / max(lvl[1], 1e-12)), 2)
    if abs(ev["azimuth_deg"]) >= LATERAL_DEG:
        bi, at_b = _excerpt(files["binaural"], t, WINDOW_S)
        ears = _band(bi, sr)[at_b:at_b + int(WINDOW_S * sr)]
        row["itd_ms"] = round(itd_ms(ears[:, 0], ears[:, 1], sr), 4)
        row["itd_expected_ms"] = round(hrtf.woodworth_itd(math.radians(ev["azimuth_deg"])) * 1000, 4)
    return row


def _w_vs_mono(folder: Path, m: dict[str, Any], foa: sf.SoundFile, fmt: str) -> list[dict[str, Any]]:
    """Per shot: RMS of the reel's W over the shot against its placed mono stem, in dB."""
    rows = []
    for shot in m["shots"]:
        if shot["status"] != "delivered":
            continue
        mono, sr = sf.read(folder / shot["stems"]["mono"], dtype="float64")
        start = int(round(shot["record_in_s"] * sr))
        foa.seek(start)
        w = spatial.to_ambix(foa.read(len(mono), dtype="float64", always_2d=True), fmt)[:, 0]
        a, b = float(np.sqrt(np.mean(w ** 2))), float(np.sqrt(np.mean(mono[: len(w)] ** 2)))
        if b > 0:
            rows.append({"shot": shot["name"], "w_db": round(20 * math.log10(max(a, 1e-12) / b), 4)})
    return rows


def evaluate_delivery(folder: Path) -> dict[str, Any]:
    """Direction of arrival per event, W against the mono sum, ITD and stereo order."""
    folder = Path(folder)
    m = _manifest(folder)
    num, den = (int(v) for v in m["rate"].split("/"))
    start = _frames(m["timeline_start"], num / den)

    def tc(t: float) -> str:
        return ingest.timecode(start + round(t * num / den), num, den, m["drop_frame"])

    fmt = m.get("foa_format", "ambix")
    files = {k: sf.SoundFile(folder / m[key]) for k, key in
             (("foa", "foa"), ("stereo", "mix"), ("binaural", "binaural"))}
    try:
        if files["foa"].channels != 4:
            raise DeliveryError(f"{folder / m['foa']}: {files['foa'].channels} channels, "
                                "a first-order B-format has 4")
        sr = files["foa"].samplerate
        events, skipped = [], 0
        for shot in m["shots"]:
            if shot["status"] != "delivered" or not shot.get("position"):
                continue
            pos = json.loads((folder / shot["position"]).read_text())
            for ev in pos["events"]:
                row = _event_row(shot, ev, files, fmt, sr, tc)
                if row is None:
                    skipped += 1
                else:
                    events.append(row)
        w_rows = _w_vs_mono(folder, m, files["foa"], fmt)
    finally:
        for f in files.values():
            f.close()
    return {"reel": m["reel"], "format": fmt, "channels": 4, "events": events,
            "silent_events": skipped, "w_vs_mono": w_rows, "summary": _summary(events, w_rows)}


def _frames(timecode: str, fps: float) -> int:
    import opentimelineio as otio

    return round(otio.opentime.from_timecode(timecode, fps).value)


def _stats(errors: list[float]) -> dict[str, float | int | None]:
    if not errors:
        return {"n": 0, "median": None, "p90": None, "max": None}
    e = np.asarray(errors)
    return {"n": len(e), "median": round(float(np.median(e)), 3),
            "p90": round(float(np.percentile(e, 90)), 3), "max": round(float(e.max()), 3)}


def _summary(events: list[dict[str, Any]], w_rows: list[dict[str, Any]]) -> dict[str, Any]:
    static = _stats([r["error_deg"] for r in events if r["static"]])
    moving = _stats([r["error_deg"] for r in events if not r["static"] and not r["shared"]])
    shared = _stats([r["error_deg"] for r in events if r["shared"]])
    lateral = [r for r in events if "itd_ms" in r]
    itd_sign = sum(1 for r in lateral if np.sign(r["itd_ms"]) == np.sign(r["itd_expected_ms"]))
    sided = [r for r in events if abs(r["intended_az"]) >= LATERAL_DEG]
    lr_ok = sum(1 for r in sided if np.sign(r["stereo_lr_db"]) == np.sign(r["intended_az"]))
    w_err = max((abs(r["w_db"]) for r in w_rows), default=None)
    return {
        "doa_static_deg": static, "doa_moving_deg": moving, "doa_shared_deg": shared,
        "doa_static_ok": static["max"] is not None and static["max"] <= DOA_TARGET_DEG,
        "w_vs_mono_max_db": w_err,
        "w_vs_mono_ok": w_err is not None and w_err <= W_TARGET_DB,
        "itd_sign_ok": f"{itd_sign}/{len(lateral)}",
        "itd_error_ms": _stats([abs(r["itd_ms"] - r["itd_expected_ms"]) for r in lateral]),
        "stereo_order_ok": f"{lr_ok}/{len(sided)}",
    }


# ---------------------------------------------------------------- rendered scenes


def _scene_features(spec: paired_scenes.PairedSpec, fps: float, dur: float, work: Path) -> dict[str, np.ndarray]:
    """The pass's features of a rendered scene: render, 320-px proxy, flow."""
    src, proxy = work / "scene.mp4", work / "proxy.mp4"
    scenes.encode_frames(paired_scenes.render_frames(spec), spec.size, fps, src)
    make_proxy(src, 0.0, dur, fps, proxy, width=PROXY_WIDTH)
    return compute_features(proxy, fps)


def _truth_points(truth: paired_scenes.PairedTruth) -> Iterator[tuple[float, float, str]]:
    """(t, true screen x, what) at every contact and every 100 ms of every sliding sound."""
    for e in truth.events:
        yield e["t"], e["x"], e["kind"]
    for s in truth.sustained:
        step = int(round(s["rate_hz"] * WINDOW_S))
        for i in range(0, len(s["x"]), step):
            t = s["t0"] + i / s["rate_hz"]
            if s["t_start"] <= t <= s["t_end"] and s["speed"][i] > 0:
                yield t, s["x"][i], s["kind"]


def _group(points: list[tuple[float, float, str]], window: float) -> list[list[tuple[float, float, str]]]:
    """Truth points sounding together: consecutive points less than `window` apart."""
    groups: list[list[tuple[float, float, str]]] = []
    for p in sorted(points):
        if groups and p[0] - groups[-1][-1][0] < window:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def score_points(points: list[tuple[float, float, str]], sources: spatial_track.SourceScene,
                 camera: spatial.Camera, fps: float) -> list[dict[str, Any]]:
    """Each true sounding point against the layer that plays it.

    The layers heard at a point are those with at least `spatial_track.SOUNDING` of the sound
    (else the one with the most). Points sounding together (within a frame: two boxes sliding,
    objects dropped at once) are matched one to one with the layers heard then, by least total
    azimuth error: one layer cannot stand for two objects in different places. A point left
    over (more objects than layers) takes the nearest layer heard."""
    rows = []
    for group in _group(points, 1.0 / fps):
        layers = sorted({i for t, _, _ in group for i in sources.heard(t)})
        az = {}
        err = np.zeros((len(group), len(layers)))
        for a, (t, x_true, _) in enumerate(group):
            for b, li in enumerate(layers):
                x = float(sources.layers[li].track.at(t)[0])
                az[a, b] = math.degrees(float(camera.azimuth(x)))
                err[a, b] = abs(az[a, b] - math.degrees(float(camera.azimuth(x_true))))
        pick = dict(zip(*linear_sum_assignment(err)))
        for a, (t, x_true, what) in enumerate(group):
            b = pick.get(a, int(np.argmin(err[a])))
            rows.append({"t": round(t, 3), "what": what, "layer": sources.layers[layers[b]].label,
                         "true_az": round(math.degrees(float(camera.azimuth(x_true))), 3),
                         "tracked_az": round(az[a, b], 3), "error_deg": round(float(err[a, b]), 3)})
    return rows


def sounded(t: float, what: str, envelope: dict[str, Any], fps: float) -> bool:
    """Does the pass play anything for this true point? A contact: an envelope event within two
    frames; a sliding sound: the envelope's curve at least `spatial_track.SUSTAIN_MIN` there."""
    if what in ("scrape", "rub"):
        curve = np.asarray(envelope["curve"], np.float64)
        level = np.interp(t, np.arange(len(curve)) / envelope["rate_hz"], curve) if len(curve) else 0.0
        return bool(level >= spatial_track.SUSTAIN_MIN)
    return any(abs(e["t"] - t) <= spatial_track.EVENT_FRAMES / fps for e in envelope["events"])


def evaluate_scenes(n: int, *, seed: int = 0, hfov_deg: float = 60.0,
                    kinds: tuple[str, ...] = SCENE_KINDS, progress: Any = None) -> dict[str, Any]:
    """Tracked azimuth against the true position on `n` rendered scenes (module docstring)."""
    rows, per_scene, all_errors = [], [], []
    for i in range(n):
        spec = paired_scenes.sample_spec(np.random.default_rng([seed, i, 7]), "train", kinds=kinds)
        truth = paired_scenes.paired_truth(spec)
        with tempfile.TemporaryDirectory(prefix="foley-eval-spatial-") as tmp:
            feats = _scene_features(spec, truth.fps, truth.duration_s, Path(tmp))
        env = motion_baseline.estimate_envelope(feats, shot=f"scene{i}", duration_s=truth.duration_s)
        sources = spatial_track.sounding_sources(feats, env)
        camera = spatial.Camera(hfov_deg, spec.size[0] / spec.size[1])
        points = list(_truth_points(truth))
        played = [p for p in points if sounded(p[0], p[2], env, truth.fps)]
        scored = [{**r, "sounded": True} for r in score_points(played, sources, camera, truth.fps)]
        errs = [r["error_deg"] for r in scored]
        every = score_points(points, sources, camera, truth.fps)   # the missed among all of them
        played_keys = {(round(t, 3), what) for t, _, what in played}
        scored += [{**r, "sounded": False} for r in every if (r["t"], r["what"]) not in played_keys]
        all_errors += [r["error_deg"] for r in every]
        rows += [{"scene": i, "kind": spec.kind, **r} for r in scored]
        per_scene.append({"scene": i, "kind": spec.kind, "seed": spec.seed, "fps": round(truth.fps, 3),
                          "pan": round(spec.pan, 3), "objects": len(spec.movers),
                          "layers": len(sources.layers),
                          "points": len(errs), "unsounded": len(points) - len(errs), **{k: v for k, v in _stats(errs).items() if k != "n"}})
        if progress is not None:
            progress()
    heard = [r for r in rows if r["sounded"]]
    stats = _stats([r["error_deg"] for r in heard])
    by_kind = {k: _stats([r["error_deg"] for r in heard if r["kind"] == k])
               for k in sorted({r["kind"] for r in rows})}
    return {"scenes": per_scene, "points": rows, "summary": {
        "tracked_az_deg": stats, "by_kind": by_kind, "hfov_deg": hfov_deg,
        "all_points_deg": _stats(all_errors),
        "unsounded_points": len(rows) - len(heard),
        "median_ok": stats["median"] is not None and stats["median"] <= TRACK_TARGET_DEG,
        "p90_ok": stats["p90"] is not None and stats["p90"] <= TRACK_TARGET_DEG}}
