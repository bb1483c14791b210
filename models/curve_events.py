"""Events (onsets with sub-frame times, strength, confidence) read off a predicted RMS curve.

The targets the RMS-Mapper learns are smoothed (`models.rms_targets`, a 15-frame centred
moving average at 125 Hz): a hit's rise in the curve is spread over ~120 ms around the hit.
An onset is read where the curve rises by at least `rise_db` above its level just before and
reaches a peak; its time is where the curve crosses half-way (linear RMS) from that level to
the peak, interpolated between frames (sub-frame), minus `offset_s` — the systematic lag of
the half-way crossing behind the true onset for the smoothing in use, measured on training
data and stored with the checkpoint (`calibrate_offset`).

Strength maps the peak level to [0, 1] linearly in dB over `STRENGTH_RANGE_DB` below full
scale; confidence is the model's own (mean per-frame confidence around the peak).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STRENGTH_RANGE_DB = 48.0
FLOOR = 10 ** (-60 / 20)


def level_db(curve: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    """The curve in dB, floored at `floor` (default FLOOR, −60 dB)."""
    return 20 * np.log10(np.maximum(curve, floor))


def events_from_curve(
    curve: np.ndarray,
    rate_hz: float,
    confidence: np.ndarray | None = None,
    *,
    rise_db: float = 6.0,
    look_back_s: float = 0.06,
    min_gap_s: float = 0.06,
    min_peak_db: float = -45.0,
    offset_s: float = 0.0,
) -> list[dict[str, float]]:
    """Onsets in `curve` as [{"t", "strength", "confidence", "peak"}], t in seconds."""
    c = np.maximum(np.asarray(curve, dtype=np.float64), FLOOR)
    n = len(c)
    if n < 3:
        return []
    db = 20 * np.log10(c)
    back = max(1, int(round(look_back_s * rate_hz)))
    gap = max(1, int(round(min_gap_s * rate_hz)))
    conf = np.ones(n) if confidence is None else np.asarray(confidence, dtype=np.float64)
    events: list[dict[str, float]] = []
    i, last_peak = 1, -gap
    while i < n - 1:
        lo = max(0, i - back)
        base_i = lo + int(np.argmin(db[lo:i]))
        if db[i] - db[base_i] >= rise_db and db[i] >= db[i - 1]:
            p = i
            while p + 1 < n and db[p + 1] >= db[p]:  # climb to the peak
                p += 1
            if db[p] >= min_peak_db and p - last_peak >= gap:
                base, peak = c[base_i], c[p]
                half = base + 0.5 * (peak - base)
                k = base_i + 1
                while k < p and c[k] < half:
                    k += 1
                prev = c[k - 1]
                frac = (half - prev) / (c[k] - prev) if c[k] > prev else 0.0
                t = (k - 1 + float(np.clip(frac, 0.0, 1.0))) / rate_hz - offset_s
                peak_db = float(db[p])
                events.append({
                    "t": max(0.0, t),
                    "strength": float(np.clip(1 + peak_db / STRENGTH_RANGE_DB, 0.0, 1.0)),
                    "confidence": float(np.mean(conf[max(0, k - 2):p + 1])),
                    "peak": float(peak)})
                last_peak = p
            i = p + 1
            continue
        i += 1
    return events


def onset_peaks(prob: np.ndarray, rate_hz: float, threshold: float, *, min_gap_s: float = 0.06,
                offset_s: float = 0.0) -> list[dict[str, float]]:
    """Onsets read off a per-frame onset probability (the RMS-Mapper's onset head):
    [{"t", "p"}] at local maxima of at least `threshold`, at least `min_gap_s` apart (the
    higher one wins), t at the vertex of the parabola through the peak and its neighbours
    (sub-frame) minus `offset_s`."""
    p = np.asarray(prob, dtype=np.float64)
    n = len(p)
    if n == 0:
        return []
    gap = max(1, int(round(min_gap_s * rate_hz)))
    left = np.concatenate([[-np.inf], p[:-1]])
    right = np.concatenate([p[1:], [-np.inf]])
    cands = np.flatnonzero((p >= threshold) & (p >= left) & (p > right))
    kept: list[int] = []
    for k in sorted(cands, key=lambda i: -p[i]):
        if all(abs(k - j) >= gap for j in kept):
            kept.append(int(k))
    out = []
    for k in sorted(kept):
        frac = 0.0
        if 0 < k < n - 1:
            a, b, c = p[k - 1], p[k], p[k + 1]
            den = a - 2 * b + c
            frac = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0
        out.append({"t": max(0.0, (k + frac) / rate_hz - offset_s), "p": float(p[k])})
    return out


def calibrate_offset(found: Sequence[Sequence[float]], truth: Sequence[Sequence[float]],
                     tol: float = 0.1) -> float:
    """The median lag (s) of detected onsets behind true ones over many clips (pairs within
    `tol`, nearest first); what `events_from_curve(offset_s=…)` subtracts."""
    lags = []
    for pred, true in zip(found, truth):
        used: set[int] = set()
        for t in true:
            cands = [(abs(p - t), j) for j, p in enumerate(pred) if j not in used
                     and abs(p - t) <= tol]
            if cands:
                _, j = min(cands)
                used.add(j)
                lags.append(pred[j] - t)
    return float(np.median(lags)) if lags else 0.0
