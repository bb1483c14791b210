"""The envelope follow stage (models/envelope_follow.py) on signals with a known answer: a
rendering that drifts from its envelope comes out at the envelope's level, with an attack on
every approved event and none elsewhere."""
from __future__ import annotations

import numpy as np
import pytest

from models.audio_env import detect_onsets, rms_envelope
from models.envelope_follow import Follow, follow_envelope

SR = 48000
RATE = 100.0


def _noise(seconds: float, db: float, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(seconds * SR))
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (db / 20)).astype(np.float32)


def _env(curve: np.ndarray, events: list[float]) -> dict:
    return {"version": 1, "rate_hz": RATE, "duration_s": len(curve) / RATE,
            "curve": [float(v) for v in curve],
            "events": [{"t": t, "strength": 1.0, "kind": "impact"} for t in events]}


def _db(x: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(x, 1e-9))


def test_level_follows_the_curve():
    """A steady -20 dBFS rendering under a curve that swells from -40 to -14 dBFS and falls
    back: the output's RMS, measured like the curve, is within 1 dB of it."""
    audio = _noise(3.0, -20.0)
    t = np.arange(300) / RATE
    curve_db = -40 + 26 * np.sin(np.pi * t / 3.0) ** 2
    out = follow_envelope(audio, _env(10 ** (curve_db / 20), []), SR)
    assert out.shape == audio.shape and out.dtype == np.float32
    got = _db(rms_envelope(out, SR, RATE))
    inner = slice(5, 295)
    assert np.max(np.abs(got[inner] - curve_db[inner])) < 1.0
    # the raw rendering was up to 20 dB off
    assert np.max(np.abs(_db(rms_envelope(audio, SR, RATE))[inner] - curve_db[inner])) > 15


def test_boost_and_cut_are_bounded():
    """Digital silence is not blown up into noise, and a rendering far above the curve is cut
    by at most max_cut_db."""
    cfg = Follow()
    quiet = _noise(1.0, -90.0)
    out = follow_envelope(quiet, _env(np.full(100, 0.1), []), SR, cfg)
    assert _db(np.sqrt(np.mean(out.astype(np.float64) ** 2))) < -90 + cfg.max_boost_db + 1
    loud = _noise(1.0, -6.0)
    out = follow_envelope(loud, _env(np.full(100, 1e-5), []), SR, cfg)
    assert _db(np.sqrt(np.mean(out.astype(np.float64) ** 2))) > -6 - cfg.max_cut_db - 1
    silent = np.zeros(SR, np.float32)
    assert not np.any(follow_envelope(silent, _env(np.full(100, 0.1), [0.5]), SR))


def _onsets_after_start(audio: np.ndarray) -> np.ndarray:
    """Onsets, without the one every signal has where it starts from digital silence."""
    got = detect_onsets(audio, SR)
    return got[got > 0.05]


def test_attacks_land_on_the_approved_events():
    """A steady bed with no attack of its own gets one at each event (within 2 ms), and the
    level stage alone (no ducks) does not make them."""
    audio = _noise(3.0, -24.0, seed=1)
    events = [0.40, 1.13, 1.90, 2.55]
    env = _env(np.full(300, 10 ** (-24 / 20)), events)
    assert len(_onsets_after_start(audio)) == 0
    got = _onsets_after_start(follow_envelope(audio, env, SR))
    assert len(got) == len(events)
    assert np.max(np.abs(got - events)) < 0.002
    level_only = follow_envelope(audio, env, SR, Follow(pre_duck_db=0, soften_db=0))
    assert len(_onsets_after_start(level_only)) == 0


def test_unapproved_attacks_are_softened():
    """Two bursts in a quiet bed, only the first approved: the envelope (measured without the
    second, as the supervisor drew it) keeps the first and takes the second away."""
    bed = _noise(2.0, -50.0, seed=2)
    burst = _noise(0.15, -18.0, seed=3) * np.exp(-np.arange(int(0.15 * SR)) / (0.03 * SR))
    wanted = bed.copy()
    wanted[int(0.5 * SR):int(0.5 * SR) + len(burst)] += burst
    audio = wanted.copy()
    audio[int(1.3 * SR):int(1.3 * SR) + len(burst)] += burst
    assert len(detect_onsets(audio, SR)) == 2
    env = _env(rms_envelope(wanted, SR, RATE), [float(t) for t in detect_onsets(wanted, SR)])
    got = detect_onsets(follow_envelope(audio, env, SR), SR)
    assert len(got) == 1 and abs(got[0] - 0.5) < 0.002


def test_a_click_inside_a_sustained_sound_is_softened_unless_approved():
    """Two 3 ms clicks (+12 dB) in a steady texture: the approved one stays an attack, the
    other is softened away — by the soften stage: the level stage alone, at the curve's 20 ms
    frames, leaves it."""
    audio = _noise(2.0, -30.0, seed=4)
    for t in (0.6, 1.3):
        i = int(t * SR)
        audio[i:i + int(0.003 * SR)] *= 10 ** (12 / 20)
    assert np.allclose(_onsets_after_start(audio), [0.6, 1.3], atol=0.001)
    env = _env(np.full(200, 10 ** (-30 / 20)), [0.6])
    got = _onsets_after_start(follow_envelope(audio, env, SR))
    assert len(got) == 1 and abs(got[0] - 0.6) < 0.002
    without = _onsets_after_start(follow_envelope(audio, env, SR, Follow(soften_db=0)))
    assert np.any(np.abs(without - 1.3) < 0.002)


@pytest.mark.parametrize("events", [[0.0], [0.005], [0.999], [1.0]])
def test_events_at_the_edges(events):
    audio = _noise(1.0, -20.0)
    out = follow_envelope(audio, _env(np.full(100, 0.1), events), SR)
    assert out.shape == audio.shape and np.all(np.isfinite(out))
