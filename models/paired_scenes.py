"""Paired scenes: rendered picture with physically timed sound, for the envelope model's data.

A `PairedSpec` (frozen, seeded) is drawn by `sample_spec(rng, split)`; `paired_truth(spec)`
gives its ground truth without rendering, `render_frames(spec)` streams its uint8 RGB frames
(frame i drawn at t = i / fps from closed-form trajectories, so a contact falls between frames
at its exact time) and `render_audio(truth, samples, sr)` mixes its sound. Drawing reuses
`models.scenes` (backdrop, superellipse objects, units: frame heights H, seconds, gravity
4.9 H/s², ground line at 0.86 H); picture x, y are in [0, 1] from the top left, after pan.

Kinds (the scene's `kind`; several objects may share a scene):
- impacts: 1–3 objects dropped (restitution 0–0.3, often simultaneously); some break on the
  first contact (a "break" sound, fragments scatter silently). Strength = contact speed /
  the speed of a full-frame-height drop (`scenes.V_REF`), clipped to [0, 1].
- bounce: 1–2 balls bouncing (restitution 0.45–0.8) until a bounce would rise < 4 % of H,
  then rolling silently to a stop.
- steps: 1–2 walkers (size, cadence, direction vary; some stop after a few steps); a "step"
  at every foot contact, strength = foot speed / (V_REF / 2).
- scrape: a box kicked along the floor (constant friction), dropped in and sliding on, or
  dragged (speed rises and falls as sin²); a "scrape" sustained segment while it moves.
- rub: a block rubbed back and forth (x = x0 + A(1 − cos 2πt/P)); a "rub" segment.
- pass, fly: objects crossing through the air (straight / wavy): they move and never sound.
- static: objects at rest; only camera, light, occluder and sensor noise change.
Sounding kinds sometimes carry a silent flying distractor; any kind may have resting props.
A contact or a sustained sound whose point is outside the picture (2 % margin) is neither in
the truth nor in the audio: there is nothing to see. One behind the occluder stays, flagged
`occluded`.

Picture variation: render width 640 (the pass's proxies are 320 px: the data set's proxies
are downscaled from this like a real source), aspect 16:9 / 1.85 / 2.39 / 4:3; backdrop noise
or tiles, brightness ×0.7–1.3 with a colour tint, or a bright backdrop with dark objects;
object sizes, shapes and colours drawn per object; camera pan (45 %, 0.03–0.25 widths/s);
an occluder crossing in front (20 %); flicker (20 %, 2–12 Hz) and gradual light change
(25 %, to ×0.6–1.4); sensor noise 0–3 %. Durations 3–5 s by default, snapped to whole frames.

Truth (`PairedTruth`): `events`, one dict per contact — t (s), strength [0, 1], x, y, kind
(impact | break | step), material, sound (the key it plays), occluded, object (index into
spec.movers) — and `sustained`, one dict per sliding sound — kind (scrape | rub), material,
sound, t_start, t_end, speed (H/s, 0 while off screen) and x on a 100 Hz grid from t0,
level_db, abrupt (it starts at speed, e.g. a kick) — plus fps, n_frames, duration_s = n / fps.
`onsets` lists every contact and every abrupt sustained start.

Sound: `render_audio` places a one-shot (drawn from `samples[event["sound"]]`, gain
−30 · (1 − strength) dB ± 1 dB) so that where `models.audio_env.detect_onsets` hears it
start over the room tone lands on sample round(t · sr): a soft scuff under the tone or the
−40 dBFS threshold does not count, and of two attacks within 50 ms the one that stands out
does (else its `attack_start`). Contacts 60 ms clear of others are heard within 5 ms of their
time (~95 %, median 0.02 ms); recordings with several attacks (heel and toe, shards) add
onsets of their own after it. Sustained segments play a looped texture (its own swells
flattened, unit RMS, then −24 dBFS, the library's one-shot loudness) at
level_db + 20·log10(min(2, speed / 1 H/s)): the level follows the sliding speed. Then a
short room (exponentially decaying noise, RT60 0.1–0.6 s, −26…−12 dB wet), room tone (pink
noise above 80 Hz, −68…−52 dBFS RMS, so a silent scene stays under −45 dBFS with no onset),
and one global gain if needed to keep peaks under −1 dBFS. All drawn from the spec's seed.

Sound keys are "category/material" of the sfx catalog (impacts/wood, footsteps/gravel,
breaks/glass, movement/ground, water/water …); textures the library lacks are synthesized:
"synth/wood" (kit.scrape_loop), "synth/cloth" (kit.cloth_loop), "synth/stone|metal|glass"
(friction noise through the material's modes from `models.kit.MATERIALS`).

Splits: "train" and "heldout" share nothing. Held-out scenes use only the materials in
HELDOUT_MATERIALS (glass, metal: every event and texture), frame rates 48, 50 and 59.94, and
seeds ≥ 2³⁰; train scenes use every other material, rates 12, 15, 23.976, 24, 25, 29.97, 30
and 60, and seeds < 2³⁰.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import fftconvolve

from models import kit
from models.audio_env import attack_start, detect_onsets
from models.scenes import (GRAVITY, GROUND, MIN_BOUNCE, V_REF, SceneSpec, background, Blob,
                           draw_blob, fps_fraction)

PairedKind = Literal["impacts", "bounce", "steps", "scrape", "rub", "pass", "fly", "static"]
KINDS: tuple[str, ...] = ("impacts", "bounce", "steps", "scrape", "rub", "pass", "fly", "static")
KIND_WEIGHTS = (0.18, 0.14, 0.16, 0.14, 0.10, 0.10, 0.08, 0.10)
CONTACT_KINDS = ("impacts", "bounce", "steps")
SUSTAINED_KINDS = ("scrape", "rub")
SILENT_KINDS = ("pass", "fly", "static")
SPLITS = ("train", "heldout")
TRAIN_RATES = (12.0, 15.0, 24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 60.0)
HELDOUT_RATES = (48.0, 50.0, 60000 / 1001)
HELDOUT_MATERIALS = frozenset({"glass", "metal"})
HELDOUT_SEED_BASE = 2**30
DURATIONS = (3.0, 5.0)
RENDER_WIDTH = 640
ASPECTS = ((16 / 9, 0.55), (1.85, 0.15), (2.39, 0.15), (4 / 3, 0.15))
AUDIO_SR = 16000
STRENGTH_RANGE_DB = 30.0
SUSTAIN_RATE_HZ = 100.0
V_SUSTAIN = 1.0          # H/s: sliding speed at which a texture plays at level_db
MAX_SUSTAIN = 2.0        # ... and at most 2× that amplitude (+6 dB), from 2 H/s on
TEXTURE_DB = -24.0       # texture RMS at full level (= library one-shot loudness)
PEAK_DBFS = -1.0
MARGIN = 0.02            # picture margin outside which nothing counts
NOISE_BANK = 12

_IMPACT = ("wood", "dirt", "stone", "ground", "body", "water", "foliage", "metal")
IMPACT_KEYS = tuple(f"impacts/{m}" for m in _IMPACT)
BOUNCE_KEYS = tuple(f"impacts/{m}" for m in ("wood", "stone", "ground", "dirt", "metal"))
BREAK_KEYS = tuple(f"breaks/{m}" for m in ("wood", "glass", "metal"))
STEP_KEYS = tuple(f"footsteps/{m}" for m in (
    "carpet", "dirt", "grass", "gravel", "ground", "ice", "linoleum", "sand", "snow", "stone",
    "tile", "water", "wood", "metal", "glass"))
TEXTURE_KEYS = ("movement/ground", "movement/snow", "movement/foliage", "water/water",
                "synth/wood", "synth/cloth", "synth/stone", "synth/metal", "synth/glass")


def material_of(key: str) -> str:
    """The material of a sound key ("impacts/wood" → "wood"); "" for no sound."""
    return key.split("/", 1)[1] if key else ""


# ---------------------------------------------------------------- what a scene holds


@dataclass(frozen=True)
class Look:
    """An object's appearance: half-height (H), width / height, superellipse power, RGB."""

    size: float
    aspect: float
    power: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Drop:
    """Falls from `height` (H, bottom above ground) at start_s; bounces; may break."""

    look: Look
    x0: float              # world x, frame widths
    height: float
    vx: float              # H/s
    restitution: float
    start_s: float
    sound: str
    breaks: bool = False


