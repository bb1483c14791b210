"""Rendered scenes whose sound events are known exactly: demo reel, tests, training data.

A scene is a few simple, high-contrast objects moving over a textured background under
closed-form physics. Frame i is drawn at t = i / fps from the analytic trajectory, so a
contact falls *between* frames and its time in `SceneTruth.events` is exact (sub-frame).
Frames are streamed one by one into ffmpeg (H.264, yuv420p, +faststart); a clip is never
held in memory.

Units: physics runs in frame heights (H) and seconds; gravity is 4.9 H/s², i.e. a frame
about 2 m tall under 9.81 m/s². Event strength is contact speed / the speed of a drop from a
full frame height, clipped to [0, 1]. Event x, y are the contact point in picture
coordinates ([0, 1], origin top-left) at the contact time, after camera pan; a contact
outside the picture (2 % margin) is not an event: there is nothing to see.

Kinds (all events are contacts; "pass" and "static" have none):
- bounce: a ball dropped from `drop_height`, bouncing with `restitution`; it comes to rest
  at the first contact whose next bounce would rise less than 4 % of the frame. "impact".
- steps: a figure (torso, head, two separate feet) walking right; each foot lifts, swings
  forward on a parabola and stops dead on the ground. "step" at every foot contact.
- slide: a box at rest is kicked at `start_s` and slides with constant friction until it
  stops smoothly. "scrape" at the slide start.
- static: objects at rest; only sensor noise (and flicker / pan if asked) changes.
- pass: a ball crossing the frame through the air at constant velocity. Moves, no contact.
"""
from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np

SceneKind = Literal["bounce", "steps", "slide", "static", "pass"]
KINDS: tuple[str, ...] = ("bounce", "steps", "slide", "static", "pass")
GRAVITY = 4.9          # frame heights / s²
GROUND = 0.86          # ground line, fraction of frame height
V_REF = math.sqrt(2.0 * GRAVITY * 1.0)   # contact speed of a full-frame-height drop (H/s)
MIN_BOUNCE = 0.04      # a bounce lower than this (fraction of H) is not rendered: ball rests
BARCODE_BITS = 16
FLOOR = 0.7            # floor brightness relative to the wall




@dataclass(frozen=True)
class SceneSpec:
    """What to render. Sizes are (width, height) in pixels, both even."""

    kind: SceneKind = "bounce"
    fps: float = 24.0
    duration_s: float = 3.0
    size: tuple[int, int] = (640, 360)
    seed: int = 0
    background: Literal["noise", "tiles"] = "noise"
    noise: float = 0.01            # sensor noise std, fraction of full scale
    pan: float = 0.0               # camera pan speed, frame widths / s (+: camera moves right)
    flicker: float = 0.0           # lighting gain fluctuation amplitude (0.05 = ±5 %)
    drop_height: float = 0.7       # bounce: first fall of the ball, fraction of frame height
    restitution: float = 0.55      # bounce: speed kept at each contact
    start_s: float = 0.25          # when the motion begins
    barcode: bool = False          # draw the frame index as a 16-bit strip at the top left


@dataclass
class SceneTruth:
    """Ground truth of a rendered scene; event t in seconds from the first frame."""

    events: list[dict] = field(default_factory=list)
    fps: float = 24.0
    n_frames: int = 0
    duration_s: float = 0.0
    size: tuple[int, int] = (640, 360)
    kind: str = "bounce"


@dataclass(frozen=True)
class Blob:
    """A superellipse drawn at world pixel centre (x, y); power 2 = ellipse, 6 = box."""

    x: float
    y: float
    rx: float
    ry: float
    color: tuple[float, float, float]
    power: float = 2.0


_Plan = Callable[[float], list[Blob]]
# bright objects on a mid-dark backdrop: flow runs on luma, so contrast must be in luma
_BALL, _BODY, _FOOT, _BOX = (1.0, 0.85, 0.55), (0.55, 0.8, 1.0), (1.0, 1.0, 0.4), (1.0, 0.7, 0.95)


def fps_fraction(fps: float) -> Fraction:
    """The exact rational rate behind a float rate (29.97002997 → 30000/1001, 21.5 → 43/2)."""
    return Fraction(fps).limit_denominator(1001)


