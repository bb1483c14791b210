"""Sampler synthesis backend: one-shots on the envelope's events, a looped texture under the rest.

Pure numpy/scipy; no file IO (the synth task loads the library and hands over `Sample`s).

Render of one shot:
1. Events: at each event a one-shot is placed so its attack (`Sample.onset`) lands on sample
   round(t * sr). Candidates play round robin (start drawn from the seeded generator) with
   ±0.5 semitone pitch (polyphase resampling) and ±1.5 dB gain jitter. Level from strength:
   gain_db = -STRENGTH_RANGE_DB * (1 - strength), so strength 1 plays the sample at its
   library reference loudness and strength 0 plays it 24 dB lower. Tails overlap and sum.
   The curve then sets the absolute level: the whole event layer gets one gain so that its
   envelope peaks meet the curve's peaks at the events (median over events, within ±36 dB;
   events where the curve is silent keep the reference level), and wherever the layer still
   exceeds the curve, sounds older than 30 ms are ducked by the excess with a gain that only
   falls: a long metal ring stops where the curve says the sound has died. Without this a curve
   louder than the library would be "explained" by texture piled onto every hit.
2. Sustained part: the event track is measured with `rms_envelope` at the curve's rate and
   the texture is shaped by the residual sqrt(max(curve² - events², 0)). The residual is
   taken in the power domain because the two layers are uncorrelated and add in power, so
   the rendered RMS follows the curve (where events are absent it equals the curve itself).
   The texture is an equal-power crossfaded loop normalised to unit RMS whose own swells are
   flattened at the curve's resolution (so the curve, not the recording, sets the loudness);
   its gain is the residual interpolated to audio rate and smoothed over two curve hops
   (no zipper noise).
3. A look-ahead peak limiter keeps the sum under -1 dBFS.
An all-zero curve without events renders exact digital silence.

Memory follows the shot's length, not its events: an event is kept as how to make its sound
(`_Placed`), and each sound is made when it is mixed (twice when the curve levels the layer:
once to measure it, once to mix it), so one event's sound is held at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import butter, resample_poly, sosfilt

from models import limiter
from models.audio_env import attack_start, rms_envelope

STRENGTH_RANGE_DB = 24.0
PITCH_JITTER_ST = 0.5
GAIN_JITTER_DB = 1.5
CEILING_DB = limiter.CEILING_DB
CURVE_GAIN_RANGE_DB = 36.0
CHOKE_AFTER_S = 0.03  # a hit's first 30 ms are never choked
_FADE_IN_S = 0.002
_FADE_OUT_S = 0.005
_LOOP_XFADE_S = 0.1
_FLATTEN_FLOOR = 0.05  # never lift a gap in the texture by more than 26 dB

OneShots = Sequence["Sample"] | Mapping[str, Sequence["Sample"]]


@dataclass(frozen=True, eq=False)
class Sample:
    """A sound ready to play: float32 mono at the render rate, attack at index `onset`.

    onset=None: found with `models.audio_env.attack_start` (for a library-processed file that
    is its pre-roll, so passing `round(attack_s * sr)` only saves the measurement).
    """

    audio: np.ndarray
    name: str
    onset: int | None = None

    def attack_index(self, sr: int) -> int:
        """Sample index of the attack (measured once when `onset` is None)."""
        if self.onset is not None:
            return int(self.onset)
        if not hasattr(self, "_measured"):
            found = attack_start(np.asarray(self.audio, dtype=np.float32), sr)
            object.__setattr__(self, "_measured", 0 if found is None else int(found))
        return self._measured  # type: ignore[attr-defined]


def strength_gain(strength: float) -> float:
    """Linear gain of an event of this strength (0..1 → -24..0 dB)."""
    s = min(max(float(strength), 0.0), 1.0)
    return 10 ** (-STRENGTH_RANGE_DB * (1.0 - s) / 20)


def _fade(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 → 1 over n samples."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _ratio(semitones: float) -> Fraction:
    """Output/input length of a pitch shift by `semitones`."""
    return Fraction(2 ** (-semitones / 12)).limit_denominator(400)


def _pitched(sample: Sample, semitones: float) -> np.ndarray:
    """The sample resampled so it plays `semitones` higher (a copy)."""
    ratio = _ratio(semitones)
    audio = np.asarray(sample.audio, dtype=np.float32)
    if ratio == 1:
        return audio.copy()
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _pitched_onset(sample: Sample, semitones: float, sr: int) -> int:
    """The attack's index in `_pitched(sample, semitones)`."""
    ratio = _ratio(semitones)
    onset = sample.attack_index(sr)
    return onset if ratio == 1 else int(round(onset * ratio))


