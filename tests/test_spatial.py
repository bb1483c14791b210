"""Encoding, decodes, distance and the camera model, checked against known directions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import hrtf, spatial
from models.spatial import Camera, azimuth_from_x, elevation_from_y, encode_foa, foa_gains

SR = 48000
NOISE = np.random.default_rng(0).normal(size=SR // 2).astype(np.float32) * 0.1


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
    out = encode_foa(NOISE, azimuth, elevation)
    assert out.shape == (len(NOISE), 4)  # ACN order W, Y, Z, X
    assert np.allclose(out, NOISE[:, None] * np.array(gains, dtype=np.float32), atol=1e-6)


def test_sn3d_first_order_has_unit_directional_norm() -> None:
    az, el = np.meshgrid(np.linspace(-math.pi, math.pi, 7), np.linspace(-1.2, 1.2, 5))
    w, y, z, x = np.moveaxis(foa_gains(az, el), -1, 0)
    assert np.all(w == 1.0)
    assert np.allclose(y**2 + z**2 + x**2, 1.0, atol=1e-6)


def test_fuma_is_wxyz_with_w_down_3db_and_round_trips() -> None:
    ambix = encode_foa(NOISE, 0.7, 0.2)
    fuma = spatial.to_format(ambix, "fuma")
    assert np.allclose(fuma[:, 0], ambix[:, 0] / math.sqrt(2), atol=1e-7)
    assert np.allclose(fuma[:, 1:], ambix[:, [3, 1, 2]])  # X, Y, Z
    assert np.allclose(spatial.to_ambix(fuma, "fuma"), ambix, atol=1e-6)
    with pytest.raises(ValueError, match="unknown B-format"):
        spatial.to_format(ambix, "n3d")


def test_camera_maps_picture_to_directions() -> None:
    assert azimuth_from_x(0.5) == 0.0
    assert azimuth_from_x(0.0) == pytest.approx(math.radians(30))  # left is positive
    assert azimuth_from_x(1.0) == pytest.approx(-math.radians(30))
    assert azimuth_from_x(0.0, hfov_deg=90) == pytest.approx(math.radians(45))
    assert math.radians(15) < azimuth_from_x(0.25) < math.radians(17)  # pinhole, not linear
    assert elevation_from_y(0.0) > 0 > elevation_from_y(1.0)
    cam = Camera(60.0, 16 / 9)
    assert cam.vfov_deg == pytest.approx(2 * math.degrees(math.atan(math.tan(math.radians(30)) * 9 / 16)))
    assert float(cam.elevation(0.0)) == pytest.approx(math.radians(cam.vfov_deg / 2))
    near, ref, far = cam.distance([0.04, spatial.A_REF, 0.0025])
    assert (near, ref, far) == pytest.approx((1.0, spatial.D_REF, 4.0))  # bigger = closer
    with pytest.raises(ValueError, match="field of view"):
        Camera(0.0)


def test_distance_gain_and_air_absorption() -> None:
    assert spatial.distance_gain([0.5, 2.0, 4.0, 100.0]) == pytest.approx(
        [1.0, 1.0, 0.5, 10 ** (-spatial.MAX_ATTEN_DB / 20)])
    assert np.array_equal(spatial.air_absorb(NOISE, np.full(len(NOISE), 2.0), SR), NOISE)  # 34 kHz
    far = spatial.air_absorb(NOISE, np.full(len(NOISE), 40.0), SR)

    def band(x: np.ndarray, lo: float, hi: float) -> float:
        f = np.fft.rfftfreq(len(x), 1 / SR)
        return float(np.sum(np.abs(np.fft.rfft(x))[(f >= lo) & (f < hi)] ** 2))

    high = 10 * math.log10(band(far, 12000, 20000) / band(NOISE, 12000, 20000))
    low = 10 * math.log10(band(far, 100, 1000) / band(NOISE, 100, 1000))
    assert high < -3.0 and low > -0.2, (high, low)  # the far source loses its top, not its body


@pytest.mark.parametrize("az_deg", [-60, -30, -10, 10, 30, 60])
def test_stereo_decode_keeps_left_and_right(az_deg: float) -> None:
    st = spatial.decode_stereo(encode_foa(NOISE, math.radians(az_deg)))
    left, right = np.sqrt(np.mean(st**2, axis=0))
    assert (left > right) == (az_deg > 0)


def test_stereo_decode_of_a_centred_source_is_a_constant_power_centre() -> None:
    st = spatial.decode_stereo(encode_foa(NOISE, 0.0))
    assert np.allclose(st[:, 0], st[:, 1])
    assert np.sum(st**2) == pytest.approx(np.sum(NOISE**2), rel=1e-5)


def test_51_decode_layout_and_order() -> None:
    order = [name for name, _ in spatial.LAYOUT_51]
    assert order == ["L", "R", "C", "LFE", "Ls", "Rs"]
    front = np.sqrt(np.mean(spatial.decode_51(encode_foa(NOISE, 0.0)) ** 2, axis=0))
    assert front[0] == pytest.approx(front[1], rel=1e-4) and front[3] == 0.0
    assert np.sum(front**2) == pytest.approx(np.mean(NOISE**2), rel=1e-3)  # power kept
    left = np.sqrt(np.mean(spatial.decode_51(encode_foa(NOISE, math.radians(30))) ** 2, axis=0))
    assert left[0] == max(left) and left[0] > left[1] and left[4] > left[5]
    behind = np.sqrt(np.mean(spatial.decode_51(encode_foa(NOISE, math.radians(-110))) ** 2, axis=0))
    assert behind[5] == max(behind)  # Rs


@pytest.mark.parametrize("az_deg, speakers", [
    (0.0, {"C": 1.0}), (30.0, {"L": 1.0}), (-30.0, {"R": 1.0}), (-110.0, {"Rs": 1.0}),
    (15.0, {"C": 0.707, "L": 0.707}), (90.0, {"L": 0.37, "Ls": 0.93}),
    (180.0, {"Ls": 0.707, "Rs": 0.707})])
def test_the_delivered_51_pans_a_source_like_a_panner(az_deg: float, speakers: dict) -> None:
    """The 5.1 stem (`dirac.decode_51`) plays a single source from the two speakers around it
    (VBAP), never with inverted polarity in the others (the fixed first-order decode sends
    −10 dB inverted into R from +90°, and plays a centred source equally from L, C and R),
    and keeps its power at every azimuth."""
    from models import dirac

    out = dirac.decode_51(encode_foa(NOISE, math.radians(az_deg)), SR)
    names = [name for name, _ in spatial.LAYOUT_51]
    ref = float(np.sqrt(np.mean(NOISE**2)))
    for k, name in enumerate(names):
        gain = float(np.sqrt(np.mean(out[:, k] ** 2))) / ref
        assert gain == pytest.approx(speakers.get(name, 0.0), abs=0.02), (name, gain)
        if gain > 0.02:
            assert np.corrcoef(out[:, k], NOISE)[0, 1] > 0.99, name  # in phase with the source
    assert float(np.mean(np.sum(out.astype(np.float64) ** 2, axis=1))) == \
        pytest.approx(ref**2, rel=0.02)  # power kept
    fixed = spatial.decode_51(encode_foa(NOISE, math.radians(90.0)))
    assert np.corrcoef(fixed[:, 1], NOISE)[0, 1] < -0.99  # what the fixed decode does


def test_a_source_moving_round_the_51_layout_keeps_its_level() -> None:
    from models import dirac

    n = 2 * SR
    src = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.1
    out = dirac.decode_51(encode_foa(src, np.radians(np.linspace(-120, 120, n))), SR)
    frame = SR // 100
    power = lambda x: np.sum(x[: len(x) // frame * frame].reshape(-1, frame, x.shape[1]) ** 2,
                             axis=(1, 2))
    ratio_db = 10 * np.log10(power(out)[2:-2] / power(src[:, None])[2:-2])
    assert np.all(np.abs(ratio_db) < 1.0), (ratio_db.min(), ratio_db.max())
    assert not np.any(dirac.decode_51(np.zeros((100, 4), np.float32), SR))


def test_binaural_itd_at_the_sides_matches_the_spherical_head() -> None:
    """ITD of the decoded ears at ±90° within 0.1 ms of (a/c)(π/2 + 1), with the right sign."""
    from flows.eval_spatial import itd_ms

    expected = hrtf.HEAD_RADIUS_M / hrtf.SPEED_OF_SOUND * (math.pi / 2 + 1) * 1000
    assert expected == pytest.approx(0.656, abs=1e-3)
    for side in (1, -1):
        ears = hrtf.decode_binaural(encode_foa(NOISE, side * math.pi / 2), SR)
        itd = itd_ms(ears[:, 0].astype(float), ears[:, 1].astype(float), SR)
        assert abs(itd - side * expected) < 0.1, (side, itd)
        near, far = (0, 1) if side > 0 else (1, 0)
        assert np.mean(ears[:, near] ** 2) > 4 * np.mean(ears[:, far] ** 2)  # head shadow
    centre = hrtf.decode_binaural(encode_foa(NOISE, 0.0), SR)
    assert np.allclose(centre[:, 0], centre[:, 1], atol=1e-5)


def test_binaural_is_in_time_with_the_other_formats() -> None:
    """A source ahead reaches both ears when the mono stem and the other formats have it (the
    head's centre), not 0.26 ms (12 samples) later; at the side the near ear hears it a/c
    early and the far ear (a/c)·π/2 late, around the head (Woodworth)."""
    def lag(ear: np.ndarray) -> int:
        xc = np.correlate(ear.astype(float), NOISE.astype(float), "full")
        return int(np.argmax(xc)) - (len(NOISE) - 1)

    ahead = hrtf.decode_binaural(encode_foa(NOISE, 0.0), SR)
    assert [lag(ahead[:, 0]), lag(ahead[:, 1])] == [0, 0]
    left = hrtf.decode_binaural(encode_foa(NOISE, math.pi / 2), SR)
    a_c = hrtf.HEAD_RADIUS_M / hrtf.SPEED_OF_SOUND * SR
    near, far = lag(left[:, 0]), lag(left[:, 1])
    assert abs(near + a_c) <= 1 and abs(far - a_c * math.pi / 2) <= 1, (near, far, a_c)


def test_binaural_behind_is_darker_than_ahead() -> None:
    """A sphere hears front and back alike; the pinna shadow dulls a source behind above
    ~3 kHz (about −5 dB over 6–12 kHz) and leaves the low end and both ears' timing alone."""
    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x.astype(float), axis=0)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        return float(10 * np.log10(spec[(f >= lo) & (f < hi)].sum()))

    ahead = hrtf.decode_binaural(encode_foa(NOISE, 0.0), SR)
    behind = hrtf.decode_binaural(encode_foa(NOISE, math.pi), SR)
    high = band_db(behind, 6000, 12000) - band_db(ahead, 6000, 12000)
    low = band_db(behind, 100, 500) - band_db(ahead, 100, 500)
    assert -6.0 < high < -4.0 and abs(low) < 0.5, (high, low)
    assert np.allclose(behind[:, 0], behind[:, 1], atol=1e-5)  # still on the median plane


