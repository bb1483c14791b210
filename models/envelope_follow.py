"""Envelope follow: make a rendering keep the approved envelope's level and attacks.

A synthesizer is steered by the envelope (the diffusion model through its ControlNet, the
sampler by placing one-shots on the events), but what comes out drifts from it: the
denoiser adds attacks between the approved events, misses some and renders levels a few dB
off. A supervisor who approved an envelope expects the stem to hit on its events and follow
its curve, so after synthesis the rendering goes through a gain stage keyed by the envelope
— what a sound editor does by hand with a VCA / clip-gain line and a transient designer:

1. **Level** — the rendering's RMS, measured like the envelope's curve (frames of two curve
   hops, `models.audio_env.rms_envelope`) every `hop_s`, is brought to the curve: gain =
   curve / measured in dB, clipped to [-max_cut_db, +max_boost_db] (silence is not blown up
   into noise). Just before each event the target is held at the level of the last curve
   frame that ends before the event, so the curve's smeared rise does not pull the attack
   early.
2. **Approved attacks** — the `pre_duck_s` before each event is lowered by `pre_duck_db`
   (faded in over `duck_fade_s`, released over `release_s` right at the event), so every
   event starts from below and is heard as an attack at its time.
3. **Unapproved attacks** — attacks the project's onset detector (`detect_onsets`) finds in
   the result farther than `match_s` from every event are softened by `soften_db`, the
   gain recovering linearly over `soften_s`.

The gain is a smooth line (linear in dB between `hop_s` points, plus the ramps above): no
filtering, the rendering's timbre is untouched. Parameters were chosen on the validation
scenes of `foley eval synth --split val` (docs/BENCHMARKS.md); `follow_envelope(...,
Follow(pre_duck_db=0, soften_db=0))` is the level stage alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from models.audio_env import detect_onsets, rms_envelope
from models.curve_events import level_db

EPS = 1e-6


@dataclass(frozen=True)
class Follow:
    max_boost_db: float = 24.0
    max_cut_db: float = 40.0
    hop_s: float = 0.0025
    pre_duck_db: float = 10.0
    pre_duck_s: float = 0.025
    duck_fade_s: float = 0.003
    release_s: float = 0.0005
    soften_db: float = 6.0
    soften_s: float = 0.03
    match_s: float = 0.025

    def params(self) -> dict[str, float]:
        """The settings as a plain dict (cache parameters, provenance)."""
        return asdict(self)


def _db(x: np.ndarray) -> np.ndarray:
    """Levels in dB down to −120 dB (the gain is bounded anyway; −60 would clip real tails)."""
    return level_db(np.asarray(x, dtype=np.float64), EPS)


def level_gain_db(audio: np.ndarray, curve: np.ndarray, rate_hz: float,
                  events: Sequence[float], sr: int, cfg: Follow) -> np.ndarray:
    """Per-sample gain (dB) bringing `audio`'s RMS to `curve` (linear RMS at `rate_hz`)."""
    n = len(audio)
    if n == 0 or len(curve) == 0:
        return np.zeros(n)
    frame_s = 2.0 / rate_hz               # the curve's own frame (rms_envelope's default)
    fine_hz = 1.0 / cfg.hop_s
    measured = _db(rms_envelope(audio, sr, fine_hz, frame_s))
    t_fine = np.arange(len(measured)) / fine_hz
    target = np.interp(t_fine, np.arange(len(curve)) / rate_hz, _db(curve))
    curve_db = _db(curve)
    for t in events:
        k0, k1 = np.searchsorted(t_fine, [t - frame_s / 2, t])
        j = min(max(int(np.floor(t * rate_hz)) - 1, 0), len(curve) - 1)  # ends before t
        if k1 > k0:
            target[k0:k1] = np.minimum(target[k0:k1], curve_db[j])
    gain = np.clip(target - measured, -cfg.max_cut_db, cfg.max_boost_db)
    return np.interp(np.arange(n) / sr, t_fine, gain)


def attack_gain_db(n: int, events: Sequence[float], sr: int, cfg: Follow) -> np.ndarray:
    """Per-sample gain (dB) of the pre-event ducks."""
    g = np.zeros(n)
    if cfg.pre_duck_db <= 0:
        return g
    fade = max(cfg.duck_fade_s, 1.0 / sr)
    for t in events:
        i0, i1 = max(int(round((t - cfg.pre_duck_s) * sr)), 0), min(int(round(t * sr)), n)
        if i1 > i0:
            ramp = np.minimum(1.0, (np.arange(i1 - i0) + 1) / (fade * sr))
            g[i0:i1] = np.minimum(g[i0:i1], -cfg.pre_duck_db * ramp)
        r1 = min(i1 + max(int(round(cfg.release_s * sr)), 1), n)
        if r1 > i1 >= 0:
            rel = -cfg.pre_duck_db * (1.0 - (np.arange(r1 - i1) + 1) / (r1 - i1))
            g[i1:r1] = np.minimum(g[i1:r1], rel)
    return g


def soften_gain_db(audio: np.ndarray, events: Sequence[float], sr: int,
                   cfg: Follow) -> np.ndarray:
    """Per-sample gain (dB) softening the attacks no event asked for."""
    n = len(audio)
    g = np.zeros(n)
    if cfg.soften_db <= 0 or n == 0:
        return g
    ev = np.asarray(sorted(events), dtype=np.float64)
    for t in detect_onsets(audio, sr):
        if len(ev) and np.min(np.abs(ev - t)) <= cfg.match_s:
            continue
        i0 = max(int(round((t - 0.001) * sr)), 0)
        i1 = min(int(round((t + cfg.soften_s) * sr)), n)
        if i1 > i0:
            g[i0:i1] = np.minimum(g[i0:i1], -cfg.soften_db * np.linspace(1.0, 0.0, i1 - i0))
    return g


def follow_envelope(audio: np.ndarray, env: dict[str, Any], sr: int,
                    cfg: Follow = Follow()) -> np.ndarray:
    """`audio` (mono, float) with the gain of the three stages above for the envelope `env`
    (the pass's contract: linear-RMS `curve` at `rate_hz`, `events` with `t` in seconds from
    the start of `audio`). Same length, float32; no limiter (the caller's stays last)."""
    x = np.asarray(audio, dtype=np.float64)
    curve = np.asarray(env.get("curve", []), dtype=np.float64)
    events = [float(e["t"]) for e in env.get("events", [])]
    gain = level_gain_db(x, curve, float(env.get("rate_hz", 100.0)), events, sr, cfg)
    gain += attack_gain_db(len(x), events, sr, cfg)
    y = x * 10.0 ** (gain / 20.0)
    y *= 10.0 ** (soften_gain_db(y, events, sr, cfg) / 20.0)
    return y.astype(np.float32)