def _pool(oneshots: OneShots, kind: str) -> Sequence[Sample]:
    if isinstance(oneshots, Mapping):
        return oneshots.get(kind) or oneshots.get("*") or []
    return oneshots


@dataclass(frozen=True)
class _Placed:
    """One event in the shot: how to make its sound (`sound()`), not the sound itself, so a
    shot holds a few numbers per event and never every event's audio at once (a dense minute
    was 680 MB). `sound()` is deterministic: the pitch shift of the same sample by the same
    ratio, times `gain` (strength and jitter, then the curve's level), faded."""

    start: int
    t: float
    sample: Sample
    semitones: float
    gain: float
    sr: int

    def sound(self) -> np.ndarray:
        audio = _pitched(self.sample, self.semitones)
        onset = _pitched_onset(self.sample, self.semitones, self.sr)
        audio *= self.gain
        if onset > 0:  # pre-roll only: the attack itself is never faded
            k = min(onset, int(_FADE_IN_S * self.sr))
            audio[:k] *= _fade(k)
        k = min(len(audio), int(_FADE_OUT_S * self.sr))
        audio[len(audio) - k :] *= _fade(k)[::-1]
        return audio


def _render_events(
    events: Sequence[dict], oneshots: OneShots, sr: int, rng: np.random.Generator
) -> list[_Placed]:
    """Choose, pitch, level and fade a one-shot for every event that has candidates."""
    placed: list[_Placed] = []
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
        onset = _pitched_onset(sample, semitones, sr)
        gain = strength_gain(float(event.get("strength", 1.0))) * 10 ** (jitter_db / 20)
        t = float(event["t"])
        placed.append(_Placed(int(round(t * sr)) - onset, t, sample, semitones, gain, sr))
    return placed


def _add(track: np.ndarray, p: _Placed, audio: np.ndarray, sr: int) -> None:
    """Add one placed sound into the n-sample track, cut at the shot edges with short fades."""
    n = len(track)
    lo, hi = max(p.start, 0), min(p.start + len(audio), n)
    if hi <= lo:
        return
    piece = audio[lo - p.start : hi - p.start].copy()
    if p.start < 0:
        k = min(len(piece), int(_FADE_IN_S * sr))
        piece[:k] *= _fade(k)
    if p.start + len(audio) > n:
        k = min(len(piece), int(_FADE_OUT_S * sr))
        piece[len(piece) - k :] *= _fade(k)[::-1]
    track[lo:hi] += piece


def _mix(placed: list[_Placed], n: int, sr: int) -> np.ndarray:
    """Sum the placed sounds into an n-sample track (one sound in memory at a time)."""
    track = np.zeros(n, dtype=np.float32)
    for p in placed:
        _add(track, p, p.sound(), sr)
    return track


def _curve_gain(curve: np.ndarray, rate_hz: float, env: np.ndarray, times: list[float]) -> float:
    """One gain for the event layer: median over events of curve peak / event-layer peak.

    Peaks are taken over [t - 1 hop, t + 3 hops] of both envelopes (same measure, same rate).
    Events where the curve is silent do not vote; with no votes the gain is 1.
    """
    ratios = []
    for t in times:
        k = int(round(t * rate_hz))
        lo, hi = max(k - 1, 0), k + 4
        if lo >= min(len(env), len(curve)):
            continue
        e, c = float(env[lo:hi].max()), float(curve[lo:hi].max())
        if e > 0 and c > 0:
            ratios.append(c / e)
    if not ratios:
        return 1.0
    limit = 10 ** (CURVE_GAIN_RANGE_DB / 20)
    return float(np.clip(np.median(ratios), 1 / limit, limit))


