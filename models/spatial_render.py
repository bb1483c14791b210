"""A shot's mono stem rendered where its sound is: placed mono, B-format, stereo, 5.1, binaural.

    sources = spatial_track.sounding_sources(features, envelope)      # or fixed_sources(...)
    paths = source_paths(sources, Camera(60, 16 / 9), override, n, sr)  # per layer, per sample
    stems = render(mono, paths, sr, SpatialSettings())

Directions are computed per sample from the position track (linear interpolation of the
picture position between frames, then the camera model), so gains of a moving source change
smoothly sample by sample — no block steps, no zipper noise.

Layers. A shot with several sounding objects (`spatial_track.SourceScene`) has one mono stem,
so each layer gets a part of it and the parts are placed separately and summed in the
B-format. Where one layer has all the share it has all the sound; where several share it (two
boxes sliding at once, objects dropped together) the stem is split across frequency, not
scaled: in each STFT frame (1024 samples, hop 256, Hann) third-octave bands go to the layers
in proportion to their shares (band b to the layer whose cumulative-share interval holds
frac(b·φ), φ the golden ratio, so a layer's bands are spread over the spectrum), the masks
smoothed over 5 frames. Scaling one signal into two directions makes one phantom image
between them; split this way each band arrives from its own object. The masks sum to 1, so
the layers add back to the stem. A person's override
(`position` in the envelope, or clip metadata) replaces any of azimuth, elevation and
distance; what it leaves out follows the picture.

"Placed mono" is the source as heard at the camera before it has a direction: the distance
gain and air absorption applied. It is the delivered mono stem and exactly the W channel of
the B-format when the reverb send is off (AmbiX W has gain 1 in every direction); with the
send on, W also carries the room.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import istft, stft

from models import dirac, hrtf, limiter, spatial
from models.spatial_track import PositionTrack, SourceScene

OVERRIDE_KEYS = ("azimuth_deg", "elevation_deg", "distance_m")
SPLIT_FFT, SPLIT_HOP, SPLIT_SMOOTH = 1024, 256, 5
BANDS_PER_OCTAVE, LOWEST_BAND_HZ = 3, 50.0
GOLDEN = (math.sqrt(5) - 1) / 2
REPORT_HZ = 50.0          # position.json's grid
MOVE_WINDOW_S = 0.1       # an event's `moving_deg`: the azimuth change over the DOA window


@dataclass(frozen=True)
class SpatialSettings:
    """What a reel's spatial render is made with (all part of the stage's cache key)."""

    hfov_deg: float = 60.0
    fmt: str = "ambix"                 # delivered B-format: ambix | fuma
    reverb_db: float | None = None     # reverb send level relative to the source; None = off
    rt60_s: float = 0.5

    def __post_init__(self) -> None:
        spatial.Camera(self.hfov_deg)  # validates the field of view
        if self.fmt not in spatial.FORMATS:
            raise ValueError(f"unknown B-format {self.fmt!r}; choose from {', '.join(spatial.FORMATS)}")
        if self.reverb_db is not None and not -60.0 <= self.reverb_db <= 0.0:
            raise ValueError(f"reverb send must be between -60 and 0 dB, got {self.reverb_db}")
        if not 0.05 <= self.rt60_s <= 5.0:
            raise ValueError(f"reverb RT60 must be between 0.05 and 5 s, got {self.rt60_s}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SpatialSettings:
        d = d or {}
        return cls(**{k: d[k] for k in ("hfov_deg", "fmt", "reverb_db", "rt60_s") if k in d})


def validate_override(pos: Any, *, where: str) -> dict[str, float]:
    """A position override as floats; ValueError naming `where` and the field if it is bad."""
    if pos is None:
        return {}
    if not isinstance(pos, dict):
        raise ValueError(f"{where}: position must be an object with {', '.join(OVERRIDE_KEYS)}")
    unknown = set(pos) - set(OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown position field(s) {', '.join(sorted(unknown))}; "
                         f"use {', '.join(OVERRIDE_KEYS)}")
    out: dict[str, float] = {}
    limits = {"azimuth_deg": (-180.0, 180.0), "elevation_deg": (-90.0, 90.0),
              "distance_m": (spatial.D_MIN, spatial.D_MAX)}
    for key, value in pos.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: position {key} must be a number, got {value!r}")
        lo, hi = limits[key]
        if not lo <= value <= hi:
            raise ValueError(f"{where}: position {key}={value} outside [{lo}, {hi}]")
        out[key] = float(value)
    return out


@dataclass
class SourcePath:
    """Per-sample direction, distance and share of one layer."""

    azimuth: np.ndarray     # rad
    elevation: np.ndarray   # rad
    distance: np.ndarray    # m
    share: np.ndarray       # its part of the shot's sound, layers summing to 1


def _directions(track: PositionTrack, camera: spatial.Camera, override: dict[str, float],
                times: np.ndarray) -> dict[str, np.ndarray]:
    """Picture position, azimuth / elevation (rad) and distance (m) at `times`."""
    x, y, area = track.at(times)
    n = len(x)
    az = np.full(n, math.radians(override["azimuth_deg"])) if "azimuth_deg" in override \
        else camera.azimuth(x)
    el = np.full(n, math.radians(override["elevation_deg"])) if "elevation_deg" in override \
        else camera.elevation(y)
    dist = np.full(n, override["distance_m"]) if "distance_m" in override else camera.distance(area)
    return {"x": x, "y": y, "area": area, "azimuth": az, "elevation": el, "distance": dist}


def source_paths(sources: SourceScene, camera: spatial.Camera, override: dict[str, float],
                 n: int, sr: int) -> list[SourcePath]:
    """Each layer through the camera at every sample, with the override's fields fixed."""
    times = np.arange(n) / sr
    paths = []
    for layer, share in zip(sources.layers, sources.shares(times)):
        d = _directions(layer.track, camera, override, times)
        paths.append(SourcePath(d["azimuth"], d["elevation"], d["distance"], share))
    return paths


