"""The sampler backend: sync, level, round robin, clicks, texture under the curve, silence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.audio_env import detect_onsets, rms_envelope
from models.kit import synthesize_kit
from models.sampler import Sample, render_shot, soft_limit, strength_gain
from tasks.library import index_library, load_sample
from tasks.library_match import match_sounds, match_texture

SR = 48000
SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("kit")
    synthesize_kit(root)
    return index_library(root, tmp_path_factory.mktemp("kit_index"))


def _samples(sounds: list) -> list[Sample]:
    return [load_sample(s.processed_path, s.rel_path, attack_s=s.attack_s) for s in sounds]


def _envelope(duration: float, events: list[dict], curve: np.ndarray | None = None) -> dict:
    n = round(duration * 100)
    curve = np.zeros(n) if curve is None else curve
    return {"version": 1, "parent": None, "shot": "SH010", "rate_hz": 100,
            "duration_s": duration, "curve": curve.tolist(), "events": events,
            "prompt": None, "source": "test"}


def _steps(times: list[float], strength: float = 0.9, kind: str = "step") -> list[dict]:
    return [{"t": t, "strength": strength, "x": 0.5, "y": 0.8, "kind": kind} for t in times]


def _nearest_errors(onsets: np.ndarray, times: list[float]) -> np.ndarray:
    return np.array([np.min(np.abs(onsets - t)) for t in times])


TIMES = [0.25, 0.7831, 1.3, 1.82, 2.4457]


@pytest.mark.parametrize(("hint", "kind"), [("footsteps concrete", "step"),
                                            ("footsteps wood", "step"),
                                            ("metal", "impact"), ("stone", "impact")])
def test_onsets_land_on_event_times_within_1ms(kit: list, hint: str, kind: str) -> None:
    oneshots = _samples(match_sounds(kit, hint, kind))
    assert len(oneshots) >= 3
    audio = render_shot(_envelope(3.0, _steps(TIMES, kind=kind)), oneshots, [], sr=SR, seed=7)
    assert audio.dtype == np.float32 and audio.shape == (3 * SR,)
    onsets = detect_onsets(audio, SR)
    assert np.max(_nearest_errors(onsets, TIMES)) <= 0.001
    assert onsets[0] >= TIMES[0] - 0.001  # nothing sounds before the first event


def test_onsets_of_real_recordings_within_1ms(kit: list, tmp_path: Path) -> None:
    paths = [f"footsteps/stone/ufoai_stone{i}.ogg" for i in (1, 2, 4)]
    sounds = index_library(SFX, tmp_path, paths=paths)
    audio = render_shot(_envelope(3.0, _steps(TIMES)), _samples(sounds), [], sr=SR, seed=1)
    assert np.max(_nearest_errors(detect_onsets(audio, SR), TIMES)) <= 0.001
    # a Sample without an onset measures its attack: the same placement
    bare = [Sample(s.audio, s.name) for s in _samples(sounds)]
    assert bare[0].attack_index(SR) == _samples(sounds)[0].onset
    same = render_shot(_envelope(3.0, _steps(TIMES)), bare, [], sr=SR, seed=1)
    assert np.array_equal(audio, same)


def test_onsets_survive_a_texture_bed(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "footsteps concrete", "step"))
    textures = _samples(match_texture(kit, None, "step"))
    steps = render_shot(_envelope(3.0, _steps(TIMES)), oneshots, [], sr=SR, seed=3)
    curve = np.sqrt(rms_envelope(steps, SR).astype(np.float64) ** 2 + 0.004**2)  # + a quiet bed
    audio = render_shot(_envelope(3.0, _steps(TIMES), curve), oneshots, textures, sr=SR, seed=3)
    assert np.max(_nearest_errors(detect_onsets(audio, SR), TIMES)) <= 0.001
    between = (np.arange(300) % 50 > 35)  # stretches far from any step: the bed is there
    assert np.median(rms_envelope(audio, SR)[between]) == pytest.approx(0.004, rel=0.35)


def test_curve_sets_the_level_and_chokes_long_rings(kit: list) -> None:
    """A loud curve of short thuds with ringing metal samples: hits follow the curve's
    peaks, rings stop where the curve decays, and every hit is still found to the ms."""
    oneshots = _samples(match_sounds(kit, "metal", "impact"))
    times, peaks = [0.5, 0.72, 1.27, 1.67], [0.3, 0.2, 0.25, 0.12]
    t = np.arange(250) / 100
    curve = np.zeros(250)
    for ti, p in zip(times, peaks):
        curve = np.maximum(curve, np.where(t >= ti - 0.005, p * np.exp(-(t - ti) / 0.08), 0))
    events = [{"t": ti, "strength": s, "kind": "impact"}
              for ti, s in zip(times, [0.8, 0.6, 0.7, 0.45])]
    audio = render_shot(_envelope(2.5, events, curve), oneshots, [], seed=4)
    plain = render_shot(_envelope(2.5, events, curve), oneshots, [], seed=4,
                        level_from_curve=False)
    assert np.max(_nearest_errors(detect_onsets(audio, SR), times)) <= 0.001
    env = rms_envelope(audio, SR)
    at = [int(round(ti * 100)) for ti in times]
    ratio_db = 20 * np.log10([env[k : k + 3].max() / curve[k : k + 3].max() for k in at])
    assert np.all(np.abs(ratio_db) < 3)
    tail = slice(210, 240)  # 0.4 s after the last hit: the curve is 14 dB down, rings choked
    assert np.all(env[tail] <= 1.3 * curve[tail] + 1e-4)
    assert rms_envelope(plain, SR)[tail].mean() > 3 * env[tail].mean()  # unchoked rings on
    assert np.max(np.abs(plain)) < np.max(np.abs(audio))  # library reference level: quieter


def test_stronger_events_are_louder(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "metal", "impact"))[:1]
    levels = []
    for strength in (0.2, 0.5, 0.8, 1.0):
        audio = render_shot(_envelope(2.0, _steps([0.5], strength)), oneshots, [], seed=0)
        levels.append(float(np.sqrt(np.mean(audio**2))))
    assert levels == sorted(levels) and levels[0] < levels[-1] / 4
    assert strength_gain(1.0) == 1.0 and strength_gain(0.5) == pytest.approx(10 ** (-12 / 20))


def test_round_robin_uses_every_candidate() -> None:
    """Three tones as candidates: six events must use all three, none twice in a row."""
    t = np.arange(int(0.1 * SR)) / SR
    freqs = [300.0, 700.0, 1500.0]
    oneshots = [Sample(np.sin(2 * np.pi * f * t).astype(np.float32) * np.exp(-t / 0.03), f"{f}")
                for f in freqs]
    times = [0.2, 0.5, 0.8, 1.1, 1.4, 1.7]
    audio = render_shot(_envelope(2.0, _steps(times)), oneshots, [], seed=11)
    used = []
    for start in times:
        seg = audio[int(start * SR) : int((start + 0.08) * SR)]
        peak = np.fft.rfftfreq(len(seg), 1 / SR)[np.argmax(np.abs(np.fft.rfft(seg)))]
        used.append(min(freqs, key=lambda f: abs(np.log(f / peak))))
    assert set(used) == set(freqs)
    assert all(a != b for a, b in zip(used, used[1:]))


def test_deterministic_with_seed(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "footsteps gravel", "step"))
    textures = _samples(match_texture(kit, None, "step"))
    env = _envelope(2.0, _steps([0.3, 0.9, 1.5]), np.full(200, 0.01))
    a = render_shot(env, oneshots, textures, seed=5)
    b = render_shot(env, oneshots, textures, seed=5)
    c = render_shot(env, oneshots, textures, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_silence_is_exact(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "footsteps gravel", "step"))
    textures = _samples(match_texture(kit, None, "step"))
    audio = render_shot(_envelope(1.5, []), oneshots, textures, seed=0)
    assert audio.shape == (72000,) and not np.any(audio)


def _max_jump_ratio(audio: np.ndarray, at: int) -> float:
    """Largest sample-to-sample step within 1 ms of `at`, relative to the peak within 10 ms."""
    near = audio[max(0, at - 48) : at + 48].astype(np.float64)
    around = audio[max(0, at - 480) : at + 480]
    return float(np.max(np.abs(np.diff(near))) / max(float(np.max(np.abs(around))), 1e-12))


def test_no_clicks_at_cuts_and_sample_edges() -> None:
    """A loud 1 kHz tone cut abruptly at both ends, played across the shot's edges."""
    tone = np.sin(2 * np.pi * 1000 * np.arange(int(0.3 * SR)) / SR).astype(np.float32) * 0.5
    step_of_tone = 2 * np.pi * 1000 / SR  # the largest step the tone itself makes (relative)
    events = [{"t": -0.1, "strength": 1.0}, {"t": 0.6, "strength": 1.0},
              {"t": 0.9, "strength": 1.0}]
    audio = render_shot(_envelope(1.0, events), [Sample(tone, "tone", onset=0)], [], seed=0)
    for edge in (0, int(0.2 * SR), int(0.6 * SR), int(0.9 * SR), len(audio) - 1):
        assert _max_jump_ratio(audio, edge) <= 1.2 * step_of_tone
    assert abs(audio[0]) < 1e-3 and abs(audio[-1]) < 0.05