@dataclass(frozen=True)
class Walk:
    """A figure walking (direction ±1) with a step every `period` s, for `n_steps` steps."""

    x0: float
    scale: float
    period: float
    direction: int
    start_s: float
    n_steps: int
    body: tuple[float, float, float]
    feet: tuple[float, float, float]
    sound: str


@dataclass(frozen=True)
class Slide:
    """A box sliding on the floor: kicked (or landing from `height`) then friction; or dragged."""

    look: Look
    x0: float
    height: float          # > 0: falls in with vx = v0, lands (contact `sound`), slides on
    v0: float              # H/s, signed
    decel: float           # H/s² (kick) ; drag: the drag lasts `drag_s`
    profile: Literal["kick", "drag"]
    drag_s: float
    start_s: float
    texture: str
    level_db: float
    sound: str = ""


@dataclass(frozen=True)
class Rub:
    """A block rubbed to and fro: x = x0 + d·A(1 − cos 2πτ/P) for `strokes` periods."""

    look: Look
    x0: float
    amplitude: float       # H
    period: float
    strokes: int
    direction: int
    start_s: float
    texture: str
    level_db: float


@dataclass(frozen=True)
class Flight:
    """Through the air, silent: straight (wave 0) or wavy, from start_s on."""

    look: Look
    x0: float
    y0: float              # fraction of H from the top
    vx: float
    vy: float
    wave: float            # H
    wave_period: float
    start_s: float


@dataclass(frozen=True)
class Rest:
    """An object lying on the floor."""

    look: Look
    x0: float


@dataclass(frozen=True)
class Occluder:
    """A tall foreground panel crossing the picture (screen x in widths, speed in widths/s)."""

    x0: float
    speed: float
    width: float
    color: tuple[float, float, float]


Mover = Drop | Walk | Slide | Rub | Flight | Rest


@dataclass(frozen=True)
class PairedSpec:
    """Everything a paired scene is rendered from; the same spec gives the same clip."""

    kind: PairedKind
    seed: int
    split: str
    fps: float
    duration_s: float
    size: tuple[int, int]
    movers: tuple[Mover, ...]
    background: Literal["noise", "tiles"] = "noise"
    bg_gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.01
    pan: float = 0.0               # frame widths / s
    flicker: float = 0.0
    flicker_hz: float = 7.3
    light_end: float = 1.0         # light gain reached (smoothly) at the end
    occluder: Occluder | None = None
    rt60_s: float = 0.3
    wet_db: float = -18.0
    room_db: float = -55.0


