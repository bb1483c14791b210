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
_RISE_DB = 9.0  # level must rise this much above the reference to count as an attack
_SEARCH_S = (0.004, 0.010)  # sample-level refinement: from t_det-4 ms to t_det+10 ms
_ATTACK_REL_DB = -30.0  # attack start: first sample within 30 dB of the local peak ...
_NOISE_MARGIN = 1.5  # ... and louder than 1.5x the peak of what came just before


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


def _refine(x: np.ndarray, sr: int, t_det: int, floor: int) -> int:
    """Sample index of the attack start near the coarse detection sample `t_det`.

    The attack starts at the first sample whose magnitude is within 30 dB of the peak of the
    next 10 ms and clearly above the largest sample of the 20 ms that precede the search
    window (background noise or a previous sound's tail). `floor` bounds the search from below.
    """
    lo = max(floor, t_det - int(_SEARCH_S[0] * sr))
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
    audio: np.ndarray, sr: int, *, min_gap_s: float = 0.05, threshold_db: float = -40.0
) -> np.ndarray:
    """Onset times (seconds, ~1 ms precision) of the attacks in `audio`.

    Method: a 2 ms RMS envelope at a 0.25 ms hop is compared with the mean power of the
    21 ms that end 4 ms earlier; an onset is a rising crossing where the level is at least
    9 dB above that reference and above `threshold_db` (dBFS). Each detection is refined at
    sample level to the attack start (first sample within 30 dB of the local peak and above
    the preceding background, see `_refine`), so a one-shot whose leading silence was trimmed
    reports its first audible sample. Detections closer than `min_gap_s` to the previous
    onset are dropped. Silence gives an empty array.
    """
    x = _as_mono(audio)
    if len(x) == 0:
        return np.zeros(0)
    env = rms_envelope(x, sr, _FINE_RATE_HZ, _FINE_FRAME_S)
    level = _level_db(env)
    rising = (level - _reference_db(env, _FINE_RATE_HZ) >= _RISE_DB) & (level >= threshold_db)
    starts = np.flatnonzero(rising & ~np.concatenate([[False], rising[:-1]]))
    onsets: list[int] = []
    for frame in starts:
        t_det = int(round(frame * sr / _FINE_RATE_HZ))
        if onsets and t_det - onsets[-1] < min_gap_s * sr:
            continue
        floor = onsets[-1] + 1 if onsets else 0
        onset = _refine(x, sr, t_det, floor)
        if onsets and onset - onsets[-1] < min_gap_s * sr:
            continue
        onsets.append(onset)
    return np.asarray(onsets, dtype=np.float64) / sr


def attack_start(audio: np.ndarray, sr: int, *, rel_threshold_db: float = -30.0) -> int | None:
    """Sample index where the first attack of a recording starts, or None for silence.

    Level-independent: onsets are searched `rel_threshold_db` below the loudest 2 ms of the
    file, so low-level noise or ticks before the real attack are skipped. A sound that swells
    without a detectable attack starts at its first 2 ms frame above that threshold.
    """
    x = _as_mono(audio)
    env = rms_envelope(x, sr, _FINE_RATE_HZ, _FINE_FRAME_S)
    if env.size == 0 or float(env.max()) <= EPS:
        return None
    threshold_db = float(_level_db(env).max()) + rel_threshold_db
    onsets = detect_onsets(x, sr, threshold_db=threshold_db)
    if onsets.size:
        return int(round(onsets[0] * sr))
    first = int(np.flatnonzero(_level_db(env) >= threshold_db)[0])
    return int(round(first * sr / _FINE_RATE_HZ))
