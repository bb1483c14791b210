"""First-order Ambisonics: the camera model, encoding, distance, room and loudspeaker decodes.

Conventions. Picture x in [0, 1] runs left → right, y top → bottom. Azimuth is counter-clockwise
from straight ahead (a source on the left has a positive azimuth), elevation is up-positive.
B-format is AmbiX by default: ACN channel order (W, Y, Z, X) with SN3D normalisation, so W has
gain 1 for every direction and the plane-wave gains are W = 1, Y = sin az cos el,
Z = sin el, X = cos az cos el (Zen-Foley's encoding equations). FuMa (Furse–Malham, channel
order W, X, Y, Z, W scaled by 1/√2) is written on request.

Camera. A pinhole camera with horizontal field of view HFOV (per reel, default 60°); the
vertical field of view follows from the picture's aspect ratio, VFOV = 2·atan(tan(HFOV/2) /
aspect). Picture column x maps to azimuth atan((0.5 − x) · 2 · tan(HFOV/2)).

Distance. A sounding region's size is the distance cue: an object of fixed size S at distance d
covers a width fraction S / (2 d tan(HFOV/2)) of the frame, so d ∝ 1 / (√area · tan(HFOV/2)).
The reference: a region covering 1 % of the frame is `D_REF` = 2 m away at HFOV 60° (a ~17 cm
object). Gain is 1/r beyond 2 m (unity nearer, never boosted), at most `MAX_ATTEN_DB` down.
Air absorption (ISO 9613-1 at 20 °C, 50 % RH, α ≈ k·f² with α(8 kHz) ≈ 0.084 dB/m) becomes a
one-pole low-pass whose −3 dB point is where α(f)·d = 3 dB: 34 kHz at 2 m (inaudible), 11 kHz at
20 m; it follows a moving source block by block (64 samples, filter state carried).

Room. An optional reverb send (off by default): a project-built FOA room response — six
early reflections (floor, ceiling, side and back walls of a 6 × 4 × 3 m room, their directions
encoded, delays and 1/r gains from the image sources) and a diffuse tail of exponentially
decaying noise (RT60 given), independent per channel with the diffuse-field balance of SN3D
(each dipole at 1/3 of W's energy) — convolved with the placed source at `level_db`.

Decodes (all from B-format, AmbiX in):
- stereo: two virtual cardioids at ±90° (a coincident pair opened to 180°), scaled by √2 so a
  centred source plays at −3 dB per side like a constant-power pan; the picture's edges at
  HFOV 60° land ~9.5 dB to one side; left stays left.
- 5.1 (ITU-R BS.775: L/R ±30°, C 0°, Ls/Rs ±110°), channel order L R C LFE Ls Rs: the
  delivered stem is `models.dirac.decode_51` (parametric: VBAP of each tile's direction, the
  diffuse part through the fixed decode here). `decoder_51` is that fixed decode: the
  first-order decode whose five speaker gains best match 2-D VBAP on the layout (weighted
  least squares over the horizon, the screen's ±45° weighted ×4; a max-rE AllRAD decode put
  a quarter of a frontal source into the surrounds and more into L/R than C). Alone, first
  order cannot image as narrowly as VBAP: a centred source plays about equally from L, C and
  R, a source at +30° leads in L (L 0.82, C 0.54, R 0.24) with Rs inverted at −17 dB.
  Normalised so a frontal source keeps its power. LFE is silent: Foley is not sent to the
  LFE; bass management is the monitor chain's job.
- binaural: `models.hrtf` (spherical head, parametric decode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter

FORMATS = ("ambix", "fuma")
D_REF = 2.0              # metres: a region of A_REF of the frame at HFOV 60°; unity gain up to here
A_REF = 0.01             # fraction of the frame
D_MIN, D_MAX = 0.5, 50.0
MAX_ATTEN_DB = 12.0
AIR_K = 0.084 / 8000.0**2   # dB/m/Hz²: α(f) ≈ k f², ISO 9613-1, 20 °C, 50 % RH
AIR_BLOCK = 64
ROOM_M = (6.0, 4.0, 3.0)    # the reverb's room: width, depth, height (metres)
LAYOUT_51 = (("L", 30.0), ("R", -30.0), ("C", 0.0), ("LFE", None), ("Ls", 110.0), ("Rs", -110.0))
STEREO_ANGLE_DEG = 90.0


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: horizontal field of view and the picture's aspect ratio (w / h)."""

    hfov_deg: float = 60.0
    aspect: float = 16 / 9

    def __post_init__(self) -> None:
        if not 1.0 <= self.hfov_deg < 179.0:
            raise ValueError(f"horizontal field of view must be in [1, 179) degrees, got {self.hfov_deg}")
        if self.aspect <= 0:
            raise ValueError(f"aspect ratio must be positive, got {self.aspect}")

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2 * math.atan(math.tan(math.radians(self.hfov_deg) / 2) / self.aspect))

    def azimuth(self, x: np.ndarray | float) -> np.ndarray:
        """Azimuth (rad) of picture column x: 0 at the centre, +HFOV/2 at the left edge."""
        half = math.tan(math.radians(self.hfov_deg) / 2)
        return np.arctan((0.5 - np.asarray(x, np.float64)) * 2 * half)

    def elevation(self, y: np.ndarray | float) -> np.ndarray:
        """Elevation (rad) of picture row y (origin top): up is positive."""
        half = math.tan(math.radians(self.vfov_deg) / 2)
        return np.arctan((0.5 - np.asarray(y, np.float64)) * 2 * half)

    def distance(self, area: np.ndarray | float) -> np.ndarray:
        """Distance (m) of a region covering `area` of the frame (see the module docstring)."""
        scale = math.tan(math.radians(30.0)) / math.tan(math.radians(self.hfov_deg) / 2)
        a = np.maximum(np.asarray(area, np.float64), 1e-6)
        return np.clip(D_REF * np.sqrt(A_REF / a) * scale, D_MIN, D_MAX)


