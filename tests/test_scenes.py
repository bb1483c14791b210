"""Rendered scenes: analytic truth, real H.264 files at odd frame rates, frame-exact streams."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from models.scenes import GRAVITY, KINDS, SceneSpec, read_barcode, render_scene, scene_truth
from tasks.media import iter_frames, probe

RATES = [24.0, 30000 / 1001, 15.0, 21.5]


def test_bounce_truth_follows_the_physics() -> None:
    spec = SceneSpec(kind="bounce", drop_height=0.6, restitution=0.6, start_s=0.2, duration_s=4)
    events = scene_truth(spec).events
    assert [e["kind"] for e in events] == ["impact"] * len(events) and len(events) >= 3
    assert events[0]["t"] == pytest.approx(0.2 + math.sqrt(2 * 0.6 / GRAVITY))
    flights = [b["t"] - a["t"] for a, b in zip(events, events[1:])]
    for f0, f1 in zip(flights, flights[1:]):
        assert f1 / f0 == pytest.approx(0.6)          # each flight scales with restitution
    strengths = [e["strength"] for e in events]
    assert strengths == sorted(strengths, reverse=True)


def test_steps_truth_alternates_feet_on_a_cadence() -> None:
    events = scene_truth(SceneSpec(kind="steps", duration_s=3.0)).events
    assert len(events) == 5 and {e["kind"] for e in events} == {"step"}
    gaps = [b["t"] - a["t"] for a, b in zip(events, events[1:])]
    assert gaps == pytest.approx([0.5] * 4)
    xs = [e["x"] for e in events]
    assert xs == sorted(xs)                                # walking right


@pytest.mark.parametrize("kind", ["static", "pass"])
def test_silent_scenes_have_no_events(kind: str) -> None:
    assert scene_truth(SceneSpec(kind=kind)).events == []


def test_events_fall_between_frames() -> None:
    spec = SceneSpec(kind="bounce", fps=24.0, duration_s=2.5)
    frac = [(e["t"] * 24.0) % 1.0 for e in scene_truth(spec).events]
    assert any(0.05 < f < 0.95 for f in frac), frac


@pytest.mark.parametrize("fps", RATES, ids=lambda r: f"{r:.3f}")
def test_render_then_probe_agree(tmp_path: Path, fps: float) -> None:
    spec = SceneSpec(kind="bounce", fps=fps, duration_s=2.0, size=(320, 180), barcode=True)
    truth = render_scene(spec, tmp_path / "scene.mp4")
    assert truth.n_frames == round(2.0 * fps)
    assert truth.duration_s == pytest.approx(truth.n_frames / fps)
    info = probe(tmp_path / "scene.mp4")
    assert (info.width, info.height) == (320, 180)
    assert info.n_frames == truth.n_frames
    assert info.fps == pytest.approx(fps, rel=1e-6)
    assert info.duration_s == pytest.approx(truth.duration_s, abs=1e-3)
    assert not info.has_audio and not info.is_vfr
    indices = [read_barcode(f) for f in iter_frames(tmp_path / "scene.mp4")]
    assert indices == list(range(truth.n_frames))
    assert [p.name for p in tmp_path.iterdir()] == ["scene.mp4"]   # no temp file left


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders(tmp_path: Path, kind: str) -> None:
    spec = SceneSpec(kind=kind, duration_s=0.5, size=(160, 90), pan=0.1, flicker=0.05, noise=0.02)
    truth = render_scene(spec, tmp_path / f"{kind}.mp4")
    frames = list(iter_frames(tmp_path / f"{kind}.mp4"))
    assert len(frames) == truth.n_frames == 12 and frames[0].shape == (90, 160, 3)


@pytest.mark.parametrize("bad", [dict(kind="explode"), dict(size=(321, 180)), dict(fps=0.0)])
def test_bad_specs_are_refused(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        render_scene(SceneSpec(**bad), tmp_path / "x.mp4")
