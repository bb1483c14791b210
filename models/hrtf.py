"""Binaural from first-order Ambisonics with a spherical-head model computed here (nothing
downloaded).

Head model (Brown & Duda 1998, "A structural model for binaural sound synthesis"): a rigid
sphere of radius a = 8.75 cm, ears at ±90° azimuth. For an ear, with θ the angle between the
source direction and the ear's axis (0 = the source faces the ear):
- head shadow, a one-pole / one-zero filter H(ω, θ) = (α(θ)·jω + β) / (jω + β), β = 2c/a,
  α(θ) = (1 + α_min/2) + (1 − α_min/2)·cos(π·θ/θ_min), α_min = 0.1, θ_min = 150°
  (+6 dB at high frequencies facing the ear, −20 dB in its shadow);
- delay T(θ) = −(a/c)·cos θ for θ < 90°, (a/c)·(θ − π/2) beyond (Woodworth's wrap around
  the sphere), relative to the head's centre (`hrir` adds a/c so its response is causal);
- a pinna shadow, the same for both ears: a sphere alone hears front and back alike, and the
  outer ear is what dulls a sound from behind. Above about 3 kHz a source behind is up to
  6 dB darker, a zero-phase shelf f²/(f² + (3 kHz)²) weighted by how far behind it is (−x,
  0 at the sides and in front): the strongest front/back cue of measured heads, in a simple
  form (no elevation notches).
At ±90° the interaural time difference is (a/c)·(π/2 + 1) ≈ 0.656 ms (c = 343 m/s).
`hrtf` evaluates it at any frequencies and directions, `hrir` gives impulse responses.

Why a parametric decode. Decoding first-order B-format to virtual loudspeakers and convolving
with their HRIRs blurs the direction: at ±90° the ITD measured that way is 0.4–0.5 ms instead
of 0.66 (8- to 12-speaker rings, basic or max-rE weights), a source heard too close to the
centre. So, as DirAC does (Pulkki 2007; the analysis is `models.dirac`'s, shared with the
5.1 decode), the decode works per short-time Fourier tile
(1024-point Hann, hop 256): the active intensity vector I = Re(W*·[X, Y, Z]) and the energy
E = (|W|² + |X|² + |Y|² + |Z|²)/2 are smoothed over 30 ms; the direction is I/|I| and the
diffuseness ψ = 1 − |I|/E. The direct part √(1 − ψ)·W is filtered with the head model's HRTF
of that direction; the diffuse part √ψ·B is decoded to 12 virtual loudspeakers (8 on the
horizon, 4 at ±45° elevation) and filtered with theirs. A single source (every Foley stem of
a shot) is rendered with the exact ITD and head shadow of its direction, and a moving source
follows from tile to tile.
"""
from __future__ import annotations

import math

import numpy as np

from models import dirac
from models.spatial import foa_gains

HEAD_RADIUS_M = 0.0875
SPEED_OF_SOUND = 343.0
ALPHA_MIN, THETA_MIN = 0.1, math.radians(150.0)
PINNA_SHADOW_DB, PINNA_CORNER_HZ = 6.0, 3000.0