def n_frames_for(spec: SceneSpec) -> int:
    """Frame count of a scene: round(duration_s * fps)."""
    return max(1, int(round(spec.duration_s * float(fps_fraction(spec.fps)))))


def _event(t: float, speed_h: float, x_world: float, spec: SceneSpec, kind: str) -> dict:
    w, _ = spec.size
    x = (x_world - spec.pan * w * t) / w
    return {"t": float(t), "strength": float(min(1.0, speed_h / V_REF)), "x": float(x),
            "y": GROUND, "kind": kind}


def _bounce(spec: SceneSpec) -> tuple[_Plan, list[dict]]:
    w, h = spec.size
    r, g = 0.06 * h, GRAVITY * h
    rest_y = GROUND * h - r
    fall = min(spec.drop_height, GROUND - 0.1) * h
    x0, vx = 0.3 * w, 0.08 * h
    contacts: list[tuple[float, float]] = []          # (time, impact speed px/s)
    t, v = spec.start_s + math.sqrt(2 * fall / g), math.sqrt(2 * g * fall)
    while True:
        contacts.append((t, v))
        v_up = spec.restitution * v
        if v_up**2 / (2 * g) < MIN_BOUNCE * h or len(contacts) >= 30:
            break
        t, v = t + 2 * v_up / g, v_up
    t_rest = contacts[-1][0]

    def x_at(t: float) -> float:
        return x0 + vx * (min(max(t, spec.start_s), t_rest) - spec.start_s)

    def y_at(t: float) -> float:
        if t <= spec.start_s:
            return rest_y - fall
        if t < contacts[0][0]:
            return rest_y - fall + 0.5 * g * (t - spec.start_s) ** 2
        for (tc, vc), (tn, _) in zip(contacts, contacts[1:]):
            if tc <= t < tn:
                dt = t - tc
                return rest_y - (spec.restitution * vc * dt - 0.5 * g * dt * dt)
        return rest_y

    events = [_event(tc, vc / h, x_at(tc), spec, "impact") for tc, vc in contacts]
    return (lambda t: [Blob(x_at(t), y_at(t), r, r, _BALL)]), events


def _steps(spec: SceneSpec) -> tuple[_Plan, list[dict]]:
    w, h = spec.size
    period, swing, stride, lift = 0.5, 0.38, 0.16 * h, 0.07 * h
    foot_rx, foot_ry = 0.06 * h, 0.03 * h
    foot_y = GROUND * h - foot_ry
    x0 = 0.15 * w

    def foot(j: int, t: float) -> tuple[float, float]:
        """Foot j's centre: swing n starts at start + (2n + j)·period and lasts `swing`."""
        n = math.floor((t - spec.start_s - j * period) / (2 * period))
        x_from = x0 + (j - 0.5) * stride + 2 * stride * max(n, 0)
        if n < 0:
            return x0 + (j - 0.5) * stride, foot_y
        s = (t - spec.start_s - (2 * n + j) * period) / swing
        if s >= 1.0:
            return x_from + 2 * stride, foot_y
        return x_from + 2 * stride * s, foot_y - lift * 4 * s * (1 - s)

    def plan(t: float) -> list[Blob]:
        bx = x0 + stride / period * max(t - spec.start_s, 0.0)
        torso_y = (GROUND - 0.42) * h          # well clear of the feet: separate regions
        blobs = [Blob(bx, torso_y, 0.055 * h, 0.1 * h, _BODY, 4.0),
                 Blob(bx, torso_y - 0.15 * h, 0.04 * h, 0.04 * h, _BODY)]
        for j in (0, 1):
            fx, fy = foot(j, t)
            blobs.append(Blob(fx, fy, foot_rx, foot_ry, _FOOT, 4.0))
        return blobs

    speed = math.hypot(2 * stride / swing, 4 * lift / swing) / h
    events = []
    for k in range(1000):
        tc = spec.start_s + k * period + swing
        if tc >= spec.duration_s:
            break
        events.append(_event(tc, speed, foot(k % 2, tc)[0], spec, "step"))
    return plan, events


