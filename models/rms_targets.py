"""The RMS-Mapper's target: a smoothed RMS curve at 125 Hz, as 64 µ-law classes.

One definition, used by training, inference, evaluation and tests (Stable-V2A's stage 1):

- `rms_target`: mono, 16 kHz, RMS over 512-sample frames every 128 samples (125 Hz), frames
  centred on sample k · 128 with zeros outside the signal (librosa.feature.rms, center=True,
  pad_mode="constant"), so T = len(audio16k) // 128 + 1 and frame k is the instant k / 125 s
  from the start of the audio; then a 15-frame (120 ms) centred moving average.
- Classes: the RMS clipped to [0, 1], µ-law compressed with µ = 255, rounded to one of 64
  equally spaced levels c / 63 (class 0 is exact silence, class 63 full scale).
- Training targets are Gaussian-smoothed class distributions (`smooth_labels`); a prediction
  is read back as a curve by its expectation in the µ-law domain (`decode_probs`).
- Onsets (the model's second head): `onset_target` puts a Gaussian bump (σ = 1.5 frames,
  12 ms, peak 1) at each true onset on the same 125 Hz grid. The curve above is smoothed over
  120 ms, so two contacts 80 ms apart merge in it; the onset head keeps them apart and says
  *whether* a contact sounds where the loudness alone cannot (a soft hit under room tone).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SR = 16000
FRAME = 512
HOP = 128
RATE_HZ = SR / HOP  # 125.0
SMOOTH = 15
N_CLASSES = 64
MU = 255.0
SIGMA = 1.0  # label smoothing, in classes; one class ≈ 0.8 dB at -20 dBFS, 1.7 dB at -50 dBFS
_CONFIDENCE_HALF_WIDTH = 2.5  # classes either side of the expectation that count as "backing" it


def _to_16k_mono(audio: np.ndarray, sr: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:  # (samples, channels), as soundfile reads it
        x = x.mean(axis=1)
    assert x.ndim == 1, f"expected (samples,) or (samples, channels) audio, got {x.shape=}"
    if sr != SR and len(x):
        import soxr  # imported here: only targets from other rates need it

        x = soxr.resample(x, sr, SR, quality="HQ")
    return x


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average, same length; at the ends the mean of the frames that exist.

    Zero padding would fade every clip in and out over 60 ms, and a clip cut from inside a
    sound would then teach the model fades that are not in the picture.
    """
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo = np.clip(idx - width // 2, 0, len(x))
    hi = np.clip(idx + width // 2 + 1, 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def rms_target(audio: np.ndarray, sr: int) -> np.ndarray:
    """Smoothed RMS at 125 Hz (float32, length len(audio at 16 kHz) // 128 + 1).

    The 16 kHz length is soxr's (round(len(audio) · 16000 / sr) up to soxr's rounding), so a
    clip of d seconds gives T = floor(d · 125) + 1 frames, frame k at k / 125 s.
    """
    x = _to_16k_mono(audio, sr)
    n_frames = len(x) // HOP + 1
    power = np.concatenate([[0.0], np.cumsum(x * x)])  # power[i] = sum of x[:i]**2
    start = np.clip(np.arange(n_frames) * HOP - FRAME // 2, 0, len(x))
    stop = np.clip(np.arange(n_frames) * HOP + FRAME // 2, 0, len(x))
    energy = np.maximum(power[stop] - power[start], 0.0)  # cumsum round-off can dip below 0
    rms = np.sqrt(energy / FRAME)
    return _moving_average(rms, SMOOTH).astype(np.float32)


def mu_compress(rms: np.ndarray) -> np.ndarray:
    """RMS clipped to [0, 1] → µ-law level in [0, 1] (float64)."""
    x = np.clip(np.asarray(rms, dtype=np.float64), 0.0, 1.0)
    return np.log1p(MU * x) / math.log1p(MU)


def mu_expand(level: np.ndarray) -> np.ndarray:
    """µ-law level in [0, 1] → RMS (float64); the inverse of `mu_compress` on [0, 1]."""
    y = np.clip(np.asarray(level, dtype=np.float64), 0.0, 1.0)
    return np.expm1(y * math.log1p(MU)) / MU


def mu_encode(rms: np.ndarray) -> np.ndarray:
    """RMS → class in [0, 63] (int64): the nearest of the levels c / 63 after µ-law.

    Values above 1 (a clipped mix) are class 63 and negative values class 0.
    """
    return np.rint(mu_compress(rms) * (N_CLASSES - 1)).astype(np.int64)


def mu_decode(classes: np.ndarray) -> np.ndarray:
    """Class (or a fractional class, e.g. an expectation) → RMS (float32)."""
    level = np.asarray(classes, dtype=np.float64) / (N_CLASSES - 1)
    return mu_expand(level).astype(np.float32)


ONSET_SIGMA = 1.5  # frames (12 ms)


def onset_target(onsets_s: Sequence[float], n_frames: int, sigma: float = ONSET_SIGMA) -> np.ndarray:
    """(n_frames,) float32 in [0, 1]: a Gaussian bump of peak 1 at each onset (s) on the 125 Hz
    grid (frame k at k / 125 s); overlapping bumps take the larger value."""
    y = np.zeros(n_frames, dtype=np.float64)
    k = np.arange(n_frames)
    reach = int(math.ceil(4 * sigma))
    for t in onsets_s:
        c = float(t) * RATE_HZ
        lo, hi = max(0, int(c) - reach), min(n_frames, int(c) + reach + 2)
        if lo < hi:
            y[lo:hi] = np.maximum(y[lo:hi], np.exp(-0.5 * ((k[lo:hi] - c) / sigma) ** 2))
    return y.astype(np.float32)


def smooth_labels(classes: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """(T,) classes → (T, 64) float32 Gaussian distributions over classes, rows summing to 1.

    A neighbouring class is a near miss, not a wrong answer; sigma = 0 gives one-hot rows.
    """
    k = np.asarray(classes, dtype=np.int64)
    assert k.ndim == 1, f"expected (T,) classes, got {k.shape=}"
    if sigma <= 0:
        return np.eye(N_CLASSES, dtype=np.float32)[k]
    d = np.arange(N_CLASSES)[None, :] - k[:, None]  # (T, 64)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def decode_probs(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 64) class probabilities → (curve (T,), confidence (T,)), both float32.

    The curve is the expected class (in the µ-law domain, where classes are equally spaced)
    decoded to RMS: unlike the argmax it moves smoothly as probability shifts between
    neighbouring classes, instead of stepping by whole classes. Confidence is the probability
    within ±2.5 classes of that expectation — the mass that backs the decoded value (≈ 0.99 for
    a prediction shaped like the σ = 1 training labels; low when the model hesitates between
    two levels, e.g. silence or a hit, whose average is neither).
    """
    p = np.asarray(probs, dtype=np.float64)
    assert p.ndim == 2 and p.shape[1] == N_CLASSES, f"expected (T, {N_CLASSES}) probabilities, got {p.shape=}"
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    classes = np.arange(N_CLASSES)
    expected = p @ classes  # (T,) fractional class
    near = np.abs(classes[None, :] - expected[:, None]) <= _CONFIDENCE_HALF_WIDTH
    confidence = (p * near).sum(axis=1)
    return mu_decode(expected), confidence.astype(np.float32)


def resample_curve(curve: np.ndarray, from_hz: float, to_hz: float, n_out: int | None = None) -> np.ndarray:
    """A curve sampled at k / from_hz, linearly interpolated at j / to_hz (float32).

    For 125 Hz ↔ the pass's 100 Hz envelope: the targets are smoothed over 120 ms, far below
    either Nyquist rate, so linear interpolation loses nothing that matters. `n_out` defaults
    to round(len(curve) · to_hz / from_hz); pass round(duration_s · 100) for an envelope.
    Beyond the last input sample the last value is held.
    """
    c = np.asarray(curve, dtype=np.float64)
    if n_out is None:
        n_out = int(round(len(c) * to_hz / from_hz))
    if len(c) == 0:
        return np.zeros(n_out, dtype=np.float32)
    t_out = np.arange(n_out) / to_hz
    return np.interp(t_out, np.arange(len(c)) / from_hz, c).astype(np.float32)