@dataclass
class PairedTruth:
    """Ground truth: contact events and sustained segments, times in seconds from frame 0."""

    spec: PairedSpec
    events: list[dict] = field(default_factory=list)
    sustained: list[dict] = field(default_factory=list)
    fps: float = 24.0
    n_frames: int = 0
    duration_s: float = 0.0

    @property
    def materials(self) -> list[str]:
        found = {e["material"] for e in self.events} | {s["material"] for s in self.sustained}
        return sorted(found)

    @property
    def onsets(self) -> list[dict]:
        """Where sound starts: every contact, and every sustained sound that starts abruptly."""
        out = [{"t": e["t"], "strength": e["strength"], "kind": e["kind"]} for e in self.events]
        out += [{"t": s["t_start"], "strength": s["start_level"], "kind": s["kind"]}
                for s in self.sustained if s["abrupt"]
                and all(abs(e["t"] - s["t_start"]) > 0.05 for e in self.events)]
        return sorted(out, key=lambda o: o["t"])


def spec_dict(spec: PairedSpec) -> dict:
    """The spec as JSON-ready data (each mover tagged with its type)."""
    d = asdict(spec)
    d["movers"] = [{"type": type(m).__name__, **asdict(m)} for m in spec.movers]
    return d


# ---------------------------------------------------------------- physics


@dataclass
class _Track:
    draw: Callable[[float], list[Blob]]
    # (t, strength, world x px, kind, sound)
    contacts: list[tuple[float, float, float, str, str]] = field(default_factory=list)
    # (t_start, t_end, speed(t) H/s, world x px(t), kind, sound, level_db)
    sustains: list[tuple[float, float, Callable, Callable, str, str, float]] = field(default_factory=list)


def _blob_size(look: Look, h: int) -> tuple[float, float]:
    return look.size * h * look.aspect, look.size * h


