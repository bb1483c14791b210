"""The one-clip API: a video in, Foley and its envelope out, no edit involved."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.api import generate_foley
from models.audio_env import detect_onsets
from models.scenes import SceneSpec, render_scene


@pytest.fixture(scope="module")
def bounce(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("clip") / "take 3 – bounce.mp4"
    truth = render_scene(SceneSpec("bounce", fps=24, duration_s=2.5, seed=7), path)
    return path, [e["t"] for e in truth.events]


def test_generate_foley_follows_the_picture(foley_home: Path, bounce: tuple[Path, list[float]]) -> None:
    path, contacts = bounce
    clip = generate_foley(path, prompt="impacts wood")
    assert clip.samplerate == 48000 and clip.audio.ndim == 1
    assert len(clip.audio) == round(2.5 * 48000)
    assert clip.envelope["prompt"] == "impacts wood" and clip.envelope["events"]
    onsets = detect_onsets(clip.audio, clip.samplerate)
    for t in contacts:
        assert np.min(np.abs(onsets - t)) < 1 / 24, (t, onsets)


def test_generate_foley_spatial_and_excerpt(foley_home: Path, bounce: tuple[Path, list[float]]) -> None:
    path, _ = bounce
    clip = generate_foley(path, duration=1.0, start=0.5, spatial=True)
    n = 48000
    assert clip.audio.shape == (n, 2) and clip.foa is not None and clip.foa.shape == (n, 4)
    assert clip.envelope["duration_s"] == 1.0
