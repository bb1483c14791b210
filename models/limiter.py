"""The look-ahead peak limiter every rendered sound ends with: the sampler's and the diffusion
backend's mono stems, and a shot's spatial stems (one gain for all their channels and formats,
so the image holds and the formats agree).

A smooth gain (5 ms) keeps |audio| at or under the ceiling: the gain each sample needs, its
minimum over ±5 ms, then a 2.5 ms box, so every smoothed value is at most what its sample
needs; untouched (the same array) where the audio stays under.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

CEILING_DB = -1.0


def _peak(audio: np.ndarray) -> np.ndarray:
    """(n,) the largest |sample| across channels at each instant."""
    level = np.abs(np.asarray(audio, np.float64))
    if level.ndim == 2:
        level = level.max(axis=1) if level.shape[1] else np.zeros(len(level))
    return level


def _gain(level: np.ndarray, sr: int, ceiling: float) -> np.ndarray | None:
    """The smoothed gain that keeps `level` under `ceiling`, None where none is needed."""
    need = np.minimum(1.0, ceiling / np.maximum(level, 1e-30))
    if not len(need) or need.min() >= 1.0:
        return None
    half = max(1, int(0.005 * sr))
    # min over ±half then a box of ±half/2: every smoothed value at n is <= need[n]
    gain = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    return uniform_filter1d(gain, size=half | 1, mode="nearest")


def _apply(audio: np.ndarray, gain: np.ndarray, ceiling: float) -> np.ndarray:
    g = gain[:, None] if audio.ndim == 2 else gain
    return np.clip(audio * g, -ceiling, ceiling).astype(np.float32)


def peak_limit(audio: np.ndarray, sr: int, ceiling_db: float = CEILING_DB) -> np.ndarray:
    """`audio` (n,) or (n, channels) kept under `ceiling_db` (dBFS) by one gain that follows
    the loudest channel; float32 where it acts, `audio` itself where it need not."""
    ceiling = 10 ** (ceiling_db / 20)
    gain = _gain(_peak(audio), sr, ceiling)
    return audio if gain is None else _apply(audio, gain, ceiling)


def peak_limit_together(stems: dict[str, np.ndarray], sr: int,
                        ceiling_db: float = CEILING_DB) -> dict[str, np.ndarray]:
    """Several renderings of one sound (a shot's mono, B-format and decodes, all of length n)
    kept under `ceiling_db` by ONE gain, the one the loudest of them needs at each instant: a
    side source the binaural head shadow raises 6 dB turns every format down alike, so the
    delivered stereo stays the stereo decode of the delivered B-format. Untouched (the same
    arrays) where none needs it."""
    ceiling = 10 ** (ceiling_db / 20)
    levels = [_peak(a) for a in stems.values()]
    if not levels:
        return dict(stems)
    gain = _gain(np.max(np.stack(levels), axis=0), sr, ceiling)
    if gain is None:
        return dict(stems)
    return {kind: _apply(a, gain, ceiling) for kind, a in stems.items()}
