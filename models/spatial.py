"""Static spatialisation for the first build: constant-power stereo pan and FOA encoding.

Conventions: picture x in [0, 1] runs left → right; AmbiX azimuth is counter-clockwise from
straight ahead, so a source on the left has a positive azimuth. B-format is AmbiX: ACN
channel order (W, Y, Z, X) with SN3D normalisation (W has gain 1 for every direction).
"""

from __future__ import annotations

import math

import numpy as np


def _mono(mono: np.ndarray) -> np.ndarray:
    x = np.asarray(mono, dtype=np.float32)
    assert x.ndim == 1, f"expected a mono signal, got {x.shape=}"
    return x


def pan_gains(x: float) -> tuple[float, float]:
    """Constant-power (sin/cos) left and right gains for picture position x in [0, 1]."""
    theta = min(max(float(x), 0.0), 1.0) * math.pi / 2
    return math.cos(theta), math.sin(theta)


def pan_stereo(mono: np.ndarray, x: float) -> np.ndarray:
    """(n, 2) stereo: constant-power pan, x=0 hard left, 0.5 centre (-3 dB each), 1 hard right."""
    left, right = pan_gains(x)
    sig = _mono(mono)
    return np.stack([sig * left, sig * right], axis=1)  # (n, 2)


def foa_gains(azimuth_rad: float, elevation_rad: float = 0.0) -> np.ndarray:
    """AmbiX (ACN/SN3D) encoding gains [W, Y, Z, X] of a plane wave from this direction."""
    ce = math.cos(elevation_rad)
    return np.array(
        [1.0, math.sin(azimuth_rad) * ce, math.sin(elevation_rad), math.cos(azimuth_rad) * ce],
        dtype=np.float32,
    )


def encode_foa(mono: np.ndarray, azimuth_rad: float, elevation_rad: float = 0.0) -> np.ndarray:
    """(n, 4) first-order Ambisonics in AmbiX order W, Y, Z, X (SN3D)."""
    return _mono(mono)[:, None] * foa_gains(azimuth_rad, elevation_rad)[None, :]  # (n, 4)


def azimuth_from_x(x: float, hfov_deg: float = 60.0) -> float:
    """Azimuth (rad) of picture column x through a pinhole camera with horizontal FOV `hfov_deg`.

    x=0.5 → 0; x=0 → +hfov/2 (left is positive in AmbiX); x=1 → -hfov/2.
    """
    half = math.tan(math.radians(hfov_deg) / 2)
    return math.atan((0.5 - float(x)) * 2 * half)


def elevation_from_y(y: float, vfov_deg: float = 34.0) -> float:
    """Elevation (rad) of picture row y (origin top) through a pinhole camera; y=0.5 → 0, up +."""
    half = math.tan(math.radians(vfov_deg) / 2)
    return math.atan((0.5 - float(y)) * 2 * half)
