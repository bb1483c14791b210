"""RMS-Mapper stage 1: target conventions, µ-law classes, inputs at any fps, the network."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.rms_mapper import (
    PRESETS, build, get_config, load_checkpoint, loss, onset_loss, predict, save_checkpoint,
    set_input_stats,
)
from models.rms_targets import (
    HOP, N_CLASSES, RATE_HZ, SMOOTH, SR, decode_probs, mu_compress, mu_decode, mu_encode,
    onset_target, resample_curve, rms_target, smooth_labels,
)
from models.v2a_inputs import (
    CONTACT_DIM, IN_RATE_HZ, INPUT_DIM, align, contact_inputs, frame_inputs, model_inputs, input_stats, n_steps, step_times,
)
from tasks.features import GRID, KEYS, MAX_REGIONS, REGION_FIELDS

torch.set_num_threads(1)

CLICKS_S = (0.2, 0.55, 0.9, 1.23)


def _click_train(sr: int, duration_s: float = 1.5) -> np.ndarray:
    x = np.zeros(int(round(duration_s * sr)))
    for t in CLICKS_S:
        x[int(round(t * sr))] = 0.9
    return x


def test_target_is_librosa_rms_then_moving_average() -> None:
    x = _click_train(SR) + np.random.default_rng(0).normal(0, 0.01, int(1.5 * SR))
    target = rms_target(x, SR)
    # librosa.feature.rms(frame_length=512, hop_length=128, center=True, pad_mode="constant"),
    # written out (librosa's first call compiles for ~20 s)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, 256), 512)[::HOP]
    rms = np.sqrt((frames ** 2).mean(axis=1))
    assert target.dtype == np.float32
    assert target.shape == (len(x) // HOP + 1,) == rms.shape
    inner = slice(SMOOTH // 2, len(rms) - SMOOTH // 2)
    expected = np.convolve(rms, np.ones(SMOOTH) / SMOOTH, mode="same")[inner]
    assert np.allclose(target[inner], expected, atol=1e-6)
    # at the ends: the mean of the frames that exist, not a fade towards zero
    assert np.isclose(target[0], rms[: SMOOTH // 2 + 1].mean(), atol=1e-6)


@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_target_rate_and_click_times(sr: int) -> None:
    stereo = np.stack([_click_train(sr), 0.5 * _click_train(sr)], axis=1)
    target = rms_target(stereo, sr)
    assert target.shape == (math.floor(1.5 * RATE_HZ) + 1,)  # 16 kHz length 24000 → 24000 // 128 + 1
    assert np.allclose(target, rms_target(0.75 * _click_train(sr), sr), atol=1e-6), "stereo is not the mono mix"
    for t in CLICKS_S:
        k = int(round(t * RATE_HZ))
        window = np.arange(k - 20, k + 21)
        bump = target[window]
        top = window[bump > 0.5 * bump.max()]
        centre = (top[0] + top[-1]) / 2
        assert abs(centre / RATE_HZ - t) <= HOP / SR, f"click at {t} s peaks at {centre / RATE_HZ:.4f} s"


def test_mu_law_round_trip_and_clipping() -> None:
    x = np.concatenate([[0.0], np.logspace(-5, 0, 400)])
    classes = mu_encode(x)
    assert classes.dtype == np.int64 and classes.min() == 0 and classes.max() == N_CLASSES - 1
    back = mu_decode(classes)
    # within half a class in the µ-law domain, i.e. within ~4.5 % of level above -40 dBFS
    assert np.abs(mu_compress(back) - mu_compress(x)).max() <= 0.5 / (N_CLASSES - 1) + 1e-6
    loud = x >= 0.01
    assert np.abs(np.log(back[loud] / x[loud])).max() < 0.07
    assert np.abs(back - x)[x < 0.001].max() < 3e-4
    assert mu_decode(np.array([0]))[0] == 0.0 and mu_decode(np.array([63]))[0] == pytest.approx(1.0)
    assert mu_encode(np.array([1.0, 1.7, 40.0, -0.3])).tolist() == [63, 63, 63, 0]
    assert np.all(np.diff(classes) >= 0)


def test_smooth_labels_rows() -> None:
    classes = np.array([0, 1, 17, 40, 62, 63])
    labels = smooth_labels(classes)
    assert labels.shape == (6, N_CLASSES) and labels.dtype == np.float32
    assert np.allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert labels.argmax(axis=1).tolist() == classes.tolist()
    assert labels[2, 16] == pytest.approx(labels[2, 18]) and labels[2, 16] > labels[2, 15] > 0
    assert np.array_equal(smooth_labels(classes, sigma=0), np.eye(N_CLASSES, dtype=np.float32)[classes])


def test_onset_target_bumps() -> None:
    y = onset_target([0.2, 0.5, 0.508], 100)
    assert y.shape == (100,) and y.dtype == np.float32
    assert y[25] == pytest.approx(1.0) and y.max() <= 1.0                # 0.2 s = frame 25
    assert y[24] == pytest.approx(math.exp(-0.5 / 1.5 ** 2), rel=1e-5)   # σ = 1.5 frames
    assert y[62:65].min() > 0.8 and y[40] < 1e-6                         # close onsets overlap
    assert onset_target([], 10).sum() == 0 and onset_target([5.0], 10).sum() == 0


def test_decode_probs_recovers_the_curve() -> None:
    t = np.arange(250) / RATE_HZ
    curve = 0.3 * np.exp(-((t - 1.0) / 0.2) ** 2) + 0.002
    classes = mu_encode(curve)
    decoded, confidence = decode_probs(smooth_labels(classes))
    assert decoded.shape == confidence.shape == (250,)
    assert np.abs(mu_compress(decoded) - mu_compress(curve)).max() < 0.6 / (N_CLASSES - 1)
    assert confidence.min() > 0.95
    _, unsure = decode_probs(np.full((3, N_CLASSES), 1 / N_CLASSES))
    assert unsure.max() < 0.1
    two_minds = np.zeros((1, N_CLASSES))
    two_minds[0, [0, 50]] = 0.5
    assert decode_probs(two_minds)[1][0] < 0.1


def test_resample_curve_125_to_100_and_back() -> None:
    t = np.arange(376) / RATE_HZ  # 3 s
    curve = 0.5 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    at_100 = resample_curve(curve, RATE_HZ, 100.0, n_out=300)
    assert at_100.shape == (300,)
    assert np.allclose(at_100, 0.5 + 0.4 * np.sin(2 * np.pi * 1.5 * np.arange(300) / 100), atol=2e-3)
    back = resample_curve(at_100, 100.0, RATE_HZ)
    assert back.shape == (375,)
    assert np.allclose(back[:370], curve[:370], atol=5e-3)


def _features(fps: float, duration_s: float = 2.0, contact_s: float = 1.0) -> dict[str, np.ndarray]:
    """A region moving right at 0.5 widths/s that bounces back at `contact_s`, as tasks.features stores it."""
    n = int(round(duration_s * fps))
    p = n - 1
    size = np.array([320.0, 180.0])

    def x_at(t: np.ndarray) -> np.ndarray:
        return 0.3 + 0.5 * np.minimum(t, contact_s) - 0.5 * np.maximum(t - contact_s, 0.0)

    frames_t = np.arange(n) / fps
    dx = np.diff(x_at(frames_t))                                    # widths per frame, per pair
    rng = np.random.default_rng(int(fps * 100))
    regions = np.zeros((p, MAX_REGIONS, len(REGION_FIELDS)))
    fields = dict(valid=1.0, y=0.5, area=0.01, vy=0.0)
    for name, value in fields.items():
        regions[:, 0, REGION_FIELDS.index(name)] = value
    regions[:, 0, REGION_FIELDS.index("x")] = x_at(frames_t[:-1])
    regions[:, 0, REGION_FIELDS.index("vx")] = dx
    thumb = np.clip(x_at(frames_t)[:, None, None] + np.zeros((n, 8, 8)), 0, 1)
    hist = rng.random((n, 16))
    feats = {
        "fps": np.float32(fps), "n_frames": np.float32(n), "size": size,
        "flow_grid": np.zeros((p, *GRID, 2)) + dx[:, None, None, None] * np.array([1.0, 0.0]),
        "global_motion": np.zeros((p, 2)), "residual_energy": np.abs(dx) * 0.01,
        "moving_fraction": np.full(p, 0.01), "regions": regions,
        "mean_rgb": rng.random((n, 3)), "luma_hist": hist / hist.sum(axis=1, keepdims=True),
        "thumb": thumb, "sharpness": rng.random(n),
    }
    assert set(feats) == set(KEYS)
    return {k: np.asarray(v, np.float32) for k, v in feats.items()}


@pytest.mark.parametrize("fps", [12.0, 24.0, 29.97, 60.0])
def test_frame_inputs_rate_and_units_do_not_depend_on_fps(fps: float) -> None:
    assert (REGION_FIELDS.index("vx"), REGION_FIELDS.index("vy")) == (4, 5)  # the layout's region offsets
    x = frame_inputs(_features(fps))
    assert x.shape == (n_steps(2.0), INPUT_DIM) == (63, INPUT_DIM)  # 2 s (2.002 s at 29.97) → 63
    assert x.dtype == np.float32 and np.isfinite(x).all()
    t = step_times(len(x))
    far = np.abs(t - 1.0) > 2 / fps + 1 / IN_RATE_HZ
    flow_dx, region_vx, region_speed, flow_dx_change = x[:, 0], x[:, 292 + 4], x[:, 312], x[:, 398]
    expected = np.where(t < 1.0, 0.5, -0.5)
    assert np.allclose(flow_dx[far], expected[far], atol=1e-4), "flow is not in widths per second"
    assert np.allclose(region_vx[far], expected[far], atol=1e-4)
    assert np.allclose(region_speed[far], 0.5, atol=1e-4)
    # the bounce: a velocity change of -1 widths/s, at the contact, whatever the frame rate
    assert flow_dx_change.sum() == pytest.approx(-1.0, abs=1e-4)
    assert abs(t[np.argmin(flow_dx_change)] - 1.0) <= 0.5 / fps + 1 / IN_RATE_HZ
    assert np.abs(flow_dx_change[far]).max() < 1e-4


def test_step_rate_and_alignment_with_targets() -> None:
    assert IN_RATE_HZ == RATE_HZ / 4
    assert [n_steps(d) for d in (0.128, 0.129, 1.0, 2.0)] == [4, 5, 32, 63]
    assert np.allclose(step_times(2), [1.5 / RATE_HZ, 5.5 / RATE_HZ])
    for d in (0.128, 1.0, 1.37, 2.0):
        out_frames = 4 * n_steps(d)
        target_frames = len(rms_target(np.zeros(int(round(d * SR))), SR))
        assert 0 <= out_frames - target_frames + 1 <= 4
        pred = np.arange(out_frames, dtype=np.float32)
        aligned = align(pred, target_frames)
        assert aligned.shape == (target_frames,)
        assert aligned[min(target_frames, out_frames) - 1] == min(target_frames, out_frames) - 1
    batch = torch.arange(24.0).reshape(2, 12)
    assert align(batch, 13, axis=1).shape == (2, 13) and align(batch, 13, axis=1)[0, -1] == 11


@pytest.mark.parametrize("preset", list(PRESETS))
def test_forward_shapes(preset: str) -> None:
    torch.manual_seed(0)
    config = get_config(preset)
    assert config.contact_inputs and config.in_dim == INPUT_DIM + CONTACT_DIM
    model = build(config)
    logits, onset = model(torch.randn(2, 10, config.in_dim))
    assert logits.shape == (2, 40, N_CLASSES) and onset.shape == (2, 40)
    probs, onset_p = predict(model, np.random.default_rng(0).normal(size=(7, config.in_dim)))
    assert probs.shape == (28, N_CLASSES) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert onset_p.shape == (28,) and ((onset_p > 0) & (onset_p < 1)).all()
    headless = build(get_config(preset, onset_head=False, contact_inputs=False,
                                in_dim=INPUT_DIM))  # a checkpoint from before the head
    assert headless(torch.randn(1, 3, INPUT_DIM))[1] is None
    assert predict(headless, np.zeros((3, INPUT_DIM)))[1] is None
    assert model.training, "predict must leave the model's mode as it found it"
    with pytest.raises(ValueError, match="unknown RMS-Mapper preset"):
        get_config("huge")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = get_config("tiny")
    model = build(config)
    rng = np.random.default_rng(1)
    inputs = [rng.normal(2.0, 3.0, size=(20, config.in_dim)) for _ in range(3)]
    mean, std = input_stats(inputs)
    std[5] = 0.0  # a dimension that never varied
    set_input_stats(model, mean, std)
    model(torch.randn(2, 8, config.in_dim))  # train-mode pass: BatchNorm running statistics move
    path = tmp_path / "mapper.safetensors"
    save_checkpoint(model, config, path, {"trained_on": "unit test", "offset_s": 0.012})
    loaded, loaded_config, metadata = load_checkpoint(path)
    assert loaded_config == config and metadata == {"trained_on": "unit test", "offset_s": 0.012}
    assert np.array_equal(loaded.in_mean.numpy(), mean) and loaded.in_std[5] == 1.0
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    for a, b in zip(predict(model, inputs[0]), predict(loaded, inputs[0])):
        assert np.array_equal(a, b)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors: not an RMS-Mapper checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_tiny_model_overfits_a_short_pattern() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build(dataclasses.replace(get_config("tiny"), dropout=0.0))
    x = rng.normal(size=(4, 16, model.config.in_dim)).astype(np.float32)
    level = np.repeat(1 / (1 + np.exp(-2 * x[:, :, 0])), 4, axis=1)          # (4, 64) in (0, 1)
    classes = mu_encode(0.5 * level ** 3)
    target = torch.from_numpy(np.stack([smooth_labels(c) for c in classes]))  # (4, 64, 64)
    onsets = torch.from_numpy((np.repeat(x[:, :, 1], 4, axis=1) > 1.5).astype(np.float32))
    mask = torch.ones(4, 64)
    mask[3, 60:] = 0  # a padded tail
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = torch.from_numpy(x)
    losses, onset_losses = [], []
    for _ in range(100):
        opt.zero_grad()
        logits, onset = model(xt)
        value, term = loss(logits, target, mask), onset_loss(onset, onsets, mask)
        (value + term).backward()
        opt.step()
        losses.append(value.item())
        onset_losses.append(term.item())
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} → {losses[-1]:.3f}"
    assert onset_losses[-1] < 0.5 * onset_losses[0], f"{onset_losses[0]:.3f} → {onset_losses[-1]:.3f}"


def test_contact_inputs_place_each_tracked_contact_within_its_step() -> None:
    contacts = [{"t": 0.50, "strength": 0.8, "y": 0.9, "kind": "impact", "confidence": 0.7},
                {"t": 0.52, "strength": 0.2, "y": 0.1, "kind": "step", "confidence": 0.4},
                {"t": 1.30, "strength": 0.5, "y": 0.5, "kind": "scrape", "confidence": 1.0}]
    n = n_steps(2.0)
    d = contact_inputs(contacts, n)
    assert d.shape == (n, CONTACT_DIM) and d.dtype == np.float32
    times = step_times(n)
    for c in contacts[::2]:
        k = int(np.argmin(np.abs(times - c["t"])))
        bump = d[k, 0]
        assert 0.6 < bump <= 1.0
        assert np.allclose(d[k, 1:4], bump * np.array([c["confidence"], c["strength"], c["y"]]))
        kinds = d[k, 4:7] / bump
        assert np.allclose(kinds, [c["kind"] == q for q in ("impact", "step", "scrape")])
        assert np.isclose(d[k, 7] / bump, (c["t"] - times[k]) * IN_RATE_HZ, atol=1e-5)
    # the step nearest 0.50 s holds the contact whose bump is larger there, not a mix of both
    k = int(np.argmin(np.abs(times - 0.5)))
    assert d[k, 4] > 0 and d[k, 5] == 0
    assert (d[:, 0][np.abs(times - 0.9) < 0.1] < 1e-3).all()  # far from every contact: nothing
    feats = _features(24.0)
    x = model_inputs(feats, contacts)
    assert x.shape == (n_steps(2.0), INPUT_DIM + CONTACT_DIM)
    assert np.array_equal(x[:, :INPUT_DIM], frame_inputs(feats)) and np.array_equal(model_inputs(feats), frame_inputs(feats))


def test_frame_inputs_of_a_real_bouncing_ball(tmp_path: Path) -> None:
    """On features computed from a rendered proxy, the velocity-change cue lands on the bounces."""
    from models.scenes import SceneSpec, render_scene
    from tasks.features import compute_features
    from tasks.media import make_proxy

    truth = render_scene(SceneSpec(fps=24.0, duration_s=2.0, kind="bounce"), tmp_path / "bounce.mp4")
    make_proxy(tmp_path / "bounce.mp4", 0.0, truth.duration_s, 24.0, tmp_path / "proxy.mp4")
    x = frame_inputs(compute_features(tmp_path / "proxy.mp4", 24.0))
    assert x.shape == (n_steps(truth.duration_s), INPUT_DIM) and np.isfinite(x).all()
    t = step_times(len(x))
    vy_change = x[:, 689 + 1]  # largest region, vertical velocity, change over the step
    for event in truth.events[:2]:
        near = np.abs(t - event["t"]) <= 1 / 24.0 + 1 / IN_RATE_HZ
        assert vy_change[near].min() < -0.5, f"no velocity reversal read near the bounce at {event['t']:.3f} s"
    assert vy_change.argmin() in np.flatnonzero(np.abs(t - truth.events[0]["t"]) <= 1 / 24.0 + 1 / IN_RATE_HZ)


# ---------------------------------------------------------------- the envelope the pass stores


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Features of rendered 3 s scenes at 24 fps, as the pass computes them: a bouncing ball
    and a walker (footfalls at 0.63, 1.13, … 2.63 s)."""
    from models.scenes import SceneSpec, render_scene
    from tasks.features import compute_features
    from tasks.media import make_proxy

    root = tmp_path_factory.mktemp("scenes")
    out = {}
    for kind in ("bounce", "steps"):
        truth = render_scene(SceneSpec(kind=kind, fps=24.0, duration_s=3.0), root / f"{kind}.mp4")
        make_proxy(root / f"{kind}.mp4", 0.0, truth.duration_s, 24.0, root / f"{kind}_proxy.mp4")
        out[kind] = compute_features(root / f"{kind}_proxy.mp4", 24.0)
    return out