def _fit_to_curve(
    placed: list[_Placed], curve: np.ndarray, rate_hz: float, n: int, sr: int
) -> np.ndarray:
    """The event track, levelled to the curve, with tails that outlast it choked.

    Choke: where the layer's envelope exceeds the curve (dilated ±2 hops for timing slack),
    every sound older than CHOKE_AFTER_S is ducked by the excess, like a hand on a ringing
    plate; its gain only ever falls (running minimum), so a choked ring never swells back
    before the next hit, and a new hit's attack is never touched. The sounds are made twice
    (once to measure the layer, once to mix it), so only one is held at a time.
    """
    env = rms_envelope(_mix(placed, n, sr), sr, rate_hz).astype(np.float64)
    gain = _curve_gain(curve, rate_hz, env, [p.t for p in placed])
    env *= gain
    m = min(len(env), len(curve))
    allowed = maximum_filter1d(curve[:m], size=5, mode="nearest")
    excess = np.ones(len(env))
    over = env[:m] > allowed
    excess[:m][over] = allowed[over] / env[:m][over]
    track = np.zeros(n, dtype=np.float32)
    for p in placed:
        audio = p.sound() * np.float32(gain)
        k0 = int(np.ceil((p.t + CHOKE_AFTER_S) * rate_hz))
        k1 = min(len(excess), int(np.ceil((p.start + len(audio)) / sr * rate_hz)) + 1)
        if over.any() and k1 > k0:
            frames = np.minimum.accumulate(excess[k0:k1])
            times = np.concatenate([[k0 / rate_hz - 1 / rate_hz], np.arange(k0, k1) / rate_hz])
            at = (p.start + np.arange(len(audio))) / sr
            g = np.interp(at, times, np.concatenate([[1.0], frames]), left=1.0, right=frames[-1])
            audio = (audio * g).astype(np.float32)
        _add(track, p, audio, sr)
    return track


def _loop(texture: np.ndarray, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of the texture looped seamlessly (equal-power crossfade), unit RMS."""
    tex = np.asarray(texture, dtype=np.float64)
    if tex.size == 0:
        return np.zeros(n, dtype=np.float32)
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
    smooth = max(1, int(round(2 * sr / rate_hz))) | 1  # two curve hops
    at = np.arange(n) / sr
    gain = np.interp(at, np.arange(len(curve)) / rate_hz, residual, right=0.0)
    gain = uniform_filter1d(gain, size=smooth, mode="nearest")
    bed = _loop(textures[0].audio, n, sr, rng)
    # flatten the texture's own swells at the curve's resolution: the curve sets the loudness
    own = rms_envelope(bed, sr, rate_hz).astype(np.float64)
    own = np.interp(at, np.arange(len(own)) / rate_hz, own) if own.size else np.ones(n)
    own = uniform_filter1d(own, size=smooth, mode="nearest")
    return (bed / np.maximum(own, _FLATTEN_FLOOR) * gain).astype(np.float32)


def soft_limit(audio: np.ndarray, sr: int, ceiling_db: float = CEILING_DB) -> np.ndarray:
    """Look-ahead peak limiter: a smooth gain (5 ms) that keeps |audio| <= ceiling
    (`models.limiter.peak_limit`, the one every rendering ends with)."""
    return limiter.peak_limit(audio, sr, ceiling_db)


def render_shot(
    envelope: dict,
    oneshots: OneShots,
    textures: Sequence[Sample],
    *,
    sr: int = 48000,
    seed: int,
    level_from_curve: bool = True,
) -> np.ndarray:
    """Mono float32 Foley for one shot, length round(duration_s * sr), following `envelope`.

    `oneshots` is one candidate list for every event, or a mapping event kind → candidates
    ("*" as fallback); events without candidates are skipped (the texture then covers them).
    Textures: the first one is used (callers pass the best match first).
    `level_from_curve`: scale the event layer so its peaks meet the curve's and duck it where
    it exceeds the curve; False keeps the plain strength mapping at the library reference.
    """
    n = int(round(float(envelope["duration_s"]) * sr))
    rate_hz = float(envelope["rate_hz"])
    curve = np.clip(np.asarray(envelope.get("curve", []), dtype=np.float64), 0.0, None)
    rng = np.random.default_rng(seed)
    placed = _render_events(envelope.get("events", []), oneshots, sr, rng)
    if level_from_curve and placed and np.any(curve > 0):
        events = _fit_to_curve(placed, curve, rate_hz, n, sr)
    else:
        events = _mix(placed, n, sr)
    texture = _render_texture(curve, rate_hz, events, textures, sr, rng)
    return soft_limit(dc_block((events + texture).astype(np.float32), sr), sr)


DC_BLOCK_HZ = 10.0


def dc_block(audio: np.ndarray, sr: int, corner_hz: float = DC_BLOCK_HZ) -> np.ndarray:
    """A rendering without the DC its recordings carry (the library keeps it, for the attack
    times, docs/SYNTHESIS.md): a 2nd-order Butterworth high-pass at 10 Hz, −1 dB at 20 Hz and
    nothing above 40 Hz, so a stem pushed up 30 dB in the mix spends no headroom on an offset
    and steps at no edit."""
    if not np.any(audio):
        return audio
    sos = butter(2, corner_hz, btype="highpass", fs=sr, output="sos")
    return sosfilt(sos, audio.astype(np.float64), axis=0).astype(np.float32)