def _slide(spec: SceneSpec) -> tuple[_Plan, list[dict]]:
    w, h = spec.size
    rx, ry, v0, decel = 0.08 * h, 0.05 * h, 1.0 * h, 0.5 * h
    x0, y = 0.15 * w, GROUND * h - ry
    t_stop = v0 / decel

    def x_at(t: float) -> float:
        dt = min(max(t - spec.start_s, 0.0), t_stop)
        return x0 + v0 * dt - 0.5 * decel * dt * dt

    events = [_event(spec.start_s, v0 / h, x0, spec, "scrape")]
    return (lambda t: [Blob(x_at(t), y, rx, ry, _BOX, 6.0)]), events


def _static(spec: SceneSpec) -> tuple[_Plan, list[dict]]:
    w, h = spec.size
    blobs = [Blob(0.35 * w, GROUND * h - 0.06 * h, 0.06 * h, 0.06 * h, _BALL),
             Blob(0.65 * w, GROUND * h - 0.05 * h, 0.08 * h, 0.05 * h, _BOX, 6.0)]
    return (lambda t: blobs), []


def _pass(spec: SceneSpec) -> tuple[_Plan, list[dict]]:
    w, h = spec.size
    r = 0.05 * h
    cross = max(spec.duration_s - spec.start_s, 0.5)

    def plan(t: float) -> list[Blob]:
        s = (t - spec.start_s) / cross
        return [Blob(-2 * r + (w + 4 * r) * s, 0.25 * h + 0.1 * h * s, r, r, _BALL)]

    return plan, []


_PLANS = {"bounce": _bounce, "steps": _steps, "slide": _slide, "static": _static, "pass": _pass}


def scene_truth(spec: SceneSpec) -> SceneTruth:
    """The events and frame grid of a scene, without rendering it."""
    _, truth = _plan(spec)
    return truth


def _plan(spec: SceneSpec) -> tuple[_Plan, SceneTruth]:
    if spec.kind not in _PLANS:
        raise ValueError(f"unknown scene kind {spec.kind!r}; expected one of {KINDS}")
    w, h = spec.size
    if w % 2 or h % 2 or w < 64 or h < 64:
        raise ValueError(f"scene size must be even and at least 64x64, got {w}x{h}")
    if spec.fps <= 0 or spec.duration_s <= 0:
        raise ValueError(f"fps and duration_s must be positive, got {spec.fps}, {spec.duration_s}")
    plan, events = _PLANS[spec.kind](spec)
    fps = float(fps_fraction(spec.fps))
    n = n_frames_for(spec)
    events = [e for e in events if 0.0 < e["t"] < n / fps and 0.02 <= e["x"] <= 0.98]
    return plan, SceneTruth(events, fps, n, n / fps, (w, h), spec.kind)


def _noise_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise, zero mean, unit std, periodic in x and y (so a pan can wrap)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy) * (640.0 / w)          # same look at any resolution
    band = ((f > 1 / 96) & (f < 1 / 6)).astype(np.float64) / np.maximum(f, 1e-3) ** 0.5
    c = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * band))
    return c / (c.std() + 1e-9)


