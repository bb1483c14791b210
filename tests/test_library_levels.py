"""`tasks.library.index_library` on recordings whose level is wrong in ways a studio library
holds: near-silence (a float file of denormals, a hit 100 dB down) is skipped and named with
its reason beside the files indexed. (A DC offset is kept as recorded: docs/SYNTHESIS.md.)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.library import TARGET_LOUDNESS_DB, index_library

SR = 48000


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
