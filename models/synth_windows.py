"""Any length from a fixed-length generator: overlapping windows joined by equal-power crossfades.

A shot of n samples is covered by K windows of the same length W (the generator's trained
context), K = ceil((n − O) / (W − O)) for a minimum overlap O, their starts spread evenly
from 0 to n − W and rounded to the mel hop, so each window's slice of the envelope control
lines up with its own frames. Where windows i and i+1 overlap (≥ O samples) the earlier one
fades out with cos(π/2 · u) and the later one fades in with sin(π/2 · u), u ∈ (0, 1):
cos² + sin² = 1, so two independently generated (uncorrelated) renderings of the same
envelope keep their power through the border — no dip (a linear crossfade loses 3 dB in the
middle) and no bump. Each window is rendered by the caller's `render(index, start, length)`,
which sees where it sits in the shot (to slice the control) and seeds its own generator from
the index, so a window's audio does not depend on how many windows came before it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from models.audio_repr import HOP

Render = Callable[[int, int, int], np.ndarray]  # (window index, start, length) → (length,)


def window_starts(n: int, window: int, overlap: int, align: int = HOP) -> list[int]:
    """Start samples of equal-length windows covering n samples with at least `overlap`."""
    assert 0 <= overlap < window, f"{overlap=} must be smaller than {window=}"
    if n <= window:
        return [0]
    count = int(np.ceil((n - overlap) / (window - overlap)))
    starts = np.linspace(0, n - window, count)
    return [min(int(round(s / align)) * align, n - window) for s in starts]


def equal_power_fades(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) over n samples with fade_in² + fade_out² = 1."""
    u = (np.arange(n) + 0.5) / max(n, 1)
    return np.sin(0.5 * np.pi * u), np.cos(0.5 * np.pi * u)


def render_windowed(n: int, window: int, overlap: int, render: Render,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """n samples from `render` windows of `window` samples, crossfaded (see module doc)."""
    starts = window_starts(n, window, overlap)
    out = np.zeros(n, np.float64)
    for i, start in enumerate(starts):
        length = min(window, n - start)
        audio = np.asarray(render(i, start, length), dtype=np.float64)
        assert audio.shape == (length,), f"window {i}: {audio.shape=}, expected ({length},)"
        gain = np.ones(length)
        if i > 0:  # fade in over the overlap with the previous window
            ov = starts[i - 1] + window - start
            gain[:ov] *= equal_power_fades(ov)[0]
        if i + 1 < len(starts):  # fade out over the overlap with the next window
            ov = start + window - starts[i + 1]
            gain[length - ov:] *= equal_power_fades(ov)[1]
        out[start:start + length] += audio * gain
        if progress is not None:
            progress(i + 1, len(starts))
    return out.astype(np.float32)