def test_a_recording_s_dc_offset_is_not_delivered() -> None:
    """The library keeps a recording's DC (for its attack time); the rendering does not: a
    decaying 200 Hz hit riding on a +0.05 offset, played three times, leaves a stem whose mean
    is under 1 % of its RMS (it was 5 % on the demo's gravel), and its hits still land on
    their times within 1 ms."""
    t = np.arange(int(0.4 * SR)) / SR
    hit = (np.sin(2 * np.pi * 200 * t) * np.exp(-t / 0.05) * 0.5 + 0.05).astype(np.float32)
    times = [0.2, 0.9, 1.6]
    audio = render_shot(_envelope(2.0, _steps(times, kind="impact")),
                        [Sample(hit, "offset hit", onset=0)], [], seed=0)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert abs(float(np.mean(audio))) < 0.01 * rms, (np.mean(audio), rms)
    assert np.all(_nearest_errors(detect_onsets(audio, SR), times) < 0.001)


def test_texture_follows_the_residual_curve(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "footsteps wood", "step"))
    textures = _samples(match_texture(kit, None, "step"))
    t = np.arange(400) / 100
    curve = 0.03 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) * np.clip(t / 0.5, 0, 1)
    env = _envelope(4.0, _steps([1.0, 2.5], 0.6), curve)
    audio = render_shot(env, oneshots, textures, seed=2)
    events_only = render_shot(env, oneshots, [], seed=2)
    texture = audio - events_only
    event_env = rms_envelope(events_only, SR)
    residual = np.sqrt(np.maximum(curve**2 - event_env.astype(np.float64) ** 2, 0))
    texture_env = rms_envelope(texture, SR)
    assert np.corrcoef(texture_env[5:-5], residual[5:-5])[0, 1] > 0.95
    quiet = event_env < 0.1 * curve  # where the texture alone carries the curve
    assert np.median(texture_env[quiet] / curve[quiet]) == pytest.approx(1.0, abs=0.15)
    assert np.array_equal(events_only, render_shot(env, oneshots, [], seed=2))


