"""The one place where audio becomes an envelope, and where attacks are found.

`rms_envelope` is the envelope the whole project agrees on: the envelope model is trained to
predict it, the sampler renders towards it, tests measure with it. `detect_onsets` and
`attack_start` share one attack definition so that the library's attack trim, the sampler's
placement and the tests that check placement all mean the same instant.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12

# Onset detection (see detect_onsets): fine envelope, reference window and rise criterion.
_FINE_RATE_HZ = 4000.0  # 0.25 ms hop
_FINE_FRAME_S = 0.002  # 2 ms window
_REF_SPAN_S = (0.025, 0.004)  # reference = mean power from t-25 ms to t-4 ms
_RISE_DB = 6.0  # level must rise this much above the reference to count as an attack
_SEARCH_S = (0.004, 0.010)  # sample-level refinement: from t_det-4 ms to t_det+10 ms
_ATTACK_REL_DB = -20.0  # attack start: first sample within 20 dB of the local peak ...
_NOISE_MARGIN = 1.5  # ... and louder than 1.5x the peak of what came just before
_CLEAR_ATTACK_DB = 10.0  # attack_start: an onset this far above the 10 ms before it is an attack
_SWELL_REL_DB = -40.0  # attack_start without a clear attack: first frame within 40 dB of max


def _as_mono(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    assert x.ndim == 1, f"expected mono audio, got {x.shape=}"
    return x


def rms_envelope(
    audio: np.ndarray, sr: int, rate_hz: float = 100.0, frame_s: float | None = None
) -> np.ndarray:
    """Linear RMS of mono audio at `rate_hz`, one value per hop.

    Frame k is centred on sample round(k * sr / rate_hz) (like librosa's center=True), the
    signal is treated as zero outside its extent, and the frame lasts `frame_s` (default two
    hops). Output length is round(len(audio) / sr * rate_hz); values are float32.
    """
    x = _as_mono(audio)
    n_out = int(round(len(x) / sr * rate_hz))
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    frame = max(1, int(round((frame_s if frame_s is not None else 2.0 / rate_hz) * sr)))
    power = np.concatenate([[0.0], np.cumsum(x * x)])  # power[i] = sum of x[:i]**2
    centres = np.round(np.arange(n_out) * (sr / rate_hz)).astype(np.int64)
    start = np.clip(centres - frame // 2, 0, len(x))
    stop = np.clip(centres - frame // 2 + frame, 0, len(x))
    energy = np.maximum(power[stop] - power[start], 0.0)  # cumsum round-off can dip below 0
    return np.sqrt(energy / frame).astype(np.float32)


def _level_db(env: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(env.astype(np.float64), EPS))


def _reference_db(env: np.ndarray, rate_hz: float) -> np.ndarray:
    """Mean power (dB) of the fine envelope over the window [t-25 ms, t-4 ms] before each t."""
    far, near = (int(round(s * rate_hz)) for s in _REF_SPAN_S)
    power = np.concatenate([[0.0], np.cumsum(env.astype(np.float64) ** 2)])
    idx = np.arange(len(env))
    lo, hi = np.clip(idx - far, 0, None), np.clip(idx - near, 0, None)
    mean = (power[hi] - power[lo]) / (far - near)  # zero-padded before the start
    return 10.0 * np.log10(np.maximum(mean, EPS))


def _refine(x: np.ndarray, sr: int, t_det: int) -> int:
    """Sample index of the attack start near the coarse detection sample `t_det`.

    The attack starts at the first sample whose magnitude is within 20 dB of the peak of the
    next 10 ms and clearly above the largest sample of the 20 ms that precede the search
    window (background noise or a previous sound's tail).
    """
    lo = max(0, t_det - int(_SEARCH_S[0] * sr))
    hi = min(len(x), t_det + int(_SEARCH_S[1] * sr))
    if hi <= lo:
        return max(lo, 0)
    seg = np.abs(x[lo:hi])
    before = np.abs(x[max(0, lo - int(0.020 * sr)) : lo])
    background = float(before.max()) if before.size else 0.0
    threshold = max(float(seg.max()) * 10 ** (_ATTACK_REL_DB / 20), _NOISE_MARGIN * background)
    above = np.flatnonzero(seg > threshold)
    return lo + int(above[0]) if above.size else t_det


def detect_onsets(
    audio: np.ndarray, sr: int, *, min_gap_s: float = 0.05, threshold_db: float = -40.0,
    rise_db: float = _RISE_DB,
) -> np.ndarray:
    """Onset times (seconds, ~1 ms precision) of the attacks in `audio`.

    Method: a 2 ms RMS envelope at a 0.25 ms hop is compared with the mean power of the
    21 ms that end 4 ms earlier; an onset is a rising crossing where the level is at least
    `rise_db` (6 dB) above that reference and above `threshold_db` (dBFS). Each detection is
    refined at sample level to the attack start (first sample within 20 dB of the local peak
    and above the preceding background, see `_refine`), so a one-shot whose leading silence
    was trimmed reports its first audible sample. Of detections closer than `min_gap_s` only
    the one with the largest rise is kept (so beating in a ringing tail cannot mask the next
    real hit).
    Silence gives an empty array.
    """
    x = _as_mono(audio)
    if len(x) == 0:
        return np.zeros(0)
    env = rms_envelope(x, sr, _FINE_RATE_HZ, _FINE_FRAME_S)
    level = _level_db(env)
    rise = level - _reference_db(env, _FINE_RATE_HZ)
    rising = (rise >= rise_db) & (level >= threshold_db)
    starts = np.flatnonzero(rising & ~np.concatenate([[False], rising[:-1]]))
    # candidate onsets with their strength: the largest rise within 2 ms of the crossing
    span = int(0.002 * _FINE_RATE_HZ)
    candidates = [
        (float(rise[f : f + span].max()), _refine(x, sr, int(round(f * sr / _FINE_RATE_HZ))))
        for f in starts
    ]
    # non-maximum suppression: the strongest attack wins within min_gap_s
    kept: list[int] = []
    for _, onset in sorted(candidates, key=lambda c: (-c[0], c[1])):
        if all(abs(onset - k) >= min_gap_s * sr for k in kept):
            kept.append(onset)
    return np.asarray(sorted(kept), dtype=np.float64) / sr


def attack_start(audio: np.ndarray, sr: int, *, rel_threshold_db: float = -24.0) -> int | None:
    """Sample index where a recording's sound starts, or None for silence.

    Level-independent. If the first onset within `rel_threshold_db` of the loudest 2 ms is a
    clear attack (the 10 ms after it at least 10 dB above the 10 ms before it), that onset is
    the start; low-level noise or ticks before it are skipped. Otherwise (a swell: whoosh,
    creak, texture) the sound starts at the first 2 ms frame within 40 dB of the loudest.
    """
    x = _as_mono(audio)
    env = rms_envelope(x, sr, _FINE_RATE_HZ, _FINE_FRAME_S)
    if env.size == 0 or float(env.max()) <= EPS:
        return None
    level = _level_db(env)
    # min_gap 0: the earliest onset counts, even when a stronger one follows closely
    onsets = detect_onsets(x, sr, min_gap_s=0.0, threshold_db=float(level.max()) + rel_threshold_db)
    if onsets.size:
        onset = int(round(onsets[0] * sr))
        ms = sr // 1000
        before = _power_db(x[max(0, onset - 12 * ms) : max(0, onset - 2 * ms)])
        if _power_db(x[onset : onset + 10 * ms]) - before >= _CLEAR_ATTACK_DB:
            return onset
    first = int(np.flatnonzero(level >= level.max() + _SWELL_REL_DB)[0])
    return max(0, int(round(first * sr / _FINE_RATE_HZ)) - int(_FINE_FRAME_S * sr) // 2)


def _power_db(x: np.ndarray) -> float:
    return 10.0 * np.log10(float(np.mean(x * x)) + EPS) if x.size else 10.0 * np.log10(EPS)