def azimuth_from_x(x: float, hfov_deg: float = 60.0) -> float:
    """Azimuth (rad) of picture column x through a pinhole camera with horizontal FOV `hfov_deg`."""
    return float(Camera(hfov_deg).azimuth(x))


def elevation_from_y(y: float, vfov_deg: float = 34.0) -> float:
    """Elevation (rad) of picture row y (origin top) through a pinhole camera; y=0.5 → 0, up +."""
    half = math.tan(math.radians(vfov_deg) / 2)
    return math.atan((0.5 - float(y)) * 2 * half)


# ---------------------------------------------------------------- encoding


def foa_gains(azimuth_rad: np.ndarray | float, elevation_rad: np.ndarray | float = 0.0) -> np.ndarray:
    """AmbiX (ACN/SN3D) plane-wave gains [W, Y, Z, X]; array directions give (..., 4)."""
    az, el = np.broadcast_arrays(np.asarray(azimuth_rad, np.float64), np.asarray(elevation_rad, np.float64))
    ce = np.cos(el)
    return np.stack([np.ones_like(az), np.sin(az) * ce, np.sin(el), np.cos(az) * ce], axis=-1).astype(np.float32)


def encode_foa(mono: np.ndarray, azimuth_rad: np.ndarray | float,
               elevation_rad: np.ndarray | float = 0.0) -> np.ndarray:
    """(n, 4) AmbiX of a mono signal from a fixed direction or one direction per sample."""
    sig = np.asarray(mono, np.float32)
    assert sig.ndim == 1, f"expected a mono signal, got {sig.shape=}"
    gains = foa_gains(azimuth_rad, elevation_rad)
    return sig[:, None] * (gains if gains.ndim == 2 else gains[None, :])  # (n, 4)


def to_format(ambix: np.ndarray, fmt: str) -> np.ndarray:
    """AmbiX B-format in the delivery format: "ambix" as is, "fuma" = (W/√2, X, Y, Z)."""
    if fmt == "ambix":
        return ambix
    if fmt == "fuma":
        w, y, z, x = ambix.T
        return np.stack([w / math.sqrt(2), x, y, z], axis=1)
    raise ValueError(f"unknown B-format {fmt!r}; choose from {', '.join(FORMATS)}")