def test_texture_only_when_no_oneshots_match(kit: list) -> None:
    textures = _samples(match_texture(kit, "scrape", "scrape"))
    env = _envelope(2.0, _steps([0.5], kind="scrape"), np.full(200, 0.02))
    audio = render_shot(env, {"impact": []}, textures, seed=0)
    assert rms_envelope(audio, SR)[20:-20] == pytest.approx(0.02, rel=0.2)


def test_oneshots_by_kind() -> None:
    t = np.arange(int(0.05 * SR)) / SR
    low = Sample((np.sin(2 * np.pi * 200 * t) * 0.5).astype(np.float32), "low")
    high = Sample((np.sin(2 * np.pi * 3000 * t) * 0.5).astype(np.float32), "high")
    events = [{"t": 0.2, "strength": 1, "kind": "step"},
              {"t": 0.6, "strength": 1, "kind": "impact"}]
    audio = render_shot(_envelope(1.0, events), {"step": [low], "impact": [high]}, [], seed=0)
    for start, f in ((0.2, 200), (0.6, 3000)):
        seg = audio[int(start * SR) : int((start + 0.04) * SR)]
        peak = np.fft.rfftfreq(len(seg), 1 / SR)[np.argmax(np.abs(np.fft.rfft(seg)))]
        assert abs(np.log2(peak / f)) < 0.1


