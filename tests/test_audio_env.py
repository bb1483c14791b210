"""The envelope function and onset detection on signals whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from models.audio_env import attack_start, detect_onsets, rms_envelope

SR = 48000


def _burst(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "noise":
        return rng.normal(0, 0.2, n) * np.exp(-t / 0.02)
    if kind == "tone":  # starts at phase zero: the hardest case for a magnitude threshold
        return 0.5 * np.sin(2 * np.pi * 180 * t) * np.exp(-t / 0.03)
    click = np.zeros(n)
    click[0] = 0.8
    return click


def _scene(times: list[float], kinds: list[str], noise_db: float = -80.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10 ** (noise_db / 20), 2 * SR)
    for t, kind in zip(times, kinds):
        start, n = int(round(t * SR)), int(0.08 * SR)
        x[start : start + n] += _burst(kind, n, rng)
    return x


@pytest.mark.parametrize("rate_hz", [100.0, 50.0, 86.1328125])
def test_envelope_length_and_level(rate_hz: float) -> None:
    n = int(1.37 * SR)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / SR)
    env = rms_envelope(tone, SR, rate_hz)
    assert env.shape == (round(n / SR * rate_hz),)
    assert env.dtype == np.float32
    # centred frames: the first frame is half outside the signal, interior frames see the tone
    assert env[0] == pytest.approx(0.5 / np.sqrt(2) / np.sqrt(2), rel=0.05)
    assert np.allclose(env[2:-2], 0.5 / np.sqrt(2), rtol=0.02)


def test_envelope_frames_are_centred_on_hops() -> None:
    x = np.zeros(SR)
    x[int(0.25 * SR)] = 1.0  # an impulse at exactly frame 25 of a 100 Hz envelope
    env = rms_envelope(x, SR, 100.0, frame_s=0.005)
    assert int(np.argmax(env)) == 25
    assert np.count_nonzero(env) == 1


def test_envelope_of_stereo_is_of_the_mono_mix() -> None:
    x = np.random.default_rng(1).normal(size=(SR, 2))
    assert np.allclose(rms_envelope(x, SR), rms_envelope(x.mean(axis=1), SR))


def test_onsets_of_clicks_and_bursts_within_2ms() -> None:
    times = [0.1, 0.33, 0.5, 0.7, 0.9, 1.234, 1.7]
    kinds = ["tone", "noise", "tone", "click", "tone", "noise", "noise"]
    onsets = detect_onsets(_scene(times, kinds, noise_db=-70), SR)
    assert len(onsets) == len(times)
    assert np.max(np.abs(onsets - times)) < 0.002
    assert np.max(np.abs(onsets - times)) < 0.001  # what the method actually reaches


def test_onsets_on_a_previous_tail() -> None:
    """A burst 60 ms into the ringing tail of another is still found, at its attack."""
    x = _scene([0.2, 0.26], ["tone", "noise"])
    onsets = detect_onsets(x, SR)
    assert np.allclose(onsets, [0.2, 0.26], atol=0.001)


def test_min_gap_merges_close_attacks() -> None:
    x = _scene([0.2, 0.23], ["noise", "noise"])
    assert len(detect_onsets(x, SR, min_gap_s=0.05)) == 1
    assert len(detect_onsets(x, SR, min_gap_s=0.01)) == 2


def test_silence_and_quiet_noise_have_no_onsets() -> None:
    assert detect_onsets(np.zeros(SR), SR).size == 0
    assert detect_onsets(np.zeros(0), SR).size == 0
    noise = np.random.default_rng(2).normal(0, 10 ** (-50 / 20), SR)  # below -40 dBFS
    assert detect_onsets(noise, SR).size == 0
    steady = np.random.default_rng(3).normal(0, 0.1, SR)  # loud but no rise after its start
    assert detect_onsets(steady, SR).size == 1


def test_attack_start_skips_leading_noise_and_ticks() -> None:
    x = _scene([0.6], ["noise"], noise_db=-60)
    x[int(0.3 * SR)] += 0.003  # a tick far below the attack
    assert abs(attack_start(x, SR) - 0.6 * SR) <= 0.001 * SR
    assert attack_start(np.zeros(SR), SR) is None


def test_attack_start_of_a_swell_is_where_it_becomes_audible() -> None:
    t = np.arange(SR) / SR
    swell = np.random.default_rng(4).normal(size=SR) * np.clip((t - 0.2) / 0.5, 0, 1) ** 3
    start = attack_start(swell, SR)
    assert 0.2 * SR <= start <= 0.35 * SR  # well before the loud part, after the silence
