"""A shot's mono stem rendered where its sound is: placed mono, B-format, stereo, 5.1, binaural.

    track = spatial_track.sounding_track(features, envelope)          # or fixed_track(...)
    path = source_path(track, Camera(60, 16 / 9), override, n, sr)   # per-sample direction
    stems = render(mono, path, sr, SpatialSettings())

Directions are computed per sample from the position track (linear interpolation of the
picture position between frames, then the camera model), so gains of a moving source change
smoothly sample by sample — no block steps, no zipper noise. A person's override
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

from models import hrtf, spatial
from models.spatial_track import PositionTrack

OVERRIDE_KEYS = ("azimuth_deg", "elevation_deg", "distance_m")


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
    """Per-sample direction and distance of the source."""

    azimuth: np.ndarray     # rad
    elevation: np.ndarray   # rad
    distance: np.ndarray    # m


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


def source_path(track: PositionTrack, camera: spatial.Camera, override: dict[str, float],
                n: int, sr: int) -> SourcePath:
    """The track through the camera at every sample, with the override's fields fixed."""
    d = _directions(track, camera, override, np.arange(n) / sr)
    return SourcePath(d["azimuth"], d["elevation"], d["distance"])


def render(mono: np.ndarray, path: SourcePath, sr: int, settings: SpatialSettings) -> dict[str, np.ndarray]:
    """Every stem of the shot: mono (placed), foa (delivery format), stereo, 51, binaural."""
    placed = spatial.place(mono, path.distance, sr)
    ambix = spatial.encode_foa(placed, path.azimuth, path.elevation)
    if settings.reverb_db is not None:
        ir = spatial.room_response(sr, settings.rt60_s)
        ambix = ambix + spatial.reverb_send(placed, ir, settings.reverb_db)
    return {
        "mono": placed,
        "foa": spatial.to_format(ambix, settings.fmt).astype(np.float32),
        "stereo": spatial.decode_stereo(ambix),
        "51": spatial.decode_51(ambix),
        "binaural": hrtf.decode_binaural(ambix, sr),
    }


def position_report(track: PositionTrack, camera: spatial.Camera, override: dict[str, float],
                    events: list[dict[str, Any]], settings: SpatialSettings) -> dict[str, Any]:
    """What the render followed, as JSON: the camera, the override, the track at frame rate with
    its angles, and each event's intended direction (the `foley eval spatial` reference)."""
    def angles(tt: np.ndarray) -> dict[str, np.ndarray]:
        d = _directions(track, camera, override, tt)
        return {"x": d["x"], "y": d["y"], "area": d["area"],
                "azimuth_deg": np.degrees(d["azimuth"]), "elevation_deg": np.degrees(d["elevation"]),
                "distance_m": d["distance"]}

    frame = angles(track.t)
    ev_times = np.array([e["t"] for e in events], np.float64)
    ev = angles(ev_times) if len(ev_times) else {}
    dt = 0.1
    moves = []
    for t in ev_times:  # azimuth change over the 100 ms analysed after the onset
        a = angles(np.array([t, t + dt]))["azimuth_deg"]
        moves.append(abs(float(a[1] - a[0])))
    return {
        "camera": {"hfov_deg": camera.hfov_deg, "vfov_deg": round(camera.vfov_deg, 4),
                   "aspect": round(camera.aspect, 6)},
        "settings": settings.to_dict(),
        "override": override,
        "track": {"t": _r(track.t), **{k: _r(v) for k, v in frame.items()}},
        "events": [{"t": e["t"], "kind": e.get("kind"),
                    **{k: round(float(v[i]), 4) for k, v in ev.items()},
                    "moving_deg": round(moves[i], 3)} for i, e in enumerate(events)],
    }


def _r(a: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in a]