def split_layers(mono: np.ndarray, shares: np.ndarray, sr: int) -> list[np.ndarray]:
    """The stem's part for each layer (module docstring); (L, n) shares, parts sum to `mono`."""
    if len(shares) == 1 or len(mono) < SPLIT_FFT:
        return [mono * (1.0 if len(shares) == 1 else s) for s in shares]
    _, frame_t, spec = stft(mono, nperseg=SPLIT_FFT, noverlap=SPLIT_FFT - SPLIT_HOP)
    frame_share = np.stack([np.interp(frame_t, np.arange(len(mono)), s) for s in shares])
    upper = np.cumsum(frame_share, axis=0) / np.maximum(frame_share.sum(axis=0), 1e-12)
    freqs = np.arange(spec.shape[0]) / SPLIT_FFT          # cycles per sample
    band = np.floor(BANDS_PER_OCTAVE * np.log2(np.maximum(freqs * sr / LOWEST_BAND_HZ, 1.0)))
    u = ((band + 1) * GOLDEN) % 1.0                         # (F,)
    owner = (u[None, :, None] >= upper[:, None, :]).sum(axis=0)        # (F, frames) layer index
    owner = np.minimum(owner, len(shares) - 1)
    parts = []
    for layer in range(len(shares)):
        mask = uniform_filter1d((owner == layer).astype(np.float64), SPLIT_SMOOTH, axis=1, mode="nearest")
        out = istft(spec * mask, nperseg=SPLIT_FFT, noverlap=SPLIT_FFT - SPLIT_HOP)[1][: len(mono)]
        parts.append(np.pad(out, (0, len(mono) - len(out))).astype(mono.dtype))
    return parts


