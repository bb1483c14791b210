"""Channel gains of the static panner and FOA encoder for known directions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.spatial import (
    azimuth_from_x,
    elevation_from_y,
    encode_foa,
    foa_gains,
    pan_stereo,
)

SIGNAL = np.random.default_rng(0).normal(size=1000).astype(np.float32)


@pytest.mark.parametrize(
    ("x", "left", "right"),
    [(0.0, 1.0, 0.0), (0.5, math.sqrt(0.5), math.sqrt(0.5)), (1.0, 0.0, 1.0)],
)
def test_pan_gains_at_the_edges_and_centre(x: float, left: float, right: float) -> None:
    out = pan_stereo(SIGNAL, x)
    assert out.shape == (len(SIGNAL), 2)
    assert np.allclose(out[:, 0], SIGNAL * left, atol=1e-6)
    assert np.allclose(out[:, 1], SIGNAL * right, atol=1e-6)


@pytest.mark.parametrize("x", np.linspace(0, 1, 11))
def test_pan_is_constant_power(x: float) -> None:
    out = pan_stereo(SIGNAL, x)
    assert np.sum(out**2) == pytest.approx(np.sum(SIGNAL**2), rel=1e-5)


def test_pan_clamps_outside_the_picture() -> None:
    assert np.allclose(pan_stereo(SIGNAL, -0.3), pan_stereo(SIGNAL, 0.0))
    assert np.allclose(pan_stereo(SIGNAL, 1.7), pan_stereo(SIGNAL, 1.0))


@pytest.mark.parametrize(
    ("azimuth", "elevation", "gains"),
    [
        (0.0, 0.0, [1, 0, 0, 1]),  # front: W, X
        (math.pi / 2, 0.0, [1, 1, 0, 0]),  # left: +Y
        (-math.pi / 2, 0.0, [1, -1, 0, 0]),  # right: -Y
        (math.pi, 0.0, [1, 0, 0, -1]),  # behind: -X
        (0.0, math.pi / 2, [1, 0, 1, 0]),  # above: +Z
        (math.pi / 4, 0.0, [1, math.sqrt(0.5), 0, math.sqrt(0.5)]),
    ],
)
def test_foa_ambix_gains(azimuth: float, elevation: float, gains: list[float]) -> None:
    assert np.allclose(foa_gains(azimuth, elevation), gains, atol=1e-6)
    out = encode_foa(SIGNAL, azimuth, elevation)
    assert out.shape == (len(SIGNAL), 4)  # ACN order W, Y, Z, X
    assert np.allclose(out, SIGNAL[:, None] * np.array(gains, dtype=np.float32), atol=1e-6)


def test_sn3d_first_order_has_unit_directional_norm() -> None:
    for az in np.linspace(-math.pi, math.pi, 7):
        for el in np.linspace(-1.2, 1.2, 5):
            w, y, z, x = foa_gains(az, el)
            assert w == 1.0
            assert y**2 + z**2 + x**2 == pytest.approx(1.0, abs=1e-6)


def test_azimuth_from_picture_x() -> None:
    assert azimuth_from_x(0.5) == 0.0
    assert azimuth_from_x(0.0) == pytest.approx(math.radians(30))  # left is positive
    assert azimuth_from_x(1.0) == pytest.approx(-math.radians(30))
    assert azimuth_from_x(0.0, hfov_deg=90) == pytest.approx(math.radians(45))
    assert math.radians(15) < azimuth_from_x(0.25) < math.radians(17)  # pinhole, not linear
    assert elevation_from_y(0.0) > 0 > elevation_from_y(1.0)