def test_a_dense_shot_holds_one_event_sound_at_a_time() -> None:
    """Memory follows the shot's length, not its events: 400 one-second hits in 20 s (73 MB of
    sound in all) render within a few copies of the 20 s track (it was 221 MB: every event's
    sound held, twice, while the layer was levelled and choked)."""
    import tracemalloc

    sr, dur = 48000, 20.0
    rng = np.random.default_rng(1)
    hit = (rng.standard_normal(sr) * np.exp(-np.arange(sr) / (0.3 * sr))).astype(np.float32)
    events = [{"t": float(t), "strength": 0.8} for t in np.linspace(0.1, dur - 0.1, 400)]
    env = {"duration_s": dur, "rate_hz": 125.0, "curve": [0.02] * int(dur * 125),
           "events": events}
    tracemalloc.start()
    try:
        out = render_shot(env, [Sample(hit, "hit", onset=0)], [], sr=sr, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * out.nbytes < len(events) * hit.nbytes, (peak, out.nbytes)
    level = rms_envelope(out, sr, 125.0)[25:-25]  # and the layer still follows the curve
    db = 20 * np.log10(level / 0.02)
    assert abs(np.median(db)) < 1.5 and np.all(np.abs(db) < 6), np.percentile(db, [0, 50, 100])


def test_loud_pileup_stays_under_full_scale(kit: list) -> None:
    oneshots = _samples(match_sounds(kit, "metal", "impact"))
    events = _steps(list(np.arange(0.1, 1.0, 0.02)), 1.0, kind="impact")
    audio = render_shot(_envelope(1.5, events, np.full(150, 0.5)), oneshots,
                        _samples(match_texture(kit, None, "impact")), seed=0)
    assert np.max(np.abs(audio)) <= 10 ** (-1 / 20) + 1e-6
    hot = np.sin(np.arange(SR) / 10.0).astype(np.float32) * 3.0
    limited = soft_limit(hot, SR)
    assert np.max(np.abs(limited)) <= 10 ** (-1 / 20) + 1e-6
    assert np.max(np.abs(np.diff(limited))) < 0.2  # a smooth gain, not a hard clip


def test_a_library_with_nothing_for_the_shot_fails_it_rather_than_deliver_silence(
        kit: list) -> None:
    """A studio library without the shot's sound (footsteps on gravel, a library of whooshes):
    the shot fails, naming the library and what was sought; a silent envelope needs nothing,
    and a texture alone carries a scrape (`test_texture_only_when_no_oneshots_match`)."""
    from tasks.synth import choose_sounds

    whooshes = [s for s in kit if s.category == "whooshes"]
    assert whooshes
    steps = _envelope(2.0, _steps([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"nothing in sound library 'air' matches 'footsteps "
                                         r"gravel' \(step\), so the shot would be silent"):
        choose_sounds(whooshes, "footsteps gravel", steps, library="air")
    assert choose_sounds(whooshes, "footsteps gravel", _envelope(2.0, []), library="air") \
        == ([], [])
    scrape = _envelope(2.0, _steps([0.5], kind="scrape"), np.full(200, 0.02))
    oneshots, textures = choose_sounds([s for s in kit if s.kind == "texture"], "scrape", scrape)
    assert not oneshots and textures
    # what matches must be able to sound: events only through one-shots, a curve only
    # through a texture
    only_textures = [s for s in kit if s.kind == "texture"]
    with pytest.raises(ValueError, match="so the shot would be silent"):
        choose_sounds(only_textures, "scrape", _envelope(2.0, _steps([0.5], kind="scrape")))
    with pytest.raises(ValueError, match="so the shot would be silent"):
        choose_sounds([s for s in kit if s.kind == "oneshot"], "scrape",
                      _envelope(2.0, [], np.full(200, 0.02)))
    silent = {**_envelope(2.0, []), "category": "no such category"}
    assert choose_sounds(whooshes, None, silent) == ([], [])  # a silent shot needs nothing
