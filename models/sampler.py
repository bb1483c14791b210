"""Sampler synthesis backend: one-shots on the envelope's events, a looped texture under the rest.

Pure numpy/scipy; no file IO (the synth task loads the library and hands over `Sample`s).

Render of one shot:
1. Events: at each event a one-shot is placed so its attack (`Sample.onset`) lands on sample
   round(t * sr). Candidates play round robin (start drawn from the seeded generator) with
   ±0.5 semitone pitch (polyphase resampling) and ±1.5 dB gain jitter. Level from strength:
   gain_db = -STRENGTH_RANGE_DB * (1 - strength), so strength 1 plays the sample at its
   library reference loudness and strength 0 plays it 24 dB lower. Tails overlap and sum.
2. Sustained part: the event track is measured with `rms_envelope` at the curve's rate and
   the texture is shaped by the residual sqrt(max(curve² - events², 0)). The residual is
   taken in the power domain because the two layers are uncorrelated and add in power, so
   the rendered RMS follows the curve (where events are absent it equals the curve itself).
   The texture is an equal-power crossfaded loop normalised to unit RMS; its gain is the
   residual interpolated to audio rate and smoothed over two curve hops (no zipper noise).
3. A look-ahead peak limiter keeps the sum under -1 dBFS.
An all-zero curve without events renders exact digital silence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from models.audio_env import rms_envelope

STRENGTH_RANGE_DB = 24.0
PITCH_JITTER_ST = 0.5
GAIN_JITTER_DB = 1.5
CEILING_DB = -1.0
_FADE_IN_S = 0.002
_FADE_OUT_S = 0.005
_LOOP_XFADE_S = 0.1

OneShots = Sequence["Sample"] | Mapping[str, Sequence["Sample"]]


@dataclass(frozen=True, eq=False)
class Sample:
    """A sound ready to play: float32 mono at the render rate, attack at index `onset`."""

    audio: np.ndarray
    name: str
    onset: int = 0


def strength_gain(strength: float) -> float:
    """Linear gain of an event of this strength (0..1 → -24..0 dB)."""
    s = min(max(float(strength), 0.0), 1.0)
    return 10 ** (-STRENGTH_RANGE_DB * (1.0 - s) / 20)


def _fade(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 → 1 over n samples."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _pitched(sample: Sample, semitones: float) -> tuple[np.ndarray, int]:
    """Resample so playback is `semitones` higher; returns audio and its new onset index."""
    ratio = Fraction(2 ** (-semitones / 12)).limit_denominator(400)  # output/input length
    audio = np.asarray(sample.audio, dtype=np.float32)
    if ratio == 1:
        return audio.copy(), sample.onset
    out = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    return out, int(round(sample.onset * ratio))


def _pool(oneshots: OneShots, kind: str) -> Sequence[Sample]:
    if isinstance(oneshots, Mapping):
        return oneshots.get(kind) or oneshots.get("*") or []
    return oneshots


def _render_events(
    events: Sequence[dict], oneshots: OneShots, n: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    track = np.zeros(n, dtype=np.float32)
    next_index: dict[str, int] = {}
    for event in sorted(events, key=lambda e: float(e["t"])):
        kind = str(event.get("kind", ""))
        semitones = rng.uniform(-PITCH_JITTER_ST, PITCH_JITTER_ST)
        jitter_db = rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB)
        pool = _pool(oneshots, kind)
        if not pool:
            continue
        key = kind if isinstance(oneshots, Mapping) else ""
        if key not in next_index:
            next_index[key] = int(rng.integers(len(pool)))
        sample = pool[next_index[key] % len(pool)]
        next_index[key] += 1
        audio, onset = _pitched(sample, semitones)
        audio *= strength_gain(float(event.get("strength", 1.0))) * 10 ** (jitter_db / 20)
        if onset > 0:  # pre-roll only: the attack itself is never faded
            k = min(onset, int(_FADE_IN_S * sr))
            audio[:k] *= _fade(k)
        k = min(len(audio), int(_FADE_OUT_S * sr))
        audio[len(audio) - k :] *= _fade(k)[::-1]
        _mix_at(track, audio, int(round(float(event["t"]) * sr)) - onset, sr)
    return track


def _mix_at(track: np.ndarray, audio: np.ndarray, start: int, sr: int) -> None:
    """Add audio at `start`, cutting at the shot edges with short fades (no clicks)."""
    lo, hi = max(start, 0), min(start + len(audio), len(track))
    if hi <= lo:
        return
    piece = audio[lo - start : hi - start].copy()
    if start < 0:
        k = min(len(piece), int(_FADE_IN_S * sr))
        piece[:k] *= _fade(k)
    if start + len(audio) > len(track):
        k = min(len(piece), int(_FADE_OUT_S * sr))
        piece[len(piece) - k :] *= _fade(k)[::-1]
    track[lo:hi] += piece


def _loop(texture: np.ndarray, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of the texture looped seamlessly (equal-power crossfade), unit RMS."""
    tex = np.asarray(texture, dtype=np.float64)
    x = min(int(_LOOP_XFADE_S * sr), len(tex) // 4)
    period = len(tex) - x
    cycle = tex[:period].copy()
    if x > 0:
        theta = np.pi / 2 * (np.arange(x) + 0.5) / x
        cycle[:x] = tex[:x] * np.sin(theta) + tex[period:] * np.cos(theta)
    rms = float(np.sqrt(np.mean(cycle**2)))
    if rms <= 0.0:
        return np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(period))
    reps = (n + offset) // period + 1
    return (np.tile(cycle, reps)[offset : offset + n] / rms).astype(np.float32)


