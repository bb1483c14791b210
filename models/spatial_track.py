"""Where a shot's sound is, frame by frame: the sounding region tracked in the picture.

Input: the feature dict of `tasks.features` (moving regions per frame pair) and the shot's
envelope (events with t, x, y). Output: a `PositionTrack` — picture x, y and region area on the
shot's frame grid — that `models.spatial_render` turns into azimuth, elevation and distance
through the camera model.

Method
1. Tracks. Moving regions are linked pair to pair by the motion baseline's tracker
   (`models.motion_baseline.track_regions`); region k's centroid is taken at frame k.
2. Smoothing. Each track's x, y and log-area are smoothed with a Rauch–Tung–Striebel
   smoother (constant-velocity Kalman model, per axis): measurement noise 1 % of the frame
   (flow-mask centroids jitter), process noise 2 frame widths/s² — a bounce or a footfall stays
   sharp, centroid jitter goes.
3. Which object sounds. Each event is matched to the track that passes nearest its (x, y)
   within two frames of its time (gate: 15 % of the frame); at any moment the source is the
   object of the latest event (before the first event: the first event's object, which is
   falling or walking into it). An event no track explains is a fixed anchor at its own x, y.
   A shot without events (a slide, a rub) follows the track whose speed · area^¼ (the
   weighting the baseline gives a sliding sound) correlates best with the envelope's curve
   over the shot — the object that moves when the sound is loud, not a fast distractor
   crossing in silence. Between
   its samples (before a track starts, after it ends) a track holds its nearest position.
   No motion at all: the centre of the picture at the reference distance.
4. The source switches between objects through a 40 ms raised-cosine glide (the renderer's
   gains are interpolated per sample, so a switch is never a click).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.motion_baseline import Track, track_regions
from models.spatial import A_REF

MEAS_NOISE = 0.01        # picture units
ACCEL_NOISE = 2.0        # picture units / s²
EVENT_GATE = 0.15        # picture units
EVENT_FRAMES = 2.0
GLIDE_S = 0.04


@dataclass
class PositionTrack:
    """Picture position of the sound on a regular time grid (seconds from the shot's start)."""

    t: np.ndarray       # (N,)
    x: np.ndarray       # (N,) in [0, 1]
    y: np.ndarray       # (N,) in [0, 1]
    area: np.ndarray    # (N,) fraction of the frame

    def at(self, times: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linearly interpolated (x, y, area) at `times` (held beyond the ends)."""
        tt = np.asarray(times, np.float64)
        return (np.interp(tt, self.t, self.x), np.interp(tt, self.t, self.y),
                np.exp(np.interp(tt, self.t, np.log(np.maximum(self.area, 1e-9)))))


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


def _smoothed(track: Track, w: float, h: float, fps: float) -> _Smoothed:
    t = np.array(track.pairs, np.float64) / fps
    pos = np.array(track.pos) / [w, h]
    dt = 1.0 / fps
    x, y = rts_smooth(pos[:, 0], dt), rts_smooth(pos[:, 1], dt)
    log_area = rts_smooth(np.log(np.maximum(track.area, 1e-6)), dt, meas=0.3, accel=20.0)
    speed = np.linalg.norm(np.array(track.disp), axis=1) / h * fps
    drive = speed * np.power(np.maximum(track.area, 1e-6), 0.25)
    return _Smoothed(t, np.clip(x, 0, 1), np.clip(y, 0, 1), log_area, drive)


def _loudest_mover(tracks: list[_Smoothed], envelope: dict[str, Any], times: np.ndarray) -> int:
    """Index of the track whose motion follows the envelope's curve best (largest drive if the
    curve is flat)."""
    curve = np.asarray(envelope["curve"], np.float64)
    level = np.interp(times, np.arange(len(curve)) / envelope["rate_hz"], curve) if len(curve) else \
        np.zeros(len(times))
    scores = []
    for tr in tracks:
        drive = np.zeros(len(times))
        idx = np.clip(np.searchsorted(times, tr.t), 0, len(times) - 1)
        drive[idx] = tr.drive
        both = np.std(drive) * np.std(level)
        corr = float(np.mean((drive - drive.mean()) * (level - level.mean())) / both) if both > 0 else 0.0
        scores.append((corr, float(drive.sum())))
    return int(max(range(len(tracks)), key=lambda i: scores[i]))


def _event_track(event: dict[str, Any], tracks: list[_Smoothed], fps: float) -> int | None:
    """Index of the track that explains the event (nearest within the gate), else None."""
    best, best_d = None, EVENT_GATE
    for i, tr in enumerate(tracks):
        near = np.abs(tr.t - event["t"]) <= EVENT_FRAMES / fps
        if not np.any(near):
            continue
        d = float(np.min(np.hypot(tr.x[near] - event["x"], tr.y[near] - event["y"])))
        if d < best_d:
            best, best_d = i, d
    return best


def _glide(values: np.ndarray, switch: np.ndarray, rate: float) -> np.ndarray:
    """Replace each step at a source switch by a GLIDE_S raised-cosine ramp."""
    out = values.copy()
    half = max(1, int(round(GLIDE_S * rate / 2)))
    for i in np.flatnonzero(switch):
        lo, hi = max(0, i - half), min(len(values) - 1, i + half)
        if hi <= lo:
            continue
        u = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, hi - lo + 1))
        out[lo:hi + 1] = values[lo] + (values[hi] - values[lo]) * u[:, None]
    return out


def sounding_track(features: dict[str, np.ndarray], envelope: dict[str, Any]) -> PositionTrack:
    """The picture position of the shot's sound over time (see the module docstring)."""
    fps = float(features["fps"])
    w, h = (float(v) for v in features["size"])
    n = max(int(round(envelope["duration_s"] * fps)), 1)
    times = np.arange(n + 1) / fps
    tracks = [_smoothed(tr, w, h, fps) for tr in track_regions(features)]
    events = sorted(envelope.get("events", []), key=lambda e: e["t"])
    ref_log_area = math.log(A_REF)
    sources: list[Any] = []  # per event: a track index or a fixed (x, y, log-area)
    for e in events:
        i = _event_track(e, tracks, fps)
        sources.append(i if i is not None else (e["x"], e["y"], ref_log_area))
    if events:
        starts = np.array([e["t"] for e in events])
        which = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(events) - 1)
    else:
        which = np.zeros(len(times), int)
        sources = [_loudest_mover(tracks, envelope, times)] if tracks else [(0.5, 0.5, ref_log_area)]
    values = np.zeros((len(times), 3))
    for k, src in enumerate(sources):
        sel = which == k
        if np.any(sel):
            values[sel] = tracks[src].at(times[sel]) if isinstance(src, int) else src
    key = [s if isinstance(s, int) else ("fixed", k) for k, s in enumerate(sources)]
    switch = np.zeros(len(times), bool)
    switch[1:] = [key[a] != key[b] for a, b in zip(which[:-1], which[1:])]
    values = _glide(values, switch, fps)
    return PositionTrack(times, np.clip(values[:, 0], 0, 1), np.clip(values[:, 1], 0, 1),
                         np.exp(values[:, 2]))


def fixed_track(duration_s: float, x: float = 0.5, y: float = 0.5, area: float = A_REF) -> PositionTrack:
    """A source that does not move (an override, or a shot with nothing to follow)."""
    t = np.array([0.0, max(duration_s, 1e-3)])
    return PositionTrack(t, np.full(2, x), np.full(2, y), np.full(2, area))