def test_hrir_is_causal_and_delayed_on_the_far_side() -> None:
    near, far = hrtf.hrir(math.pi / 2, 0.0, 1), hrtf.hrir(math.pi / 2, 0.0, -1)
    lag = (int(np.argmax(np.abs(far))) - int(np.argmax(np.abs(near)))) / SR * 1000
    assert 0.5 < lag < 0.8
    assert np.max(np.abs(near)) > np.max(np.abs(far))


def test_intensity_doa_recovers_the_direction_even_with_the_room() -> None:
    for az, el in ((0.4, 0.1), (-0.3, -0.2), (1.2, 0.0)):
        foa = encode_foa(NOISE, az, el)
        m_az, m_el, coherence = spatial.intensity_doa(foa)
        assert (m_az, m_el) == pytest.approx((az, el), abs=1e-4) and coherence == pytest.approx(1.0)
        wet = foa + spatial.reverb_send(NOISE, spatial.room_response(SR, 0.5), -18.0)
        assert abs(spatial.intensity_doa(wet)[0] - az) < math.radians(2)


def test_a_moving_source_has_no_zipper_noise() -> None:
    """A 1 kHz tone swept across the picture: the time-varying gains add no energy far from
    1 kHz (block-wise gain steps would)."""
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * math.pi * 1000 * t)).astype(np.float32)
    sweep = np.linspace(math.radians(30), math.radians(-30), len(t))
    y = encode_foa(tone, sweep)[:, 1] * np.hanning(len(t))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    assert spec[(f > 1500)].sum() / spec.sum() < 1e-6