def to_ambix(bformat: np.ndarray, fmt: str) -> np.ndarray:
    """The inverse of `to_format`: delivered B-format back to AmbiX (W, Y, Z, X)."""
    if fmt == "ambix":
        return bformat
    if fmt == "fuma":
        w, x, y, z = bformat.T
        return np.stack([w * math.sqrt(2), y, z, x], axis=1)
    raise ValueError(f"unknown B-format {fmt!r}; choose from {', '.join(FORMATS)}")


# ---------------------------------------------------------------- distance and room


def distance_gain(distance_m: np.ndarray | float) -> np.ndarray:
    """1/r beyond `D_REF` (unity nearer), at most `MAX_ATTEN_DB` down."""
    g = D_REF / np.maximum(np.asarray(distance_m, np.float64), D_REF)
    return np.maximum(g, 10 ** (-MAX_ATTEN_DB / 20))


def air_cutoff_hz(distance_m: np.ndarray | float) -> np.ndarray:
    """−3 dB point of the air-absorption low-pass at this distance (α(f)·d = 3 dB)."""
    return np.sqrt(3.0 / (AIR_K * np.maximum(np.asarray(distance_m, np.float64), 1e-3)))


def air_absorb(mono: np.ndarray, distance_m: np.ndarray, sr: int) -> np.ndarray:
    """One-pole low-pass following the distance per sample (coefficients per `AIR_BLOCK`)."""
    x = np.asarray(mono, np.float64)
    d = np.broadcast_to(np.asarray(distance_m, np.float64), x.shape)
    cut = air_cutoff_hz(d[::AIR_BLOCK])
    if np.all(cut >= 0.45 * sr):  # beyond the audio band everywhere: nothing to do
        return x.astype(np.float32)
    pole = np.exp(-2 * math.pi * np.minimum(cut, 0.45 * sr) / sr)
    pole[cut >= 0.45 * sr] = 0.0
    out = np.empty_like(x)
    state = np.zeros(1)
    for b, p in enumerate(pole):
        seg = slice(b * AIR_BLOCK, (b + 1) * AIR_BLOCK)
        out[seg], state = lfilter([1 - p], [1, -p], x[seg], zi=state)
    return out.astype(np.float32)


def place(mono: np.ndarray, distance_m: np.ndarray, sr: int) -> np.ndarray:
    """The source as heard at the camera without direction: distance gain and air absorption."""
    return (air_absorb(mono, distance_m, sr) * distance_gain(distance_m)).astype(np.float32)


def room_response(sr: int, rt60_s: float, seed: int = 0) -> np.ndarray:
    """(n, 4) AmbiX impulse response of the reverb send (early reflections + diffuse tail)."""
    rng = np.random.default_rng(seed)
    n = int(sr * max(rt60_s, 0.05) * 1.2)
    ir = np.zeros((n, 4), np.float64)
    w, dpt, h = ROOM_M
    # image sources of a listener 1.2 m above the floor, a third into the room: (x fwd, y left, z up)
    images = [(2 * dpt / 3, 0, -2.4), (2 * dpt / 3, 0, 2 * (h - 1.2)), (2 * dpt / 3, w / 2, 0),
              (2 * dpt / 3, -w / 2, 0), (-2 * dpt / 3, 0, 0), (2 * dpt / 3 + 2 * dpt / 3, 0, 0)]
    direct = 2 * dpt / 3
    for x, y, z in images:
        r = math.sqrt(x * x + y * y + z * z)
        delay = int(round((r - direct) / 343.0 * sr)) + 1
        if delay < n:
            ir[delay] += 0.7 * direct / r * foa_gains(math.atan2(y, x), math.asin(z / r))
    t = np.arange(n) / sr
    tail = rng.standard_normal((n, 4)) * (10 ** (-3 * t / rt60_s))[:, None]
    tail[:, 1:] /= math.sqrt(3)  # diffuse field, SN3D: each dipole carries 1/3 of W's energy
    onset = int(0.02 * sr)
    tail[:onset] *= np.linspace(0, 1, onset)[:, None]
    tail *= math.sqrt(0.5 / max(np.sum(tail[:, 0] ** 2), 1e-12))
    return (ir + tail).astype(np.float32)