def _render_texture(
    curve: np.ndarray,
    rate_hz: float,
    event_track: np.ndarray,
    textures: Sequence[Sample],
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    n = len(event_track)
    event_env = rms_envelope(event_track, sr, rate_hz).astype(np.float64)
    m = min(len(curve), len(event_env))
    residual = np.zeros(len(curve))
    residual[:m] = np.sqrt(np.maximum(curve[:m] ** 2 - event_env[:m] ** 2, 0.0))
    residual[m:] = curve[m:]
    if not textures or not np.any(residual > 0):
        return np.zeros(n, dtype=np.float32)
    times = np.arange(len(curve)) / rate_hz
    gain = np.interp(np.arange(n) / sr, times, residual, right=0.0)
    gain = uniform_filter1d(gain, size=max(1, int(round(2 * sr / rate_hz))) | 1, mode="nearest")
    return (_loop(textures[0].audio, n, sr, rng) * gain).astype(np.float32)


def soft_limit(audio: np.ndarray, sr: int, ceiling_db: float = CEILING_DB) -> np.ndarray:
    """Look-ahead peak limiter: a smooth gain (5 ms) that keeps |audio| <= ceiling."""
    ceiling = 10 ** (ceiling_db / 20)
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(audio.astype(np.float64)), 1e-30))
    if need.min() >= 1.0:
        return audio
    half = max(1, int(0.005 * sr))
    # min over ±half then a box of ±half/2: every smoothed value at n is <= need[n]
    gain = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    gain = uniform_filter1d(gain, size=half | 1, mode="nearest")
    return np.clip(audio * gain, -ceiling, ceiling).astype(np.float32)


def render_shot(
    envelope: dict,
    oneshots: OneShots,
    textures: Sequence[Sample],
    *,
    sr: int = 48000,
    seed: int,
) -> np.ndarray:
    """Mono float32 Foley for one shot, length round(duration_s * sr), following `envelope`.

    `oneshots` is one candidate list for every event, or a mapping event kind → candidates
    ("*" as fallback); events without candidates are skipped (the texture then covers them).
    Textures: the first one is used (callers pass the best match first).
    """
    n = int(round(float(envelope["duration_s"]) * sr))
    rate_hz = float(envelope["rate_hz"])
    curve = np.clip(np.asarray(envelope.get("curve", []), dtype=np.float64), 0.0, None)
    rng = np.random.default_rng(seed)
    events = _render_events(envelope.get("events", []), oneshots, n, sr, rng)
    texture = _render_texture(curve, rate_hz, events, textures, sr, rng)
    return soft_limit((events + texture).astype(np.float32), sr)