@pytest.fixture(scope="module")
def shipped() -> tuple[Any, dict[str, Any]]:
    """The shipped RMS-Mapper and its metadata (contact scorer included)."""
    from tasks.envelope import CHECKPOINT

    model, _config, meta = load_checkpoint(CHECKPOINT)
    return model, meta


def _duration(features: dict[str, np.ndarray]) -> float:
    return float(features["n_frames"]) / float(features["fps"])


def _with_selection(meta: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**meta, "selection": {**meta["selection"], **changes}}


def test_the_model_envelope_carries_the_doubt_it_resolved(
        scenes: dict[str, dict[str, np.ndarray]], shipped: tuple[Any, dict[str, Any]]) -> None:
    """`doubt` is the highest score among the candidates the contact scorer dropped (0 when it
    dropped none); a scorer that keeps nothing leaves no events and the best score as doubt;
    a checkpoint without a scorer makes no claim."""
    from models import contact_scorer, motion_baseline, v2a_envelope
    from tasks.decisions import validate_envelope

    model, meta = shipped
    feats, d = scenes["bounce"], _duration(scenes["bounce"])
    base = motion_baseline.estimate_envelope(feats, shot="X", duration_s=d, motion=True)
    _probs, curve, _conf, onset = v2a_envelope.model_outputs(model, feats, base["events"])
    selection = contact_scorer.Selection.from_dict(meta["selection"])
    contact_p, peak_p = selection.score(contact_scorer.candidates(
        onset, curve, base["events"], 24.0, selection.offset_s))
    scores = [float(p) for p in (*contact_p, *peak_p)]
    assert scores, "the scene gives the scorer nothing to weigh"
    tc, tp = selection.thresholds_for(24.0)
    dropped = [float(p) for p in contact_p if p < tc] + [float(p) for p in peak_p if p < tp]
    env = v2a_envelope.estimate_envelope(model, meta, feats, shot="X", duration_s=d)
    validate_envelope(env, where="model envelope")
    assert env["doubt"] == round(max(dropped, default=0.0), 3)
    assert all(e["confidence"] >= min(tc, tp) for e in env["events"])
    keeps_nothing = _with_selection(meta, thresholds=[[1.0, 1.01]] * len(
        meta["selection"]["thresholds"]))
    empty = v2a_envelope.estimate_envelope(model, keeps_nothing, feats, shot="X", duration_s=d)
    assert empty["events"] == [] and empty["doubt"] == round(max(scores), 3) > 0.1
    headless = {k: v for k, v in meta.items() if k != "selection"}  # calibrated before it
    assert "doubt" not in v2a_envelope.estimate_envelope(model, headless, feats, shot="X",
                                                         duration_s=d)


