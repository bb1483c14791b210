"""Parametric (DirAC-style, Pulkki 2007) decoding of first-order B-format: the binaural and
5.1 renders.

A fixed first-order decode images broadly: on a 5.1 layout it plays a centred source about
equally from L, C and R, and sends a side source into the far speakers with inverted
polarity (−10 dB into R at +90°), which sounds phasey away from the centre seat. So, as the
binaural render does, the decode works per short-time Fourier tile (1024-point Hann, hop
256): the active intensity vector I = Re(W*·[X, Y, Z]) and the energy
E = (|W|² + |X|² + |Y|² + |Z|²)/2 are smoothed over 30 ms; the direction is I/|I| and the
diffuseness ψ = 1 − |I|/E. The direct part √(1 − ψ)·W is rendered at that direction (5.1:
power-normalised 2-D VBAP between the two speakers around it, all gains ≥ 0; binaural: the
head model), the diffuse part √ψ·B by a fixed decode. A single source — every Foley stem
of a shot — is therefore panned as a panner would: at 0° from C alone, at +15° between C
and L, at +70° between L and Ls; a moving source follows from tile to tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import istft, lfilter, stft

from models import spatial

NFFT, HOP = 1024, 256
SMOOTH_S = 0.03
_VBAP_STEP = math.radians(0.25)  # the 5.1 direct part's gain table


@dataclass(frozen=True)
class Tiles:
    """The analysis of one B-format signal: frequencies (F,), spectra (4, F, T) in AmbiX order,
    diffuseness (F, T) and unit direction (F, T, 3) as (x forward, y left, z up)."""

    n: int
    freqs: np.ndarray
    spec: np.ndarray
    psi: np.ndarray
    direction: np.ndarray


def _smooth(x: np.ndarray, sr: int) -> np.ndarray:
    """One-pole smoothing over STFT frames (last axis), time constant SMOOTH_S."""
    a = math.exp(-HOP / (SMOOTH_S * sr))
    return lfilter([1 - a], [1, -a], x, axis=-1)


def analyse(ambix: np.ndarray, sr: int) -> Tiles:
    """Direction and diffuseness of every time-frequency tile of (n, 4) AmbiX."""
    b = np.asarray(ambix, np.float64)
    f, _, spec = stft(b.T, fs=sr, window="hann", nperseg=NFFT, noverlap=NFFT - HOP,
                      boundary="zeros", padded=True)                       # (4, F, T)
    w, y, z, x = spec
    inten = np.real(np.conj(w)[None] * np.stack([x, y, z]))                # (3, F, T)
    energy = 0.5 * np.sum(np.abs(spec) ** 2, axis=0)                       # (F, T)
    inten_s, energy_s = _smooth(inten, sr), _smooth(energy, sr)
    norm = np.linalg.norm(inten_s, axis=0)
    psi = np.clip(1 - norm / np.maximum(energy_s, 1e-30), 0.0, 1.0)        # (F, T)
    direction = np.moveaxis(inten_s / np.maximum(norm, 1e-30), 0, -1)       # (F, T, 3)
    return Tiles(len(b), f, spec, psi, direction)


def synthesise(channels: np.ndarray, n: int, sr: int) -> np.ndarray:
    """(n, C) float32 from (C, F, T) tiles."""
    _, out = istft(channels, fs=sr, window="hann", nperseg=NFFT, noverlap=NFFT - HOP,
                   boundary=True)
    return np.ascontiguousarray(out[:, :n].T, dtype=np.float32)


@lru_cache(maxsize=1)
def _vbap_table() -> np.ndarray:
    """(K, 5) VBAP gains of L R C Ls Rs at azimuths k · _VBAP_STEP around the circle."""
    real = [a for _, a in spatial.LAYOUT_51 if a is not None]
    angles = np.radians(real)
    k = int(round(2 * math.pi / _VBAP_STEP))
    return np.stack([spatial._vbap_2d(i * _VBAP_STEP, angles) for i in range(k)])



def decode_51(ambix: np.ndarray, sr: int, tiles: Tiles | None = None) -> np.ndarray:
    """(n, 6) 5.1 in the WAV / SMPTE order L R C LFE Ls Rs (LFE silent) from (n, 4) AmbiX: the
    direct part by VBAP at each tile's direction (elevation folds to the horizon), the diffuse
    part by `spatial.decoder_51` (the fixed first-order decode). Both parts keep a frontal
    source's power; a silent input gives silence."""
    b = np.asarray(ambix, np.float64)
    n = len(b)
    out = np.zeros((n, len(spatial.LAYOUT_51)), np.float32)
    if n == 0 or not np.any(b):
        return out
    t = tiles or analyse(b, sr)
    azimuth = np.arctan2(t.direction[..., 1], t.direction[..., 0])          # (F, T)
    table = _vbap_table()
    idx = np.rint(azimuth / _VBAP_STEP).astype(np.int64) % len(table)
    gains = np.moveaxis(table[idx], -1, 0)                                 # (5, F, T)
    direct = gains * (np.sqrt(1 - t.psi) * t.spec[0])[None]
    fixed = spatial.decoder_51()                                            # (6, 4)
    real = [i for i, (_, a) in enumerate(spatial.LAYOUT_51) if a is not None]
    diffuse = np.einsum("kc,cft->kft", fixed[real], t.spec) * np.sqrt(t.psi)[None]
    out[:, real] = synthesise(direct + diffuse, n, sr)
    return out