def render(mono: np.ndarray, paths: list[SourcePath], sr: int, settings: SpatialSettings) -> dict[str, np.ndarray]:
    """Every stem of the shot: mono (placed), foa (delivery format), stereo, 51, binaural,
    kept under −1 dBFS together (`models.limiter.peak_limit_together`: one gain for every
    channel of every format, the one the loudest needs — the decodes raise a source to one
    side over the mono stem, the stereo pair up to +3 dB, 5.1 +4 dB, binaural's head shadow up
    to +6 dB — so the image holds and each format stays a decode of the delivered B-format)."""
    heard = [p for p in paths if np.any(p.share > 1e-4)] or paths[:1]
    placed = np.zeros(len(mono), np.float64)
    ambix = np.zeros((len(mono), 4), np.float64)
    for part, path in zip(split_layers(mono, np.stack([p.share for p in heard]), sr), heard):
        layer = spatial.place(part, path.distance, sr)
        placed += layer
        ambix += spatial.encode_foa(layer, path.azimuth, path.elevation)
    placed = placed.astype(np.float32)
    if settings.reverb_db is not None:
        ir = spatial.room_response(sr, settings.rt60_s)
        ambix = ambix + spatial.reverb_send(placed, ir, settings.reverb_db)
    tiles = dirac.analyse(ambix, sr) if np.any(ambix) else None  # shared by 5.1 and binaural
    stems = {
        "mono": placed,
        "foa": spatial.to_format(ambix, settings.fmt).astype(np.float32),
        "stereo": spatial.decode_stereo(ambix),
        "51": dirac.decode_51(ambix, sr, tiles),
        "binaural": hrtf.decode_binaural(ambix, sr, tiles),
    }
    return limiter.peak_limit_together(stems, sr)


def position_report(sources: SourceScene, camera: spatial.Camera, override: dict[str, float],
                    events: list[dict[str, Any]], settings: SpatialSettings) -> dict[str, Any]:
    """What the render followed, as JSON: the camera, the override, every layer at REPORT_HZ
    with its share and angles, the dominant layer as `track`, and each event's intended
    direction (the `foley eval spatial` reference): that of its layer, or where several are
    heard at once (`shared`), the direction of their share-weighted sum."""
    def angles(track: PositionTrack, tt: np.ndarray) -> dict[str, np.ndarray]:
        d = _directions(track, camera, override, tt)
        return {"x": d["x"], "y": d["y"], "area": d["area"],
                "azimuth_deg": np.degrees(d["azimuth"]), "elevation_deg": np.degrees(d["elevation"]),
                "distance_m": d["distance"]}

    grid = np.arange(int(sources.t[-1] * REPORT_HZ) + 1) / REPORT_HZ
    shares = sources.shares(grid)
    layers = [{"label": lay.label, "t": _r(grid), "share": _r(sh),
               **{k: _r(v) for k, v in angles(lay.track, grid).items()}}
              for lay, sh in zip(sources.layers, shares)]

    def intended(t: float) -> dict[str, Any]:
        share = sources.shares(t)[:, 0]
        heard = sources.heard(t)
        where = [angles(sources.layers[i].track, np.array([t])) for i in heard]
        if len(heard) == 1:
            out = {k: float(v[0]) for k, v in where[0].items()}
        else:
            vec = sum(share[i] * spatial.foa_gains(math.radians(w["azimuth_deg"][0]),
                                                    math.radians(w["elevation_deg"][0]))[[3, 1, 2]]
                      for i, w in zip(heard, where))
            out = {k: float(np.dot(share[heard], [w[k][0] for w in where]) / share[heard].sum())
                   for k in ("x", "y", "area", "distance_m")}
            out["azimuth_deg"] = math.degrees(math.atan2(vec[1], vec[0]))
            out["elevation_deg"] = math.degrees(math.atan2(vec[2], math.hypot(vec[0], vec[1])))
        return {**out, "layers": [sources.layers[i].label for i in heard], "shared": len(heard) > 1}

    rows = []
    for e in events:
        now, later = intended(e["t"]), intended(e["t"] + MOVE_WINDOW_S)
        rows.append({"t": e["t"], "kind": e.get("kind"),
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in now.items()},
                     "moving_deg": round(abs(later["azimuth_deg"] - now["azimuth_deg"]), 3)})
    return {
        "camera": {"hfov_deg": camera.hfov_deg, "vfov_deg": round(camera.vfov_deg, 4),
                   "aspect": round(camera.aspect, 6)},
        "settings": settings.to_dict(),
        "override": override,
        "track": {"t": _r(grid), **{k: _r(v) for k, v in angles(sources.dominant(), grid).items()}},
        "layers": layers,
        "events": rows,
    }


def _r(a: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in a]