def test_the_model_envelope_stage_hashes_every_module_it_runs(
        scenes: dict[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """The envelope stage's cache key covers the source of every models.* module the model
    estimator imports and runs (read from sys.modules of a fresh interpreter)."""
    import json
    import subprocess
    import sys

    from tasks.envelope import CHECKPOINT, CODE

    np.savez(tmp_path / "features.npz", **scenes["bounce"])
    script = f"""
import json, sys
import numpy as np
from pathlib import Path
from models import rms_mapper, v2a_envelope
model, _config, meta = rms_mapper.load_checkpoint(Path({str(CHECKPOINT)!r}))
feats = dict(np.load({str(tmp_path / "features.npz")!r}))
v2a_envelope.estimate_envelope(model, meta, feats, shot="X", duration_s=3.0)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("models."))))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    ran = set(json.loads(proc.stdout.splitlines()[-1]))
    assert ran == {m.__name__ for m in CODE["model"]}, ran ^ {m.__name__ for m in CODE["model"]}


def test_a_checkpoint_of_another_input_layout_is_refused_before_the_pass(tmp_path: Path) -> None:
    """A network built for more (or fewer) inputs per step than models.v2a_inputs makes fails
    every shot; check_checkpoint says so once, naming the file and what to do."""
    from tasks.envelope import CHECKPOINT, check_checkpoint

    assert check_checkpoint(CHECKPOINT) == CHECKPOINT
    config = get_config("tiny", in_dim=INPUT_DIM + CONTACT_DIM + 8)  # e.g. a wider block D
    other = tmp_path / "wider.safetensors"
    save_checkpoint(build(config), config, other, {})
    with pytest.raises(ValueError, match=r"wider.safetensors takes 773 inputs per step, but this "
                       r"foleyflow builds 765 .*`foley train envelope`"):
        check_checkpoint(other)


def test_the_curve_holds_its_last_level_when_the_features_end_before_the_shot(
        scenes: dict[str, dict[str, np.ndarray]], shipped: tuple[Any, dict[str, Any]]) -> None:
    """A shot a few frames longer than its features (a proxy a frame short): the tail of the
    100 Hz curve holds the last predicted level instead of dropping to silence."""
    from models import v2a_envelope

    model, meta = shipped
    feats = scenes["steps"]
    longer = _duration(feats) + 3 / 24
    env, curve, _probs = v2a_envelope.estimate(model, meta, feats, shot="X", duration_s=longer)
    predicted = resample_curve(curve, RATE_HZ, 100)
    assert len(predicted) < len(env["curve"]) == round(longer * 100)
    last = round(float(predicted[-1]), 5)
    assert last > 0 and env["curve"][len(predicted):] == [last] * (len(env["curve"]) -
                                                                    len(predicted))


def test_a_contact_timed_before_the_shot_is_not_an_event(
        scenes: dict[str, dict[str, np.ndarray]], shipped: tuple[Any, dict[str, Any]]) -> None:
    """A timing correction (`--timing-correction` checkpoints) that moves the first bounce
    before the shot's first frame drops it, as the baseline drops contacts outside the shot;
    the envelope stays valid."""
    from models import motion_baseline, v2a_envelope
    from tasks.decisions import validate_envelope

    model, meta = shipped
    feats = scenes["bounce"]
    d = _duration(feats)
    first = min(e["t"] for e in motion_baseline.estimate_envelope(
        feats, shot="X", duration_s=d)["events"] if e["kind"] == "impact")
    lag = -(first + 0.02) * 24.0  # frames: the first impact lands 20 ms before the shot
    keep_all = _with_selection(meta, thresholds=[[0.0, 1.01]] * 3, timing={
        "lags_frames": [[1, "impact", lag]], "band_edges": [20.0, 40.0]})
    env = v2a_envelope.estimate_envelope(model, keep_all, feats, shot="X", duration_s=d)
    validate_envelope(env, where="model envelope")
    assert env["events"] and all(e["t"] >= 0.0 for e in env["events"])


def test_an_untracked_onset_on_the_walkers_rhythm_is_a_footfall(
        scenes: dict[str, dict[str, np.ndarray]], shipped: tuple[Any, dict[str, Any]]) -> None:
    """An onset the tracker missed takes the kind `step` where it falls on the rhythm of the
    shot's tracked footfalls (a footfall the tracker lost), else `impact`."""
    from models import motion_baseline, v2a_envelope
    from models.v2a_envelope import untracked_kind

    steps = [{"t": t, "kind": "step"} for t in (1.0, 1.5, 2.0, 3.0)]  # the one at 2.5 lost
    assert untracked_kind(2.5, steps) == "step"
    assert untracked_kind(0.52, steps) == "step"   # a stride before the first two
    assert untracked_kind(2.75, steps) == "impact"  # off the beat
    assert untracked_kind(2.5, [{**c, "kind": "impact"} for c in steps]) == "impact"
    assert untracked_kind(2.5, steps[:1]) == "impact"  # one footfall is no rhythm

    model, meta = shipped
    feats = scenes["steps"]
    d = _duration(feats)
    base = motion_baseline.estimate_envelope(feats, shot="X", duration_s=d, motion=True)
    assert [e["kind"] for e in base["events"]] == ["step"] * 5
    lost = base["events"][2]  # the tracker loses the third footfall
    seen = {**base, "events": [e for e in base["events"] if e is not lost]}
    env = v2a_envelope.estimate(model, meta, feats, shot="X", duration_s=d, base=seen)[0]
    [heard] = [e for e in env["events"] if abs(e["t"] - lost["t"]) <= 0.05]
    assert heard["kind"] == "step" and heard["t"] != lost["t"]  # the head's own peak