def pinna(freqs_hz: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The pinna shadow's gain at `freqs_hz` (F, 1…) for unit direction(s) (..., 3): 1 in front
    and at the sides, down to −6 dB at high frequencies straight behind (module docstring)."""
    f2 = np.asarray(freqs_hz, np.float64) ** 2
    behind = np.clip(-np.asarray(direction, np.float64)[..., 0], 0.0, 1.0)
    floor = 10 ** (-PINNA_SHADOW_DB / 20)
    return 1.0 - (1.0 - floor) * behind * f2 / (f2 + PINNA_CORNER_HZ ** 2)
_VIRTUAL = [(math.radians(a), 0.0) for a in range(0, 360, 45)] + \
    [(math.radians(a), math.radians(e)) for a in (45, 135, 225, 315) for e in (45, -45)]


def woodworth_itd(azimuth_rad: float, radius: float = HEAD_RADIUS_M) -> float:
    """Interaural time difference (s) of a horizontal source, left ear leading positive."""
    lateral = math.asin(max(-1.0, min(1.0, math.sin(azimuth_rad))))
    return radius / SPEED_OF_SOUND * (lateral + math.sin(lateral))


def _ear_angle(direction: np.ndarray, ear: int) -> np.ndarray:
    """Angle between unit direction(s) (..., 3) as (x fwd, y left, z up) and ear +1 left / −1 right."""
    return np.arccos(np.clip(ear * direction[..., 1], -1.0, 1.0))


def hrtf(freqs_hz: np.ndarray, direction: np.ndarray, ear: int,
         radius: float = HEAD_RADIUS_M, causal: bool = True) -> np.ndarray:
    """Head-model transfer function at `freqs_hz` (F, 1…) for unit direction(s) (..., 3).

    `causal`: delayed by the head's radius / c (0.26 ms) so that the near ear's impulse
    response starts at 0 (`hrir`); without it, times are relative to the head's centre, as
    a loudspeaker feed or a stem of another format is — what the STFT-domain decode uses, so
    the binaural stem is not 12 samples late against the picture and the other stems."""
    theta = _ear_angle(np.asarray(direction, np.float64), ear)
    w = 2 * math.pi * np.asarray(freqs_hz, np.float64)
    alpha = (1 + ALPHA_MIN / 2) + (1 - ALPHA_MIN / 2) * np.cos(theta / THETA_MIN * math.pi)
    beta = 2 * SPEED_OF_SOUND / radius
    a_c = radius / SPEED_OF_SOUND
    delay = np.where(theta < math.pi / 2, -a_c * np.cos(theta), a_c * (theta - math.pi / 2))
    if causal:
        delay = delay + a_c
    return ((alpha * 1j * w + beta) / (1j * w + beta) * np.exp(-1j * w * delay)
            * pinna(freqs_hz, direction))


def unit(azimuth_rad: float, elevation_rad: float = 0.0) -> np.ndarray:
    """(3,) unit vector (x forward, y left, z up) of a direction."""
    ce = math.cos(elevation_rad)
    return np.array([math.cos(azimuth_rad) * ce, math.sin(azimuth_rad) * ce, math.sin(elevation_rad)])


def hrir(azimuth_rad: float, elevation_rad: float, ear: int, sr: int = 48000, n: int = 256) -> np.ndarray:
    """(n,) head-model impulse response of one ear for one direction."""
    f = np.fft.rfftfreq(n, 1 / sr)
    return np.fft.irfft(hrtf(f, unit(azimuth_rad, elevation_rad), ear), n).astype(np.float32)


def decode_binaural(ambix: np.ndarray, sr: int, tiles: dirac.Tiles | None = None) -> np.ndarray:
    """(n, 2) left, right ears from (n, 4) AmbiX (see the module docstring); `tiles`: its
    `dirac.analyse`, when the caller has it already."""
    b = np.asarray(ambix, np.float64)
    n = len(b)
    if n == 0 or not np.any(b):
        return np.zeros((n, 2), np.float32)
    t = tiles or dirac.analyse(b, sr)
    w, psi, direction, spec = t.spec[0], t.psi, t.direction, t.spec
    f = t.freqs
    freqs = f[:, None]
    gains = foa_gains(np.array([a for a, _ in _VIRTUAL]), np.array([e for _, e in _VIRTUAL]))
    decode = np.concatenate([gains[:, :1], 3 * gains[:, 1:]], axis=1) / len(_VIRTUAL)  # (K, 4)
    feeds = np.einsum("kc,cft->kft", decode, spec)                         # (K, F, T)
    ears = []
    for ear in (1, -1):
        direct = np.sqrt(1 - psi) * w * hrtf(freqs, direction, ear, causal=False)
        virt = np.stack([hrtf(f, unit(a, e), ear, causal=False) for a, e in _VIRTUAL])  # (K, F)
        diffuse = np.sqrt(psi) * np.einsum("kf,kft->ft", virt, feeds)
        ears.append(direct + diffuse)
    return dirac.synthesise(np.stack(ears), n, sr)
