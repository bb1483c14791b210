"""The motion baseline on rendered scenes with exactly known contact times."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.motion_baseline import MOTION_FIELDS, RMS_AT_FULL_STRENGTH, SOURCE, estimate_envelope
from models.scenes import SceneSpec, SceneTruth, render_scene
from tasks.features import GRID, MAX_REGIONS, REGION_FIELDS, compute_features
from tasks.media import make_proxy

RATES = [24.0, 30000 / 1001, 15.0]


def _envelope(directory: Path, spec: SceneSpec) -> tuple[dict, SceneTruth]:
    src, proxy = directory / "scene.mp4", directory / "proxy.mp4"
    truth = render_scene(spec, src)
    make_proxy(src, 0.0, truth.duration_s, truth.fps, proxy)
    feats = compute_features(proxy, truth.fps)
    return estimate_envelope(feats, shot="SH010", duration_s=truth.duration_s), truth


def _timing(env: dict, truth: SceneTruth) -> tuple[np.ndarray, int]:
    """Error (frames) of the nearest detection per true event; detections matching nothing."""
    det = np.array([e["t"] for e in env["events"]])
    true = np.array([e["t"] for e in truth.events])
    if det.size == 0:
        return np.full(true.size, np.inf), 0
    errors = np.array([(det[np.argmin(np.abs(det - t))] - t) * truth.fps for t in true])
    extra = sum(1 for t in det if np.min(np.abs(true - t)) * truth.fps > 1.0) if true.size else det.size
    return errors, extra


@pytest.mark.parametrize("fps", RATES, ids=lambda r: f"{r:.3f}fps")
@pytest.mark.parametrize("kind", ["bounce", "steps"])
def test_contacts_are_timed_below_a_frame(tmp_path: Path, kind: str, fps: float) -> None:
    env, truth = _envelope(tmp_path, SceneSpec(kind=kind, fps=fps, duration_s=2.5))
    errors, extra = _timing(env, truth)
    report = (f"{kind} @ {fps:.3f} fps: errors (frames) {np.round(errors, 3).tolist()}, "
              f"median |error| {np.median(np.abs(errors)):.3f}, unmatched detections {extra}")
    print(report)
    assert len(truth.events) >= 3, report
    assert np.all(np.abs(errors) <= 1.0), report
    assert np.median(np.abs(errors)) < 0.25, report
    assert extra == 0, report
    expected_kind = "impact" if kind == "bounce" else "step"
    assert {e["kind"] for e in env["events"]} == {expected_kind}, report


def test_robust_to_pan_noise_and_flicker(tmp_path: Path) -> None:
    spec = SceneSpec(kind="bounce", fps=24.0, duration_s=2.5, pan=-0.12, noise=0.02, flicker=0.03,
                     background="tiles", seed=7)
    env, truth = _envelope(tmp_path, spec)
    errors, extra = _timing(env, truth)
    report = f"panned bounce: errors (frames) {np.round(errors, 3).tolist()}, unmatched {extra}"
    print(report)
    assert np.all(np.abs(errors) <= 1.0) and extra == 0, report


@pytest.mark.parametrize("spec", [SceneSpec(kind="static", noise=0.03, flicker=0.05),
                                  SceneSpec(kind="static", pan=0.15),
                                  SceneSpec(kind="pass"), SceneSpec(kind="pass", fps=15.0, pan=0.1)],
                         ids=["static-noisy", "static-pan", "pass", "pass-15fps-pan"])
def test_no_events_without_contact(tmp_path: Path, spec: SceneSpec) -> None:
    env, _ = _envelope(tmp_path, SceneSpec(**{**spec.__dict__, "duration_s": 2.5}))
    assert env["events"] == [], env["events"]
    if spec.kind == "static":
        assert max(env["curve"]) == 0.0


def test_strength_grows_with_drop_height(tmp_path: Path) -> None:
    strengths = []
    for height in (0.2, 0.4, 0.7):
        env, truth = _envelope(tmp_path, SceneSpec(kind="bounce", drop_height=height, duration_s=2.0))
        first = min(env["events"], key=lambda e: abs(e["t"] - truth.events[0]["t"]))
        strengths.append(first["strength"])
    assert strengths == sorted(strengths) and strengths[0] < strengths[-1], strengths


def test_envelope_follows_the_contract(tmp_path: Path) -> None:
    env, truth = _envelope(tmp_path, SceneSpec(kind="bounce", duration_s=2.0))
    assert env["version"] == 1 and env["parent"] is None and env["prompt"] is None
    assert env["source"] == SOURCE and env["shot"] == "SH010" and env["rate_hz"] == 100
    assert env["duration_s"] == truth.duration_s and len(env["curve"]) == round(truth.duration_s * 100)
    assert all(0.0 <= v <= RMS_AT_FULL_STRENGTH for v in env["curve"])  # linear RMS
    for e in env["events"]:
        assert set(e) == {"t", "strength", "x", "y", "kind", "confidence"}
        assert 0 <= e["x"] <= 1 and 0 <= e["y"] <= 1 and 0 <= e["strength"] <= 1 and 0 <= e["confidence"] <= 1
        peak = int(np.ceil(e["t"] * 100))                 # a transient starts at each event
        assert max(env["curve"][peak:peak + 3]) > 0.5 * e["strength"] * RMS_AT_FULL_STRENGTH
    first = env["events"][0]
    assert abs(first["x"] - truth.events[0]["x"]) < 0.05 and first["y"] > 0.7


def test_motion_descriptors_tell_a_bounce_from_a_stop(tmp_path: Path) -> None:
    """With motion=True each contact carries how the object moved (frame heights per second,
    down positive): a ball falls into each bounce and rises out of it, a walker's foot comes
    down forward and stops; the same events and times as without it."""
    for kind in ("bounce", "steps"):
        src, proxy = tmp_path / f"{kind}.mp4", tmp_path / f"{kind}_proxy.mp4"
        truth = render_scene(SceneSpec(kind=kind, duration_s=2.5), src)
        make_proxy(src, 0.0, truth.duration_s, truth.fps, proxy)
        feats = compute_features(proxy, truth.fps)
        plain = estimate_envelope(feats, shot="SH010", duration_s=truth.duration_s)
        env = estimate_envelope(feats, shot="SH010", duration_s=truth.duration_s, motion=True)
        assert [{k: v for k, v in e.items() if k != "motion"} for e in env["events"]] \
            == plain["events"]
        motion = [e["motion"] for e in env["events"]]
        assert motion and all(set(m) == set(MOTION_FIELDS) for m in motion)
        assert all(m["vy_before"] > 0.2 for m in motion), motion      # coming down
        if kind == "bounce":
            assert all(m["vy_after"] < 0 and not m["stop"] for m in motion[:-1]), motion
        else:
            assert all(m["vx_before"] > 0.1 for m in motion), motion  # a foot swings forward
        assert all(0 < m["size"] < 1 and 0 < m["tracked_before_s"] <= 1 for m in motion)


def test_sliding_gives_a_scrape_and_a_sustained_curve(tmp_path: Path) -> None:
    env, truth = _envelope(tmp_path, SceneSpec(kind="slide", duration_s=2.0))
    scrapes = [e for e in env["events"] if e["kind"] == "scrape"]
    assert len(scrapes) == 1 and abs(scrapes[0]["t"] - truth.events[0]["t"]) * truth.fps < 1.0, env["events"]
    curve = np.array(env["curve"])
    assert curve[100:150].min() > 0.05 * RMS_AT_FULL_STRENGTH  # still sliding a second later


def test_zero_motion_features_give_silence() -> None:
    n = 24
    feats = {"fps": np.float32(24), "n_frames": np.float32(n), "size": np.float32([320, 180]),
             "flow_grid": np.zeros((n - 1, *GRID, 2), np.float32),
             "global_motion": np.zeros((n - 1, 2), np.float32),
             "regions": np.zeros((n - 1, MAX_REGIONS, len(REGION_FIELDS)), np.float32)}
    env = estimate_envelope(feats, shot="SH020", duration_s=1.0)
    assert env["events"] == [] and env["curve"] == [0.0] * 100


def _shot(directory: Path, spec: SceneSpec, start_s: float, duration_s: float) -> tuple[dict, np.ndarray]:
    """Envelope of a cut [start_s, start_s + duration_s) of a scene, and its contacts in shot time."""
    src, proxy = directory / "scene.mp4", directory / "proxy.mp4"
    truth = render_scene(spec, src)
    make_proxy(src, start_s, duration_s, truth.fps, proxy)
    env = estimate_envelope(compute_features(proxy, truth.fps), shot="SH030", duration_s=duration_s)
    true = np.array([e["t"] - start_s for e in truth.events])
    return env, true[(true >= 0) & (true < duration_s)]


def _shot_timing(env: dict, true: np.ndarray, fps: float) -> tuple[np.ndarray, int]:
    det = np.array([e["t"] for e in env["events"]])
    if det.size == 0:
        return np.full(true.size, np.inf), 0
    errors = np.array([(det[np.argmin(np.abs(det - t))] - t) * fps for t in true])
    return errors, sum(1 for t in det if np.min(np.abs(true - t)) * fps > 1.0)


def test_fast_fall_at_15fps_under_a_pan(tmp_path: Path) -> None:
    """~0.19 frame heights per frame before contact, more than the ball's size: the flow must
    keep the ball on the last pair before contact (no early, reversed pair)."""
    spec = SceneSpec("bounce", fps=15.0, duration_s=3.5, seed=4, pan=0.08, drop_height=0.8, restitution=0.6)
    env, true = _shot(tmp_path, spec, 0.2, 3.0)
    errors, extra = _shot_timing(env, true, 15.0)
    report = f"fast fall 15 fps pan: errors (frames) {np.round(errors, 3).tolist()}, unmatched {extra}"
    print(report)
    assert len(true) == 3 and np.all(np.abs(errors) < 0.5) and extra == 0, report


def test_contact_right_after_the_cut(tmp_path: Path) -> None:
    """A figure already mid-stride on the first frame: its footfall 4 frames in is an event."""
    fps = 30000 / 1001
    env, true = _shot(tmp_path, SceneSpec("steps", fps=fps, duration_s=5.0, seed=2), 0.5, 4.0)
    errors, extra = _shot_timing(env, true, fps)
    report = f"steps cut mid-stride: errors (frames) {np.round(errors, 3).tolist()}, unmatched {extra}"
    print(report)
    assert true[0] * fps < 5 and np.all(np.abs(errors) < 0.5) and extra == 0, report
    first = min(env["events"], key=lambda e: e["t"])
    assert abs(first["t"] - true[0]) * fps < 0.5 and first["kind"] == "step", env["events"]