def reverb_send(placed: np.ndarray, ir: np.ndarray, level_db: float) -> np.ndarray:
    """(n, 4) AmbiX room of the placed source at `level_db` relative to it, cut to its length."""
    wet = np.stack([fftconvolve(placed, ir[:, c])[: len(placed)] for c in range(4)], axis=1)
    return (wet * 10 ** (level_db / 20)).astype(np.float32)


# ---------------------------------------------------------------- loudspeaker decodes


def decode_stereo(ambix: np.ndarray, angle_deg: float = STEREO_ANGLE_DEG) -> np.ndarray:
    """(n, 2) L, R: virtual cardioids at ±angle_deg, ×√2 (a centred source at −3 dB per side)."""
    a = math.radians(angle_deg)
    w, y, _, x = ambix.T
    left = 0.5 * (w + math.cos(a) * x + math.sin(a) * y)
    right = 0.5 * (w + math.cos(a) * x - math.sin(a) * y)
    return (np.stack([left, right], axis=1) * math.sqrt(2)).astype(np.float32)


def _vbap_2d(theta: float, speakers: np.ndarray) -> np.ndarray:
    """Power-normalised 2-D VBAP gains of direction `theta` on a horizontal ring of speakers."""
    order = np.argsort(speakers)
    ang = speakers[order]
    gains = np.zeros(len(speakers))
    for i in range(len(ang)):
        a, b = ang[i], ang[(i + 1) % len(ang)]
        span = (b - a) % (2 * math.pi)
        off = (theta - a) % (2 * math.pi)
        if off <= span + 1e-12:
            base = np.array([[math.cos(a), math.cos(b)], [math.sin(a), math.sin(b)]])
            g = np.linalg.solve(base, [math.cos(theta), math.sin(theta)])
            g = np.maximum(g, 0.0)
            g /= np.linalg.norm(g)
            gains[order[i]], gains[order[(i + 1) % len(ang)]] = g
            return gains
    raise AssertionError(f"direction {theta} not covered by {speakers}")


def decoder_51() -> np.ndarray:
    """(6, 4) decoding matrix AmbiX → L R C LFE Ls Rs (LFE row zero): the first-order decode
    whose speaker gains best match 2-D VBAP on the layout (weighted least squares over the
    horizon, the screen's ±45° weighted ×4), scaled so a frontal source keeps its power."""
    real = [(i, math.radians(a)) for i, (_, a) in enumerate(LAYOUT_51) if a is not None]
    angles = np.array([a for _, a in real])
    theta = (np.arange(360) + 0.5) * math.pi / 180                         # symmetric grid
    target = np.stack([_vbap_2d(t, angles) for t in theta])              # (360, 5)
    basis = foa_gains(theta, 0.0).astype(np.float64)                       # (360, 4)
    weight = np.sqrt(np.where(np.abs(np.angle(np.exp(1j * theta))) <= math.pi / 4, 4.0, 1.0))
    dec = np.linalg.lstsq(weight[:, None] * basis, weight[:, None] * target, rcond=None)[0].T
    dec /= np.linalg.norm(dec @ foa_gains(0.0, 0.0).astype(np.float64))   # (5, 4)
    full = np.zeros((len(LAYOUT_51), 4))
    for row, (i, _) in enumerate(real):
        full[i] = dec[row]
    return full


def decode_51(ambix: np.ndarray) -> np.ndarray:
    """(n, 6) 5.1 in the WAV / SMPTE order L R C LFE Ls Rs (LFE silent)."""
    return (np.asarray(ambix, np.float64) @ decoder_51().T).astype(np.float32)


def intensity_doa(ambix: np.ndarray) -> tuple[float, float, float]:
    """Direction of arrival from the active intensity vector I = <W·[X, Y, Z]> of an AmbiX
    excerpt: (azimuth rad, elevation rad, |I| / <W²> — 1 for a single plane wave, 0 for a
    diffuse field or silence)."""
    w, y, z, x = np.asarray(ambix, np.float64).T
    ix, iy, iz = np.mean(w * x), np.mean(w * y), np.mean(w * z)
    power = float(np.mean(w * w))
    norm = math.sqrt(ix * ix + iy * iy + iz * iz)
    return math.atan2(iy, ix), math.atan2(iz, math.hypot(ix, iy)), norm / power if power > 0 else 0.0