@pytest.mark.parametrize("az_deg", [90.0, -90.0, 60.0])
def test_no_format_clips_a_source_to_one_side(az_deg: float) -> None:
    """The sampler's stem peaks at −1 dBFS; the stereo decode raises a source at the side by
    3 dB, 5.1 and binaural more. Every stem stays under −1 dBFS, with its image (the louder
    side stays louder) and untouched where it was under already."""
    from models.limiter import CEILING_DB
    from models.spatial_render import SourcePath, SpatialSettings, render

    sr = 48000
    t = np.arange(sr) / sr
    mono = (np.sin(2 * np.pi * 440 * t) * np.exp(-4 * t)).astype(np.float32)
    mono *= 10 ** (CEILING_DB / 20) / np.abs(mono).max()
    mono[sr // 2:] *= 0.05  # a quiet second half no limiter should touch
    n = len(mono)
    path = SourcePath(np.full(n, math.radians(az_deg)), np.zeros(n), np.full(n, 1.0), np.ones(n))
    stems = render(mono, [path], sr, SpatialSettings(reverb_db=None))
    ceiling = 10 ** (CEILING_DB / 20) + 1e-6
    raw = spatial.decode_stereo(spatial.encode_foa(spatial.place(mono, path.distance, sr),
                                                   path.azimuth, path.elevation))
    assert np.abs(raw).max() > ceiling  # the decode alone would go over
    for kind, audio in stems.items():
        assert np.abs(audio).max() <= ceiling, (kind, 20 * np.log10(np.abs(audio).max()))
    left, right = np.abs(stems["stereo"]).max(axis=0)
    assert (left > 2 * right) if az_deg > 0 else (right > 2 * left)
    quiet = slice(sr // 2 + sr // 10, None)
    assert np.allclose(stems["stereo"][quiet], raw[quiet], atol=1e-6)
    # one gain for all formats: the stereo is still the stereo decode of the delivered
    # B-format, and W the mono (each format limited alone differed by up to 2.4 dB on peaks)
    assert np.allclose(stems["stereo"], spatial.decode_stereo(stems["foa"]), atol=1e-5)
    assert np.allclose(stems["foa"][:, 0], stems["mono"], atol=1e-6)