def _drop(m: Drop, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    rx, ry = _blob_size(m.look, h)
    g, rest_y, fall = GRAVITY * h, GROUND * h - ry, m.height * h
    contacts: list[tuple[float, float]] = []
    t, v = m.start_s + math.sqrt(2 * fall / g), math.sqrt(2 * g * fall)
    while True:
        contacts.append((t, v))
        v_up = m.restitution * v
        if m.breaks or v_up**2 / (2 * g) < MIN_BOUNCE * h or len(contacts) >= 30:
            break
        t, v = t + 2 * v_up / g, v_up
    t_rest, vx, roll = contacts[-1][0], m.vx * h, 1.5 * h
    x_rest = m.x0 * w + vx * (t_rest - m.start_s)

    def x_at(t: float) -> float:
        if t <= t_rest:
            return m.x0 * w + vx * max(t - m.start_s, 0.0)
        tau = min(t - t_rest, abs(vx) / roll)
        return x_rest + vx * tau - 0.5 * math.copysign(roll, vx) * tau * tau

    def y_at(t: float) -> float:
        if t <= m.start_s:
            return rest_y - fall
        if t < contacts[0][0]:
            return rest_y - fall + 0.5 * g * (t - m.start_s) ** 2
        for (tc, vc), (tn, _) in zip(contacts, contacts[1:]):
            if tc <= t < tn:
                return rest_y - (m.restitution * vc * (t - tc) - 0.5 * g * (t - tc) ** 2)
        return rest_y

    frags = [(rng.uniform(-0.9, 0.9) * h + 0.5 * vx, rng.uniform(0.3, 0.5))
             for _ in range(int(rng.integers(4, 7)))]

    def draw(t: float) -> list[Blob]:
        if not (m.breaks and t >= t_rest):
            return [Blob(x_at(t), y_at(t), rx, ry, m.look.color, m.look.power)]
        out = []
        for vf, s in frags:           # shards slide out and stop (friction 2 H/s²)
            tau = min(t - t_rest, abs(vf) / (2 * h))
            x = x_rest + vf * tau - math.copysign(h, vf) * tau * tau
            out.append(Blob(x, GROUND * h - s * ry, s * rx, s * ry, m.look.color, m.look.power))
        return out

    kind = "break" if m.breaks else "impact"
    return _Track(draw, [(tc, vc / h / V_REF, x_at(tc), kind, m.sound) for tc, vc in contacts])


def _walk(m: Walk, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    s, d, p = m.scale, m.direction, m.period
    swing, stride, lift = 0.76 * p, 0.16 * h * s, 0.07 * h * s
    foot_rx, foot_ry = 0.06 * h * s, 0.03 * h * s
    foot_y, x0 = GROUND * h - foot_ry, m.x0 * w

    def foot(j: int, t: float) -> tuple[float, float]:
        """Foot j's centre: step k = 2n + j swings from start + k·period for `swing` s."""
        n = math.floor((t - m.start_s - j * p) / (2 * p))
        n_max = (m.n_steps - 1 - j) // 2                   # last swing of this foot
        home = x0 + d * (j - 0.5) * stride
        if n < 0 or n_max < 0:
            return home, foot_y
        n = min(n, n_max)
        u = (t - m.start_s - (2 * n + j) * p) / swing
        x_from = home + d * 2 * stride * n
        if u >= 1.0:
            return x_from + d * 2 * stride, foot_y
        return x_from + d * 2 * stride * u, foot_y - lift * 4 * u * (1 - u)

    def draw(t: float) -> list[Blob]:
        bx = x0 + d * stride / p * min(max(t - m.start_s, 0.0), m.n_steps * p)
        torso_y = (GROUND - 0.42 * s) * h
        blobs = [Blob(bx, torso_y, 0.055 * h * s, 0.1 * h * s, m.body, 4.0),
                 Blob(bx, torso_y - 0.15 * h * s, 0.04 * h * s, 0.04 * h * s, m.body)]
        return blobs + [Blob(*foot(j, t), foot_rx, foot_ry, m.feet, 4.0) for j in (0, 1)]

    strength = math.hypot(2 * stride / swing, 4 * lift / swing) / h / (0.5 * V_REF)
    contacts = []
    for k in range(min(m.n_steps, 1000)):
        tc = m.start_s + k * p + swing
        if tc >= spec.duration_s:
            break
        contacts.append((tc, strength, foot(k % 2, tc)[0], "step", m.sound))
    return _Track(draw, contacts)


def _slide(m: Slide, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    rx, ry = _blob_size(m.look, h)
    y_rest, sign, v0 = GROUND * h - ry, math.copysign(1.0, m.v0), abs(m.v0) * h
    t_s = m.start_s + (math.sqrt(2 * m.height / GRAVITY) if m.height > 0 else 0.0)
    x_s = m.x0 * w + (sign * v0 * (t_s - m.start_s) if m.height > 0 else 0.0)
    if m.profile == "drag":
        t_e = t_s + m.drag_s
        def speed(t: float) -> float:                      # px/s
            return v0 * math.sin(math.pi * (t - t_s) / m.drag_s) ** 2 if t_s <= t <= t_e else 0.0
        def travelled(tau: float) -> float:
            return v0 * (tau / 2 - m.drag_s / (4 * math.pi) * math.sin(2 * math.pi * tau / m.drag_s))
    else:
        decel = m.decel * h
        t_e = t_s + v0 / decel
        def speed(t: float) -> float:
            return max(v0 - decel * (t - t_s), 0.0) if t_s <= t <= t_e else 0.0
        def travelled(tau: float) -> float:
            return v0 * tau - 0.5 * decel * tau * tau

    def x_at(t: float) -> float:
        if t < t_s:
            return m.x0 * w + (sign * v0 * max(t - m.start_s, 0.0) if m.height > 0 else 0.0)
        return x_s + sign * travelled(min(t, t_e) - t_s)

    def y_at(t: float) -> float:
        if m.height <= 0 or t >= t_s:
            return y_rest
        return y_rest - m.height * h + 0.5 * GRAVITY * h * max(t - m.start_s, 0.0) ** 2

    track = _Track(lambda t: [Blob(x_at(t), y_at(t), rx, ry, m.look.color, m.look.power)])
    if m.height > 0 and m.sound:
        track.contacts.append((t_s, math.sqrt(2 * GRAVITY * m.height) / V_REF, x_s, "impact", m.sound))
    track.sustains.append((t_s, t_e, lambda t: speed(t) / h, x_at, "scrape", m.texture, m.level_db))
    return track


def _rub(m: Rub, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    rx, ry = _blob_size(m.look, h)
    a, om, t_e = m.amplitude * h, 2 * math.pi / m.period, m.start_s + m.strokes * m.period

    def x_at(t: float) -> float:
        tau = min(max(t - m.start_s, 0.0), t_e - m.start_s)
        return m.x0 * w + m.direction * a * (1 - math.cos(om * tau))

    def speed(t: float) -> float:                          # H/s
        return a * om * abs(math.sin(om * (t - m.start_s))) / h if m.start_s <= t <= t_e else 0.0

    track = _Track(lambda t: [Blob(x_at(t), GROUND * h - ry, rx, ry, m.look.color, m.look.power)])
    track.sustains.append((m.start_s, t_e, speed, x_at, "rub", m.texture, m.level_db))
    return track


def _flight(m: Flight, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    rx, ry = _blob_size(m.look, h)

    def draw(t: float) -> list[Blob]:
        tau = max(t - m.start_s, 0.0)
        y = m.y0 * h + m.vy * h * tau + m.wave * h * math.sin(2 * math.pi * tau / m.wave_period)
        return [Blob(m.x0 * w + m.vx * h * tau, y, rx, ry, m.look.color, m.look.power)]

    return _Track(draw)


def _rest(m: Rest, spec: PairedSpec, rng: np.random.Generator) -> _Track:
    w, h = spec.size
    rx, ry = _blob_size(m.look, h)
    blob = Blob(m.x0 * w, GROUND * h - ry, rx, ry, m.look.color, m.look.power)
    return _Track(lambda t: [blob])


_TRACKS = {Drop: _drop, Walk: _walk, Slide: _slide, Rub: _rub, Flight: _flight, Rest: _rest}


def _occluder_blob(spec: PairedSpec, t: float) -> Blob | None:
    if spec.occluder is None:
        return None
    w, h = spec.size
    o = spec.occluder
    return Blob((o.x0 + o.speed * t) * w, 0.5 * h, 0.5 * o.width * w, 0.62 * h, o.color, 8.0)


def _plan(spec: PairedSpec) -> tuple[Callable[[float], list[Blob]], PairedTruth]:
    w, h = spec.size
    if w % 2 or h % 2 or w < 64 or h < 64:
        raise ValueError(f"paired scene size must be even and at least 64x64, got {w}x{h}")
    fps = float(fps_fraction(spec.fps))
    n = max(1, int(round(spec.duration_s * fps)))
    dur = n / fps
    tracks = [_TRACKS[type(m)](m, spec, np.random.default_rng([spec.seed, 3, i]))
              for i, m in enumerate(spec.movers)]

    def screen_x(x_px: float, t: float) -> float:
        return (x_px - spec.pan * w * t) / w

    def occluded(x: float, t: float) -> bool:
        o = _occluder_blob(spec, t)
        return o is not None and abs(x * w - o.x) < o.rx

    events = []
    for i, tr in enumerate(tracks):
        for t, strength, x_px, kind, sound in tr.contacts:
            x = screen_x(x_px, t)
            if 0.0 < t < dur and MARGIN <= x <= 1 - MARGIN and sound:
                events.append({"t": float(t), "strength": float(min(1.0, strength)), "x": float(x),
                               "y": GROUND, "kind": kind, "material": material_of(sound),
                               "sound": sound, "occluded": occluded(x, t), "object": i})
    sustained = []
    for i, tr in enumerate(tracks):
        for t0, t1, speed, x_at, kind, sound, level_db in tr.sustains:
            k0 = max(0, math.floor(t0 * SUSTAIN_RATE_HZ))
            k1 = math.ceil(min(t1, dur) * SUSTAIN_RATE_HZ)
            grid = np.arange(k0, k1 + 1) / SUSTAIN_RATE_HZ
            xs = np.array([screen_x(x_at(t), t) for t in grid])
            seen = (xs >= MARGIN) & (xs <= 1 - MARGIN)
            v = np.array([speed(min(max(t, t0), t1)) for t in grid]) * seen   # silent off screen
            if t0 >= dur or not np.any(v > 0.05 * V_SUSTAIN):
                continue
            on_screen = bool(seen[0] or seen[min(1, len(seen) - 1)])
            start_level = min(1.0, speed(t0) / V_SUSTAIN) * on_screen
            sustained.append({
                "kind": kind, "material": material_of(sound), "sound": sound, "object": i,
                "t_start": float(max(t0, 0.0)), "t_end": float(min(t1, dur)), "t0": float(grid[0]),
                "rate_hz": SUSTAIN_RATE_HZ, "speed": [round(float(s), 5) for s in v],
                "x": [round(float(x), 5) for x in xs], "y": GROUND, "level_db": float(level_db),
                "abrupt": bool(start_level > 0.3 and t0 > 0), "start_level": float(start_level)})

    def plan(t: float) -> list[Blob]:
        return [b for tr in tracks for b in tr.draw(t)]

    events.sort(key=lambda e: e["t"])
    return plan, PairedTruth(spec, events, sustained, fps, n, dur)


def paired_truth(spec: PairedSpec) -> PairedTruth:
    """The events and sustained segments of a scene, without rendering it."""
    return _plan(spec)[1]


def render_frames(spec: PairedSpec) -> Iterator[np.ndarray]:
    """Yield the scene's uint8 RGB frames (H, W, 3), drawn at t = i / fps, one at a time."""
    plan, truth = _plan(spec)
    w, h = spec.size
    rng = np.random.default_rng([spec.seed, 1])
    tex = background(SceneSpec(size=spec.size, background=spec.background), rng)
    tex = np.clip(tex * spec.bg_gain * np.asarray(spec.tint, np.float32), 0.0, 1.0).astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    # sensor noise from a bank of independent fields (drawing 10⁶ normals a frame was most of
    # the render time); consecutive frames never share one
    bank = None
    if spec.noise:
        bank = rng.standard_normal((NOISE_BANK, h, w, 3), dtype=np.float32) * spec.noise
    pick = 0
    for i in range(truth.n_frames):
        t = i / truth.fps
        cam_x = spec.pan * w * t
        if spec.pan:
            m = np.float32([[1, 0, -cam_x], [0, 1, 0]])
            frame = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        else:
            frame = tex.copy()
        for blob in plan(t):
            draw_blob(frame, blob, cam_x)
        if (occ := _occluder_blob(spec, t)) is not None:
            draw_blob(frame, occ, 0.0)
        u = t / truth.duration_s
        gain = 1 + (spec.light_end - 1) * u * u * (3 - 2 * u)
        if spec.flicker:
            gain *= 1 + spec.flicker * (0.6 * math.sin(2 * math.pi * spec.flicker_hz * t + phase)
                                        + 0.4 * rng.uniform(-1, 1))
        if gain != 1:
            frame *= gain
        if bank is not None:
            pick = (pick + int(rng.integers(1, NOISE_BANK))) % NOISE_BANK
            frame += bank[pick]
        np.clip(frame, 0.0, 1.0, out=frame)
        yield cv2.convertScaleAbs(frame, alpha=255.0)


# ---------------------------------------------------------------- drawing a spec


def _pools(split: str, available: Collection[str] | None) -> dict[str, list[str]]:
    """Sound keys per role that this split may use (and the library has)."""
    def ok(key: str) -> bool:
        held = material_of(key) in HELDOUT_MATERIALS
        have = available is None or key.startswith("synth/") or key in available
        return have and held == (split == "heldout")
    return {role: [k for k in keys if ok(k)] for role, keys in (
        ("impact", IMPACT_KEYS), ("bounce", BOUNCE_KEYS), ("break", BREAK_KEYS),
        ("step", STEP_KEYS), ("texture", TEXTURE_KEYS))}


def _color(rng: np.random.Generator, dark: bool) -> tuple[float, float, float]:
    v = rng.uniform(0.04, 0.18) if dark else rng.uniform(0.8, 1.0)
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.15, 0.9), v)
    return (round(r, 4), round(g, 4), round(b, 4))


def _look(rng: np.random.Generator, dark: bool, size: tuple[float, float], aspect: tuple[float, float],
          powers: Sequence[float] = (2.0, 2.0, 4.0, 6.0)) -> Look:
    return Look(float(rng.uniform(*size)), float(rng.uniform(*aspect)), float(rng.choice(powers)),
                _color(rng, dark))


def _movers(kind: str, rng: np.random.Generator, pools: dict[str, list[str]], dur: float,
            pan: float, dark: bool, aspect: float) -> list[Mover]:
    u = rng.uniform
    # world x of something at screen x `xs` at time t; H/s → widths/s is ÷ aspect
    def wx(xs: float, t: float) -> float:
        return float(xs + pan * t)
    out: list[Mover] = []
    if kind == "impacts":
        n = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        t_first = u(0.1, max(0.15, dur - 1.3))
        for k in range(n):
            together = k == 0 or rng.random() < 0.3           # several at once, sometimes
            start = max(0.0, t_first + u(-0.05, 0.05)) if together else u(0.1, max(0.15, dur - 1.0))
            breaks = bool(pools["break"]) and rng.random() < 0.25
            sound = str(rng.choice(pools["break" if breaks else "impact"]))
            out.append(Drop(_look(rng, dark, (0.03, 0.09), (0.7, 1.6)), wx(u(0.15, 0.85), start + 0.4),
                            float(u(0.2, 0.75)), float(u(-0.15, 0.15)), float(u(0.0, 0.3)),
                            float(start), sound, breaks))
    elif kind == "bounce":
        for _ in range(int(rng.choice([1, 2], p=[0.75, 0.25]))):
            start = u(0.05, 0.8)
            out.append(Drop(_look(rng, dark, (0.03, 0.08), (1.0, 1.0), (2.0,)),
                            wx(u(0.15, 0.85), start + 1), float(u(0.4, 0.75)),
                            float(u(-0.25, 0.25)), float(u(0.45, 0.8)), float(start),
                            str(rng.choice(pools["bounce"]))))
    elif kind == "steps":
        surface = str(rng.choice(pools["step"]))                  # one floor for everyone
        for _ in range(int(rng.choice([1, 2], p=[0.8, 0.2]))):
            d = int(rng.choice([-1, 1]))
            start = u(0.0, 0.6)
            xs = u(0.05, 0.4) if d > 0 else u(0.6, 0.95)
            out.append(Walk(wx(xs, start), float(u(0.6, 1.3)), float(u(0.35, 0.65)), d, float(start),
                            100 if rng.random() < 0.7 else int(rng.integers(3, 9)),
                            _color(rng, dark), _color(rng, dark), surface))
    elif kind == "scrape":
        for _ in range(int(rng.choice([1, 2], p=[0.85, 0.15]))):
            drag = rng.random() < 0.45
            height = 0.0 if drag or rng.random() < 0.6 else float(u(0.2, 0.6))
            v0, decel, drag_s = float(u(0.4, 1.6)), float(u(0.3, 1.0)), float(u(0.8, 2.5))
            reach = (v0 * drag_s / 2 if drag else v0 * v0 / (2 * decel)) / aspect
            sign = float(rng.choice([-1.0, 1.0]))
            xs = u(0.08, max(0.1, 0.92 - reach)) if sign > 0 else u(min(0.9, 0.08 + reach), 0.92)
            start = u(0.2, max(0.25, min(1.5, dur - 1.0)))
            texture = str(rng.choice(pools["texture"]))
            contact = f"impacts/{material_of(texture)}"
            sound = contact if contact in pools["impact"] else str(rng.choice(pools["impact"] or [""]))
            out.append(Slide(_look(rng, dark, (0.03, 0.07), (1.2, 2.2), (4.0, 6.0, 8.0)), wx(xs, start),
                             height, sign * v0, decel, "drag" if drag else "kick", drag_s, float(start),
                             texture, float(u(-6, 0)), sound if height > 0 else ""))
    elif kind == "rub":
        period = float(u(0.35, 1.0))
        start = float(u(0.2, 1.0))
        strokes = int(max(1, min(rng.integers(2, 7), (dur - start - 0.2) // period)))
        out.append(Rub(_look(rng, dark, (0.03, 0.07), (1.0, 2.0), (4.0, 6.0)), wx(u(0.2, 0.7), start),
                       float(u(0.04, 0.15)), period, strokes, int(rng.choice([-1, 1])), start,
                       str(rng.choice(pools["texture"])), float(u(-6, 0))))
    elif kind in ("pass", "fly"):
        n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]) if kind == "fly" else rng.choice([1, 2]))
        for _ in range(n):
            speed = u(0.3, 2.0) if kind == "pass" else u(0.2, 1.0)      # H/s
            sign = float(rng.choice([-1.0, 1.0]))
            t_mid = u(0.3, 0.7) * dur                                   # on screen at x_mid then
            x0 = wx(u(0.2, 0.8), t_mid) - sign * speed / aspect * t_mid
            wave = 0.0 if kind == "pass" else float(u(0.03, 0.15))
            out.append(Flight(_look(rng, dark, (0.025, 0.07), (0.8, 2.0)), float(x0),
                              float(u(0.15, 0.6)), sign * speed, float(u(-0.08, 0.08)), wave,
                              float(u(0.3, 1.2)), 0.0))
    return out


def split_rates(split: str, wanted: Sequence[float] | None = None) -> tuple[float, ...]:
    """The frame rates of `split`, or those of them in `wanted` (within 0.01 fps, so 29.97
    means 30000/1001); ValueError naming the split's rates if `wanted` names one it lacks."""
    rates = HELDOUT_RATES if split == "heldout" else TRAIN_RATES
    if not wanted:
        return rates
    picked = []
    for w in wanted:
        match = [r for r in rates if abs(r - float(w)) < 0.01]
        if not match:
            raise ValueError(f"{w:g} fps is not a frame rate of the {split} split; its rates are "
                             + ", ".join(f"{r:.3f}".rstrip("0").rstrip(".") for r in rates))
        picked += match
    return tuple(dict.fromkeys(picked))


def sample_spec(rng: np.random.Generator, split: str = "train", *, kinds: Sequence[str] | None = None,
                available: Collection[str] | None = None, durations: tuple[float, float] = DURATIONS,
                width: int = RENDER_WIDTH, rates: Sequence[float] | None = None) -> PairedSpec:
    """Draw a varied paired scene of `split`; `available` limits sounds to these catalog keys,
    `rates` the frame rates to those of the split's rates (`split_rates`) it lists."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    pools = _pools(split, available)
    need = {"impacts": "impact", "bounce": "bounce", "steps": "step", "scrape": "texture",
            "rub": "texture"}
    allowed = [k for k in (kinds or KINDS) if k not in need or pools[need[k]]]
    if not allowed:
        raise ValueError(f"no sounds for kinds {kinds} in split {split!r}: the library lacks them")
    weights = np.array([KIND_WEIGHTS[KINDS.index(k)] for k in allowed])
    rates = split_rates(split, rates)
    for _ in range(100):
        kind = str(rng.choice(allowed, p=weights / weights.sum()))
        fps = float(rng.choice(rates))
        dur = max(2, round(rng.uniform(*durations) * fps)) / fps
        aspect = float(rng.choice([a for a, _ in ASPECTS], p=[p for _, p in ASPECTS]))
        size = (width, 2 * round(width / aspect / 2))
        dark = rng.random() < 0.2
        pan = 0.0 if rng.random() < 0.55 else float(rng.uniform(0.03, 0.25) * rng.choice([-1, 1]))
        movers = _movers(kind, rng, pools, dur, pan, dark, aspect)
        if rng.random() < 0.4 or kind == "static":
            movers += [Rest(_look(rng, dark, (0.03, 0.08), (0.8, 1.8)),
                            float(rng.uniform(0.1, 0.9) + pan * dur / 2))
                       for _ in range(int(rng.integers(1, 3)))]
        if kind not in SILENT_KINDS and rng.random() < 0.25:
            movers += _movers("pass", rng, pools, dur, pan, dark, aspect)[:1]
        occluder = None
        if rng.random() < 0.2:
            speed = float(rng.uniform(0.15, 0.6) * rng.choice([-1, 1]))
            occluder = Occluder(float(0.5 - speed * rng.uniform(0.2, 0.8) * dur), speed,
                                float(rng.uniform(0.08, 0.25)), _color(rng, not dark))
        spec = PairedSpec(
            kind=kind,
            seed=int(rng.integers(0, HELDOUT_SEED_BASE)) + (HELDOUT_SEED_BASE if split == "heldout" else 0),
            split=split, fps=fps, duration_s=dur, size=size, movers=tuple(movers),
            background=str(rng.choice(["noise", "tiles"])),
            bg_gain=float(rng.uniform(1.6, 2.0) if dark else rng.uniform(0.7, 1.3)),
            tint=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),
            noise=0.0 if rng.random() < 0.2 else float(rng.uniform(0.003, 0.03)), pan=pan,
            flicker=float(rng.uniform(0.02, 0.08)) if rng.random() < 0.2 else 0.0,
            flicker_hz=float(rng.uniform(2, 12)),
            light_end=float(rng.uniform(0.6, 1.4)) if rng.random() < 0.25 else 1.0,
            occluder=occluder, rt60_s=float(rng.uniform(0.1, 0.6)), wet_db=float(rng.uniform(-26, -12)),
            room_db=float(rng.uniform(-68, -52)))
        truth = paired_truth(spec)
        if (kind in CONTACT_KINDS and truth.events) or (kind in SUSTAINED_KINDS and truth.sustained) \
                or kind in SILENT_KINDS:
            return spec
    raise RuntimeError(f"could not draw a usable {split} scene in 100 tries (kinds {allowed})")


# ---------------------------------------------------------------- sound


def sound_keys(truth: PairedTruth) -> set[str]:
    """The recordings `render_audio` needs in `samples` (synthesized textures excluded)."""
    keys = {e["sound"] for e in truth.events} | {s["sound"] for s in truth.sustained}
    return {k for k in keys if not k.startswith("synth/")}


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _friction_loop(material: str, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Friction noise (stick-slip grain) ringing the modes of a kit material."""
    mat = kit.MATERIALS[material]
    n, f0 = int(seconds * sr), rng.uniform(*mat.f0)
    t = np.arange(int(0.5 * sr)) / sr
    ir = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f0 * r * t)
             * np.exp(-t * np.pi * f0 * r * mat.eta)          # τ = 1 / (π f η), as the kit
             for r in mat.ratios if f0 * r < 0.45 * sr)
    grain = rng.normal(size=n) * (rng.random(n) < 0.08)
    return _unit_rms(fftconvolve(grain, ir)[:n]) + 0.5 * _unit_rms(rng.normal(size=n))


def _texture(key: str, samples: Mapping[str, Sequence[np.ndarray]], rng: np.random.Generator,
             sr: int, n: int) -> np.ndarray:
    """n samples of a key's texture at unit RMS, its own swells flattened; a recording is
    looped with 100 ms equal-power crossfades."""
    seconds = n / sr + 0.5
    if key == "synth/wood":
        x = kit.scrape_loop(rng, sr, seconds)
    elif key == "synth/cloth":
        x = kit.cloth_loop(rng, sr, seconds)
    elif key.startswith("synth/"):
        x = _friction_loop(material_of(key), rng, sr, seconds)
    else:
        pool = _pool_of(samples, key)
        x = np.asarray(pool[int(rng.integers(len(pool)))], np.float64)
    x = np.asarray(x, np.float64)
    # flatten the recording's own swells (50 ms): the motion, not the take, sets the level
    power = uniform_filter1d(x * x, max(1, int(0.05 * sr)), mode="wrap")
    x = _unit_rms(x / np.sqrt(np.maximum(power, 0.05**2 * power.mean()) + 1e-20))
    fade = min(int(0.1 * sr), len(x) // 3)
    out, pos = np.zeros(n + len(x)), int(rng.integers(0, max(1, len(x) - fade)))
    x = np.roll(x, -pos)
    ramp = np.sqrt(np.linspace(0.0, 1.0, fade))
    at = 0
    while at < n:
        seg = x.copy()
        seg[:fade] *= ramp if at else 1.0
        seg[len(seg) - fade:] *= ramp[::-1]
        out[at:at + len(seg)] += seg
        at += len(seg) - fade
    return out[:n]


def _pool_of(samples: Mapping[str, Sequence[np.ndarray]], key: str) -> Sequence[np.ndarray]:
    pool = samples.get(key)
    if not pool:
        raise KeyError(f"render_audio: no recordings for sound {key!r}; load them into `samples` "
                       f"(see sound_keys(truth))")
    return pool


def _place(out: np.ndarray, x: np.ndarray, start: int) -> None:
    lo, hi = max(start, 0), min(start + len(x), len(out))
    if hi > lo:
        out[lo:hi] += x[lo - start:hi - start]


def _attack(x: np.ndarray, start: int, bed: np.ndarray, sr: int) -> int:
    """Where in x a listener (`detect_onsets`) hears it start once it sits at `start` over the
    room tone `bed`: a soft scuff under the tone or the −40 dBFS threshold does not count, and
    of two attacks within 50 ms the one that stands out does. Else its attack_start."""
    pre = int(0.03 * sr)
    y = np.zeros(pre + len(x))
    lo, hi = max(start - pre, 0), min(start + len(x), len(bed))
    if hi > lo:
        y[lo - (start - pre):hi - (start - pre)] = bed[lo:hi]
    y[pre:] += x
    found = np.round(detect_onsets(y, sr) * sr).astype(int) - pre
    found = found[found >= -int(0.001 * sr)]
    return max(int(found[0]), 0) if found.size else (attack_start(x, sr) or 0)


def render_audio(truth: PairedTruth, samples: Mapping[str, Sequence[np.ndarray]],
                 sr: int = AUDIO_SR) -> np.ndarray:
    """The scene's mono float32 sound, exactly round(duration · sr) samples (see module doc)."""
    spec = truth.spec
    n = int(round(truth.duration_s * sr))
    rng = np.random.default_rng([spec.seed, 2])
    dry = np.zeros(n)
    spectrum = np.fft.rfft(rng.normal(size=n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sr), 80.0))       # pink above 80 Hz
    tone = _unit_rms(np.fft.irfft(spectrum, n)) * 10 ** (spec.room_db / 20) if n else np.zeros(0)
    for ev in truth.events:                                                 # in time order
        pool = _pool_of(samples, ev["sound"])
        x = np.asarray(pool[int(rng.integers(len(pool)))], np.float64)
        x = x * 10 ** ((-STRENGTH_RANGE_DB * (1 - ev["strength"]) + rng.uniform(-1, 1)) / 20)
        at = int(round(ev["t"] * sr))
        _place(dry, x, at - _attack(x, at - (attack_start(x, sr) or 0), tone, sr))
    t = np.arange(n) / sr
    for seg in truth.sustained:
        grid = seg["t0"] + np.arange(len(seg["speed"])) / seg["rate_hz"]
        speed = np.interp(t, grid, seg["speed"], left=0.0, right=0.0)
        amp = np.clip(speed / V_SUSTAIN, 0.0, MAX_SUSTAIN) * 10 ** ((seg["level_db"] + TEXTURE_DB) / 20)
        ramp = int(0.002 * sr)
        inside = np.clip(np.minimum(t - seg["t_start"], seg["t_end"] - t) * sr / ramp, 0.0, 1.0)
        dry += _texture(seg["sound"], samples, rng, sr, n) * amp * inside
    tail = np.arange(int(spec.rt60_s * sr)) / sr
    ir = rng.normal(size=len(tail)) * 10 ** (-3 * tail / spec.rt60_s)
    ir = np.concatenate([np.zeros(int(rng.uniform(0.003, 0.008) * sr)), ir / np.sqrt(np.sum(ir * ir))])
    wet = fftconvolve(dry, ir)[:n] * 10 ** (spec.wet_db / 20)
    out = dry + wet + tone
    peak = float(np.abs(out).max()) if n else 0.0
    if peak > 10 ** (PEAK_DBFS / 20):
        out *= 10 ** (PEAK_DBFS / 20) / peak
    return out.astype(np.float32)
