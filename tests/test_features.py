"""Per-frame and per-pair features of real proxies of rendered scenes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.scenes import SceneSpec, render_scene
from tasks.features import GRID, KEYS, MAX_REGIONS, REGION_FIELDS, compute_features, load_features, save_features
from tasks.media import make_proxy

FPS = 24.0


def _features(directory: Path, name: str, **spec: object) -> dict[str, np.ndarray]:
    truth = render_scene(SceneSpec(fps=FPS, duration_s=2.0, **spec), directory / f"{name}.mp4")
    make_proxy(directory / f"{name}.mp4", 0.0, truth.duration_s, FPS, directory / f"{name}_proxy.mp4")
    return compute_features(directory / f"{name}_proxy.mp4", FPS)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    d = tmp_path_factory.mktemp("features")
    return {
        "static": _features(d, "static", kind="static", noise=0.02, flicker=0.03),
        "pan": _features(d, "pan", kind="static", pan=0.15, noise=0.01),
        "bounce": _features(d, "bounce", kind="bounce"),
    }


def test_keys_shapes_and_dtypes(scenes: dict[str, dict[str, np.ndarray]]) -> None:
    f = scenes["bounce"]
    n, p = 48, 47
    assert set(f) == set(KEYS)
    expected = {"fps": (), "n_frames": (), "size": (2,), "flow_grid": (p, *GRID, 2), "global_motion": (p, 2),
                "residual_energy": (p,), "moving_fraction": (p,), "regions": (p, MAX_REGIONS, len(REGION_FIELDS)),
                "mean_rgb": (n, 3), "luma_hist": (n, 16), "thumb": (n, 8, 8), "sharpness": (n,)}
    for key, shape in expected.items():
        assert f[key].shape == shape, key
        assert f[key].dtype == np.float32, key
    assert float(f["fps"]) == FPS and int(f["n_frames"]) == n
    assert tuple(f["size"]) == (320, 180)
    assert np.allclose(f["luma_hist"].sum(axis=1), 1.0)
    assert 0 <= f["thumb"].min() and f["thumb"].max() <= 1


def test_static_scene_has_no_residual_motion(scenes: dict[str, dict[str, np.ndarray]]) -> None:
    f = scenes["static"]
    assert float(f["residual_energy"].max()) < 0.001, "noise and flicker read as motion"
    assert float(np.abs(f["global_motion"]).max()) < 0.001
    assert not f["regions"][..., 0].any()


def test_pan_is_global_motion_not_residual(scenes: dict[str, dict[str, np.ndarray]]) -> None:
    f = scenes["pan"]
    expected = -0.15 / FPS        # the camera moves right 0.15 widths/s: the picture moves left
    gx = f["global_motion"][:, 0]
    assert np.allclose(gx, expected, atol=0.0005), f"global dx {gx.mean():.5f} vs {expected:.5f}"
    assert np.abs(f["global_motion"][:, 1]).max() < 0.0005
    assert float(f["residual_energy"].mean()) < 0.1 * abs(expected)
    assert np.allclose(f["flow_grid"][..., 0].mean(axis=(1, 2)), expected, atol=0.001)


def test_bounce_gives_one_region_moving_down_then_up(scenes: dict[str, dict[str, np.ndarray]]) -> None:
    regions = scenes["bounce"]["regions"]
    valid = regions[..., 0] > 0
    assert valid.any(axis=1).sum() > 20
    vy = regions[valid.any(axis=1), 0, REGION_FIELDS.index("vy")]
    assert vy.max() > 0.05 and vy.min() < -0.02             # falls, then bounces up


def test_save_and_load_round_trip(scenes: dict[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    save_features(scenes["bounce"], tmp_path / "f.npz")
    back = load_features(tmp_path / "f.npz")
    assert all(np.array_equal(back[k], scenes["bounce"][k]) for k in KEYS)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        load_features(tmp_path / "other.npz")
