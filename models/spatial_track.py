"""Where a shot's sounds are, over time: the sounding objects tracked in the picture.

Input: the feature dict of `tasks.features` (moving regions per frame pair) and the shot's
envelope (events with t, x, y; the loudness curve). Output: a `SourceScene` — one
`SourceLayer` per sounding object, each a `PositionTrack` (picture x, y and region area) with
its share of the shot's sound over time — that `models.spatial_render` places through the
camera model, layer by layer, and sums in the B-format.

Method
1. Tracks. Moving regions are linked pair to pair by the motion baseline's tracker
   (`models.motion_baseline.track_regions`); region k's centroid is taken at frame k.
2. Stitching. A track that breaks (the flow mask merges the object with another region for a
   few frames, or loses it at a landing) is joined to the track that continues it: the
   continuation starts at most `STITCH_S` (0.5 s) later, where the broken track's last
   centroid velocity puts it — within 4 px + half the region's radius + half the distance
   travelled, plus the new track's own step — with a centroid velocity that has not changed
   by more than the old speed (a landing keeps its horizontal motion; a bounce reverses and
   stays apart: the baseline's tracker links those itself) and an area within ×2.5.
   Centroid velocities, not the residual flow: where the picture has little texture the
   camera-motion estimate is off and the residual with it, the centroids are not. Joins are
   made best first, one continuation per track.
3. Smoothing. Each track's x, y and log-area are smoothed with a Rauch–Tung–Striebel
   smoother (constant-velocity Kalman model, per axis): measurement noise 1 % of the frame
   (flow-mask centroids jitter), process noise 2 frame widths/s² — a bounce or a footfall stays
   sharp, centroid jitter goes. Before a track starts and after it ends it holds its nearest
   position (an object at rest after a stop stays where it stopped).
4. Who makes each event. The objects whose motion stops or reverses within two frames of the
   event's time — the baseline's contact detector run on every stitched track — make it,
   sharing it in proportion to their contact strength: several objects dropped together all
   sound; a walker's step is the foot region that stops (the planted foot), not the body
   moving on. When no track has a contact there, the track passing nearest the event's x, y
   within two frames (gate: 15 % of the frame) makes it; when none does, a fixed anchor at
   the event's own x, y.
5. Who makes the sustained sound. The envelope's curve minus its events' transients (the
   baseline's transient shape: 10 ms attack, 80 ms decay) is the sustained part. The moving
   objects whose drive (speed · area^¼, the weighting the baseline gives a sliding sound)
   correlates with it over the shot (correlation ≥ 0.2 and ≥ half the best; tracked over
   at least 4 frame pairs, so a flicker of the mask does not) make it, sharing
   it at each moment in proportion to their drive: two boxes sliding at once both sound, a
   fast distractor crossing in silence does not. While none of them moves, the sound goes to
   the other tracks moving then whose drive correlates positively at all (a slide the
   envelope heard only in part), else to the nearest of them in time.
6. Shares. Each object's weight over time is the sum of its events' transients (from half a
   glide before the onset) and its part of the sustained sound; its share is its weight over
   the sum of all weights (held through silence, so a tail stays where it was), smoothed
   over `GLIDE_S` (40 ms, raised cosine) so the sound moves to the next object before the
   next onset, never with a click. Shares sum to 1 at every moment. A shot with neither
   events nor a sustained part follows its biggest mover; no motion either: the centre of
   the picture at the reference distance.
Everything is on a `GRID_HZ` time grid (5 ms), so an event's switch is not rounded to frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.motion_baseline import (ATTACK_S, DECAY_S, RMS_AT_FULL_STRENGTH, Track, envelope_curve,
                                    track_contacts, track_regions)
from models.spatial import A_REF

MEAS_NOISE = 0.01        # picture units
ACCEL_NOISE = 2.0        # picture units / s²
EVENT_GATE = 0.15        # picture units
EVENT_FRAMES = 2.0
GLIDE_S = 0.04
GRID_HZ = 200.0
STITCH_S = 0.5           # a track broken for up to this long is joined to its continuation
STITCH_AREA = 2.5
SUSTAIN_MIN = 0.02 * RMS_AT_FULL_STRENGTH  # less residual than this is not a sustained sound
CORR_MIN = 0.2
SLIDE_PAIRS = 4          # a sliding object is tracked over at least this many frame pairs
SOUNDING = 0.2           # a layer with at least this share is heard (foley eval spatial)


@dataclass
class PositionTrack:
    """Picture position of a sound on a regular time grid (seconds from the shot's start)."""

    t: np.ndarray       # (N,)
    x: np.ndarray       # (N,) in [0, 1]
    y: np.ndarray       # (N,) in [0, 1]
    area: np.ndarray    # (N,) fraction of the frame

    def at(self, times: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linearly interpolated (x, y, area) at `times` (held beyond the ends)."""
        tt = np.asarray(times, np.float64)
        return (np.interp(tt, self.t, self.x), np.interp(tt, self.t, self.y),
                np.exp(np.interp(tt, self.t, np.log(np.maximum(self.area, 1e-9)))))


@dataclass
class SourceLayer:
    """One sounding object: where it is and its (amplitude) share of the shot's sound."""

    track: PositionTrack
    share: np.ndarray   # (N,) on track.t
    label: str          # "object 3", "anchor at 1.230 s", "centre"


@dataclass
class SourceScene:
    """The shot's sounding objects on one time grid; shares sum to 1 at every moment."""

    t: np.ndarray
    layers: list[SourceLayer]

    def shares(self, times: np.ndarray | float) -> np.ndarray:
        """(layers, len(times)) shares, linearly interpolated."""
        tt = np.atleast_1d(np.asarray(times, np.float64))
        return np.stack([np.interp(tt, self.t, lay.share) for lay in self.layers])

    def heard(self, t: float) -> list[int]:
        """The layers heard at `t`: those with at least `SOUNDING` of the sound, else the loudest."""
        share = self.shares(t)[:, 0]
        return [int(i) for i in np.flatnonzero(share >= SOUNDING)] or [int(np.argmax(share))]

    def dominant(self) -> PositionTrack:
        """The position of the layer with the largest share at each grid time."""
        best = np.argmax(np.stack([lay.share for lay in self.layers]), axis=0)
        pick = [np.choose(best, [getattr(lay.track, k) for lay in self.layers]) for k in ("x", "y", "area")]
        return PositionTrack(self.t, *pick)


def rts_smooth(z: np.ndarray, dt: float, meas: float = MEAS_NOISE, accel: float = ACCEL_NOISE) -> np.ndarray:
    """Rauch–Tung–Striebel smoothed positions of (N,) measurements (constant velocity model)."""
    n = len(z)
    if n < 3:
        return np.asarray(z, np.float64).copy()
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = accel**2 * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
    r = meas**2
    xs, ps, xp, pp = np.zeros((n, 2)), np.zeros((n, 2, 2)), np.zeros((n, 2)), np.zeros((n, 2, 2))
    x, p = np.array([z[0], 0.0]), np.diag([r, 1.0])
    for i in range(n):
        if i:
            x, p = f @ x, f @ p @ f.T + q
        xp[i], pp[i] = x, p
        k = p[:, 0] / (p[0, 0] + r)
        x = x + k * (z[i] - x[0])
        p = p - np.outer(k, p[0])
        xs[i], ps[i] = x, p
    for i in range(n - 2, -1, -1):
        g = ps[i] @ f.T @ np.linalg.inv(pp[i + 1])
        xs[i] = xs[i] + g @ (xs[i + 1] - xp[i + 1])
        ps[i] = ps[i] + g @ (ps[i + 1] - pp[i + 1]) @ g.T
    return xs[:, 0]


def _velocity(track: Track, glob: np.ndarray, end: bool) -> np.ndarray:
    """The track's centroid velocity (px per pair) at its end or its start: from its two
    last (first) centroids, else its residual flow plus the camera's motion."""
    if len(track.pairs) >= 2:
        i, j = (-2, -1) if end else (0, 1)
        return (track.pos[j] - track.pos[i]) / (track.pairs[j] - track.pairs[i])
    k = track.pairs[-1 if end else 0]
    return track.disp[-1 if end else 0] + glob[k]


def _continues(a: Track, b: Track, glob: np.ndarray, w: float, h: float, max_gap: int) -> float | None:
    """How well `b` continues `a` after a break (0 = exactly where predicted), None if not."""
    gap = b.pairs[0] - a.pairs[-1]
    if not 1 <= gap <= max_gap or not 1 / STITCH_AREA <= b.area[0] / max(a.area[-1], 1e-9) <= STITCH_AREA:
        return None
    va, vb = _velocity(a, glob, True), _velocity(b, glob, False)
    speed = float(np.linalg.norm(va))
    radius = math.sqrt(max(a.area[-1], b.area[0]) * w * h / math.pi)
    gate = 4.0 + 0.5 * radius + 0.5 * speed * gap + float(np.linalg.norm(vb))
    dist = float(np.linalg.norm(b.pos[0] - (a.pos[-1] + va * gap)))
    if dist > gate or np.linalg.norm(vb - va) > max(2.0, speed):
        return None
    return dist / gate


def stitch_tracks(tracks: list[Track], features: dict[str, np.ndarray]) -> list[Track]:
    """Tracks with each broken one joined to its continuation (module docstring, step 2)."""
    w, h = (float(v) for v in features["size"])
    glob = np.asarray(features["global_motion"], np.float64) * w
    max_gap = max(1, int(round(STITCH_S * float(features["fps"]))))
    starting: dict[int, list[int]] = {}
    for j, b in enumerate(tracks):
        starting.setdefault(b.pairs[0], []).append(j)
    costs = sorted((c, i, j) for i, a in enumerate(tracks)
                   for k in range(a.pairs[-1] + 1, a.pairs[-1] + max_gap + 1) for j in starting.get(k, ())
                   if (c := _continues(a, tracks[j], glob, w, h, max_gap)) is not None)
    nxt: dict[int, int] = {}
    prev: dict[int, int] = {}
    for _, i, j in costs:
        if i not in nxt and j not in prev:
            nxt[i], prev[j] = j, i
    out = []
    for i in range(len(tracks)):
        if i in prev:
            continue
        chain = Track()
        while True:
            for key in ("pairs", "pos", "disp", "area", "border"):
                getattr(chain, key).extend(getattr(tracks[i], key))
            if i not in nxt:
                break
            i = nxt[i]
        out.append(chain)
    return out


@dataclass
class _Smoothed:
    """One track in picture units on frame times, smoothed."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    log_area: np.ndarray
    drive: np.ndarray      # speed (frame heights / s) · area^¼ per sample: what would sound

    def at(self, times: np.ndarray) -> np.ndarray:
        """(len(times), 3) x, y, log-area, held beyond the track's ends."""
        return np.stack([np.interp(times, self.t, v) for v in (self.x, self.y, self.log_area)], axis=1)

    def drive_at(self, times: np.ndarray) -> np.ndarray:
        """Drive at `times` (pair k stands for (k + ½) / fps), 0 outside the track."""
        dt = self.t[1] - self.t[0] if len(self.t) > 1 else 1.0
        mid = self.t + dt / 2
        inside = (times >= self.t[0]) & (times <= self.t[-1] + dt)
        return np.where(inside, np.interp(times, mid, self.drive), 0.0)


def _smoothed(track: Track, w: float, h: float, fps: float) -> _Smoothed:
    t = np.array(track.pairs, np.float64) / fps
    pos = np.array(track.pos) / [w, h]
    dt = 1.0 / fps
    x, y = rts_smooth(pos[:, 0], dt), rts_smooth(pos[:, 1], dt)
    log_area = rts_smooth(np.log(np.maximum(track.area, 1e-6)), dt, meas=0.3, accel=20.0)
    speed = np.linalg.norm(np.array(track.disp), axis=1) / h * fps
    drive = speed * np.power(np.maximum(track.area, 1e-6), 0.25)
    return _Smoothed(t, np.clip(x, 0, 1), np.clip(y, 0, 1), log_area, drive)


def _event_track(event: dict[str, Any], tracks: list[_Smoothed], fps: float) -> int | None:
    """Index of the track passing nearest the event's x, y at its time (within the gate)."""
    best, best_d = None, EVENT_GATE
    for i, tr in enumerate(tracks):
        near = np.abs(tr.t - event["t"]) <= EVENT_FRAMES / fps
        if not np.any(near):
            continue
        d = float(np.min(np.hypot(tr.x[near] - event["x"], tr.y[near] - event["y"])))
        if d < best_d:
            best, best_d = i, d
    return best


def event_objects(event: dict[str, Any], tracks: list[_Smoothed], contacts: list[list[Any]],
                  fps: float) -> dict[int, float]:
    """The tracks that make the event and their parts of it (step 4); {} for an anchor."""
    hits: dict[int, float] = {}
    for i, found in enumerate(contacts):
        for c in found:
            if abs(c.t - event["t"]) <= EVENT_FRAMES / fps:
                hits[i] = max(hits.get(i, 0.0), c.strength, 1e-3)
    if not hits:
        i = _event_track(event, tracks, fps)
        hits = {} if i is None else {i: 1.0}
    total = sum(hits.values())
    return {i: v / total for i, v in hits.items()}


def _transient(times: np.ndarray, event: dict[str, Any]) -> np.ndarray:
    """The event's weight: its strength from half a glide before the onset, then the decay, on
    the curve's RMS scale (× RMS_AT_FULL_STRENGTH, as the baseline's curve puts it), so it
    weighs against the sustained part (`sustained_part`, a piece of the curve) in the sound's
    own units."""
    dt = times - event["t"]
    shape = np.where(dt < -GLIDE_S / 2, 0.0, np.where(dt < ATTACK_S, 1.0, np.exp(-(dt - ATTACK_S) / DECAY_S)))
    return RMS_AT_FULL_STRENGTH * max(float(event.get("strength", 1.0)), 1e-3) * shape


def sustained_part(envelope: dict[str, Any], times: np.ndarray) -> np.ndarray:
    """The curve minus its events' transients at `times` (0 below `SUSTAIN_MIN`)."""
    curve = np.asarray(envelope["curve"], np.float64)
    if not len(curve):
        return np.zeros(len(times))
    rate = envelope["rate_hz"]
    rest = curve - envelope_curve(envelope.get("events", []), [], len(curve), rate)
    rest = np.interp(times, np.arange(len(curve)) / rate, np.maximum(rest, 0.0))
    return np.where(rest >= SUSTAIN_MIN, rest, 0.0)


def sliding_objects(tracks: list[_Smoothed], level: np.ndarray, times: np.ndarray) -> dict[int, np.ndarray]:
    """The tracks that make the sustained sound `level`, with their weight over time (step 5)."""
    if not np.any(level > 0) or not tracks:
        return {}
    drives = np.stack([tr.drive_at(times) if len(tr.t) >= SLIDE_PAIRS else np.zeros(len(times))
                       for tr in tracks])
    corr = np.array([_corr(d, level) for d in drives])
    best = float(corr.max())
    chosen = [i for i in range(len(tracks)) if corr[i] >= max(CORR_MIN, 0.5 * best)]
    if not chosen:
        chosen = [int(np.argmax(corr if best > 0 else drives.sum(axis=1)))]
    weights = _by_drive(drives, chosen, level)
    idle = (level > 0) & ~np.any([w > 0 for w in weights.values()], axis=0)
    if np.any(idle):      # the chosen are still: whoever else moves then (with any link to it)
        others = [i for i in range(len(tracks)) if i not in chosen and corr[i] > 0]
        for i, w in _by_drive(drives, others, level * idle).items():
            weights[i] = w
        idle &= ~np.any([w > 0 for w in weights.values()], axis=0)
    for k in np.flatnonzero(idle):          # nobody moves: the nearest chosen in time holds it
        near = [np.min(np.abs(np.flatnonzero(drives[i] > 0) - k), initial=len(level)) for i in chosen]
        weights[chosen[int(np.argmin(near))]][k] = level[k]
    return weights


def _by_drive(drives: np.ndarray, which: list[int], level: np.ndarray) -> dict[int, np.ndarray]:
    """`level` shared among the tracks `which` in proportion to their drive at each moment."""
    if not which:
        return {}
    d = drives[which]
    total = d.sum(axis=0)
    part = np.where(total > 0, d / np.maximum(total, 1e-12), 0.0)
    return {i: part[j] * level for j, i in enumerate(which)}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    both = float(np.std(a) * np.std(b))
    return float(np.mean((a - a.mean()) * (b - b.mean())) / both) if both > 0 else 0.0


def _shares(weights: np.ndarray, rate: float) -> np.ndarray:
    """(L, N) weights → shares summing to 1, held through silence, smoothed over GLIDE_S."""
    total = weights.sum(axis=0)
    on = total > 1e-6
    idx = np.where(on, np.arange(len(total)), -1)
    idx = np.maximum.accumulate(idx)                              # hold the last sounding moment
    first = int(np.argmax(on))
    idx = np.where(idx < 0, first, idx)                           # before the first: the first
    shares = weights[:, idx] / total[idx]
    n = max(1, int(round(GLIDE_S * rate)))
    if n > 1 and shares.shape[1] > n:
        kernel = np.hanning(n + 2)[1:-1]
        kernel /= kernel.sum()
        pad = np.pad(shares, ((0, 0), (n, n)), mode="edge")
        shares = np.stack([np.convolve(s, kernel, mode="same")[n:-n] for s in pad])
    return shares / shares.sum(axis=0)


def sounding_sources(features: dict[str, np.ndarray], envelope: dict[str, Any]) -> SourceScene:
    """The shot's sounding objects, where they are and when they sound (module docstring)."""
    fps = float(features["fps"])
    w, h = (float(v) for v in features["size"])
    times = np.arange(int(round(envelope["duration_s"] * GRID_HZ)) + 1) / GRID_HZ
    raw = stitch_tracks(track_regions(features), features)
    tracks = [_smoothed(tr, w, h, fps) for tr in raw]
    contacts = [track_contacts(tr, len(features["regions"]), w, h, fps) for tr in raw]
    weights: dict[Any, np.ndarray] = {}
    ref_log_area = math.log(A_REF)

    def add(key: Any, weight: np.ndarray) -> None:
        weights[key] = weights.get(key, 0.0) + weight

    for e in sorted(envelope.get("events", []), key=lambda e: e["t"]):
        objects = event_objects(e, tracks, contacts, fps)
        for i, part in objects.items():
            add(i, part * _transient(times, e))
        if not objects:
            add((e["x"], e["y"], ref_log_area), _transient(times, e))
    for i, weight in sliding_objects(tracks, sustained_part(envelope, times), times).items():
        add(i, weight)
    if not weights or not np.any(sum(weights.values()) > 1e-6):
        weights = {i: np.ones(len(times)) for i in sliding_objects(tracks, np.ones(len(times)), times)} \
            if tracks else {(0.5, 0.5, ref_log_area): np.ones(len(times))}
    keys = list(weights)
    shares = _shares(np.stack([np.broadcast_to(weights[k], times.shape) for k in keys]), GRID_HZ)
    layers = []
    for key, share in zip(keys, shares):
        if isinstance(key, int):
            v, label = tracks[key].at(times), f"object {key}"
        else:
            v, label = np.tile(np.array(key, np.float64), (len(times), 1)), f"anchor at x {key[0]:.3f}"
        layers.append(SourceLayer(PositionTrack(times, np.clip(v[:, 0], 0, 1), np.clip(v[:, 1], 0, 1),
                                                np.exp(v[:, 2])), share, label))
    return SourceScene(times, layers)


def fixed_sources(duration_s: float, x: float = 0.5, y: float = 0.5, area: float = A_REF) -> SourceScene:
    """A source that does not move (an override, or a shot with nothing to follow)."""
    t = np.array([0.0, max(duration_s, 1e-3)])
    track = PositionTrack(t, np.full(2, x), np.full(2, y), np.full(2, area))
    return SourceScene(t, [SourceLayer(track, np.ones(2), "fixed")])