def background(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """The scene's backdrop, float32 (H, W, 3) in [0, 1]: textured noise or irregular tiles."""
    w, h = spec.size
    chans = [_noise_texture(h, w, rng) for _ in range(3)]
    if spec.background == "tiles":
        cell = max(8, h // 12)
        yy, xx = np.mgrid[0:h, 0:w]
        tiles = rng.uniform(0.24, 0.42, (h // cell + 1, w // cell + 1))
        grout = ((yy % cell) < max(1, cell // 12)) | ((xx % cell) < max(1, cell // 12))
        lum = np.where(grout, 0.18, tiles[yy // cell, xx // cell]) + 0.03 * chans[0]
    else:
        lum = 0.33 + 0.09 * chans[0]
    tint = 0.03 * chans[1]
    tex = np.stack([lum + tint, lum + 0.03 * chans[2], lum - tint], axis=2)
    floor = np.ones((h, 1, 1), np.float32)
    floor[int(GROUND * h):] = FLOOR                        # a darker floor under the ground line
    return np.clip(tex * floor, 0.0, 1.0).astype(np.float32)


def draw_blob(frame: np.ndarray, blob: Blob, cam_x: float) -> None:
    """Composite an anti-aliased, checker-patterned superellipse into frame (in place)."""
    h, w, _ = frame.shape
    cx = blob.x - cam_x
    x0, x1 = max(int(cx - blob.rx) - 2, 0), min(int(cx + blob.rx) + 3, w)
    y0, y1 = max(int(blob.y - blob.ry) - 2, 0), min(int(blob.y + blob.ry) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = (xx + 0.5 - cx) / blob.rx, (yy + 0.5 - blob.y) / blob.ry
    d = (np.abs(u) ** blob.power + np.abs(v) ** blob.power) ** (1.0 / blob.power)
    alpha = np.clip((1.0 - d) * min(blob.rx, blob.ry) + 0.5, 0.0, 1.0)[..., None]
    # a smooth (band-limited) pattern: hard-edged texture would move in whole pixels
    pattern = 0.75 + 0.25 * np.clip(2.0 * np.sin(u * 1.5 * math.pi) * np.sin(v * 1.5 * math.pi), -1, 1)
    color = np.asarray(blob.color, np.float32) * pattern[..., None]
    frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - alpha) + color * alpha


def draw_barcode(frame: np.ndarray, index: int) -> None:
    """Write `index` as 16 black/white cells along the top-left edge (in place, uint8 or float)."""
    h, w = frame.shape[:2]
    cell = max(4, w // 40)
    hi = 255 if frame.dtype == np.uint8 else 1.0
    frame[: cell + 2, : BARCODE_BITS * cell + 2] = hi / 2
    for b in range(BARCODE_BITS):
        frame[1 : cell + 1, 1 + b * cell : 1 + (b + 1) * cell] = hi if (index >> b) & 1 else 0


def read_barcode(frame: np.ndarray) -> int:
    """Read back the index written by `draw_barcode`, at any scale (RGB or gray uint8)."""
    gray = frame if frame.ndim == 2 else frame.mean(axis=2)
    h, w = gray.shape
    cell = w / 40.0
    value = 0
    for b in range(BARCODE_BITS):
        cx, cy = 1 + (b + 0.5) * cell, 1 + cell / 2
        patch = gray[int(cy - cell / 4) : int(cy + cell / 4) + 1, int(cx - cell / 4) : int(cx + cell / 4) + 1]
        value |= int(patch.mean() > 127) << b
    return value


def _frames(spec: SceneSpec, plan: _Plan, n: int, fps: float):
    """Yield n uint8 RGB frames drawn at t = i / fps (one in memory at a time)."""
    rng = np.random.default_rng(spec.seed)
    tex = background(spec, rng)
    w, h = spec.size
    phase = rng.uniform(0, 2 * math.pi)
    for i in range(n):
        t = i / fps
        cam_x = spec.pan * w * t
        m = np.float32([[1, 0, -cam_x], [0, 1, 0]])
        frame = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        for blob in plan(t):
            draw_blob(frame, blob, cam_x)
        if spec.flicker:
            gain = 1 + spec.flicker * (0.6 * math.sin(2 * math.pi * 7.3 * t + phase) + 0.4 * rng.uniform(-1, 1))
            frame *= gain
        if spec.noise:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * spec.noise
        out = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if spec.barcode:
            draw_barcode(out, i)
        yield out


def encode_frames(frames: Iterable[np.ndarray], size: tuple[int, int], fps: float,
                  out_path: Path | str) -> None:
    """Pipe RGB uint8 frames into an H.264 mp4 at `out_path` (yuv420p, crf 18, faststart).

    Raises RuntimeError with ffmpeg's own message if it fails."""
    w, h = size
    args = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}",
                     framerate=str(fps_fraction(fps)))
        .output(str(out_path), vcodec="libx264", pix_fmt="yuv420p", crf=18, preset="veryfast",
                movflags="+faststart", f="mp4")
        .global_args("-hide_banner", "-loglevel", "error")
        .compile(cmd=imageio_ffmpeg.get_ffmpeg_exe(), overwrite_output=True)
    )
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=err)
        try:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed encoding {out_path}: "
                               f"{err.read().decode(errors='replace')[-800:]}")


def render_scene(spec: SceneSpec, out_path: Path) -> SceneTruth:
    """Render `spec` to an H.264 mp4 at `out_path` (atomic) and return its ground truth."""
    plan, truth = _plan(spec)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".scene-", suffix=".mp4", dir=out_path.parent)
    os.close(fd)
    try:
        encode_frames(_frames(spec, plan, truth.n_frames, truth.fps), spec.size, spec.fps, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return truth
