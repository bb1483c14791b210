"""`tasks.library.index_library` on recordings whose level is wrong in ways a studio library
holds: near-silence (a float file of denormals, a hit 100 dB down) is skipped and named with
its reason beside the files indexed; a DC offset never reaches the processed sound, nor the
sampler's render of it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.audio_env import detect_onsets
from models.sampler import render_shot
from tasks.library import TARGET_LOUDNESS_DB, index_library, load_sample

SR = 48000
RECORDING = "impacts/wood/minetest_default_dig_choppy.2.ogg"  # of the shared sfx set


def hit(path: Path, freq: float, peak: float = 0.5, subtype: str = "PCM_24") -> None:
    """A 0.4 s decaying sine (a clean one-shot) peaking near `peak`."""
    t = np.arange(int(0.4 * SR)) / SR
    x = np.exp(-t * 20) * np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (x * peak / np.abs(x).max()).astype("float32"), SR, subtype=subtype)


def test_near_silent_files_are_skipped_with_their_reason(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    lib = tmp_path / "lib"
    hit(lib / "impacts/wood/hit1.wav", 700)
    hit(lib / "impacts/wood/hit2.wav", 900)
    hit(lib / "impacts/wood/hit_quiet.wav", 800, peak=10 ** (-60 / 20))  # quiet, but a sound
    hit(lib / "impacts/wood/hit_faint.wav", 800, peak=10 ** (-100 / 20))  # 24-bit holds it
    noise = np.random.default_rng(0).standard_normal(12 * SR) * 1e-40  # denormal floats
    sf.write(lib / "impacts/wood/roomtone.wav", noise.astype("float32"), SR, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="tasks.library"):
        sounds = index_library(lib, tmp_path / "out")
    assert [s.rel_path for s in sounds] == ["impacts/wood/hit1.wav", "impacts/wood/hit2.wav",
                                            "impacts/wood/hit_quiet.wav"]
    for s in sounds:  # each at the reference loudness, none at −561 dB
        assert s.loudness_db == pytest.approx(TARGET_LOUDNESS_DB, abs=0.1), s
    manifest = json.loads((tmp_path / "out" / "library.json").read_text())
    assert manifest["skipped"] == ["impacts/wood/hit_faint.wav", "impacts/wood/roomtone.wav"]
    warning = [r.getMessage() for r in caplog.records if "skipped 2 file" in r.getMessage()]
    assert len(warning) == 1, [r.getMessage() for r in caplog.records]
    below = "below -90 dBFS)"  # tasks.library.NEAR_SILENCE_PEAK_DBFS
    assert f"impacts/wood/hit_faint.wav (only near-silence: its peak is -100 dBFS, {below}" \
        in warning[0], warning[0]
    assert "impacts/wood/roomtone.wav (only near-silence: its peak is -7" in warning[0]
    assert warning[0].count(below) == 2


def _render_one(path: str, attack_s: float) -> np.ndarray:
    """The sampler's render of the sound as one event at 0.5 s of a 2 s shot."""
    env = {"version": 1, "parent": None, "shot": "SH010", "rate_hz": 100, "duration_s": 2.0,
           "curve": [0.0] * 200, "prompt": None, "source": "test",
           "events": [{"t": 0.5, "strength": 0.9, "x": 0.5, "y": 0.5, "kind": "impact"}]}
    sample = load_sample(path, Path(path).name, attack_s=attack_s)
    return render_shot(env, [sample], [], sr=SR, seed=0, level_from_curve=False).astype(float)


def test_dc_offset_is_removed_at_index_time(sfx_dir: Path, tmp_path: Path) -> None:
    """A real recording, as it is and with a DC offset of 0.05 (−26 dBFS) added: indexed, the
    two are the same sound, with no DC, and so are their renders (before: the processed file's
    mean was −4.6 dB re its RMS and the rendered one-shot carried −32 dBFS of DC)."""
    x, sr = sf.read(sfx_dir / RECORDING, dtype="float64", always_2d=True)
    lib = tmp_path / "lib"
    (lib / "impacts/wood").mkdir(parents=True)
    for name, dc in (("clean", 0.0), ("offset", 0.05)):
        sf.write(lib / f"impacts/wood/{name}.wav", (x + dc).astype("float32"), sr,
                 subtype="FLOAT")
    sounds = {Path(s.rel_path).stem: s for s in index_library(lib, tmp_path / "out")}
    clean, offset = sounds["clean"], sounds["offset"]
    assert clean.kind == offset.kind == "oneshot"
    processed = sf.read(offset.processed_path, dtype="float64")[0]
    rms = np.sqrt(np.mean(processed**2))
    assert abs(processed.mean()) < rms * 10 ** (-50 / 20), (processed.mean(), rms)
    assert offset.duration_s == clean.duration_s  # the offset kept no "sound" after the decay
    renders = {k: _render_one(s.processed_path, s.attack_s) for k, s in sounds.items()}
    r = renders["offset"]
    span = r[np.flatnonzero(r)[0]:np.flatnonzero(r)[-1] + 1]
    assert 20 * np.log10(abs(span.mean()) + 1e-12) < -70, span.mean()  # −87 dBFS measured
    assert np.abs(renders["offset"] - renders["clean"]).max() < 1e-4
    onsets = detect_onsets(r, SR)
    assert abs(onsets[0] - 0.5) <= 0.001  # the attack still lands on the event
