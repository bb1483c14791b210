"""Visual features of a shot proxy, per frame and per frame pair, computed streaming.

Dense optical flow is OpenCV DIS, preset ULTRAFAST (no variational refinement, which
blurs small objects into the background) refined down to full proxy resolution (finest
scale 0: at the preset's default, a quarter of 320 px, an object ~20 px across is smoothed
away), warm-started from the previous pair's flow carried forward to the current frame's grid
(each pixel's flow moved to where the pixel went, constant velocity): without it, an object
moving more than about its own diameter per frame is lost at the coarse pyramid levels, and
the previous flow as it stands has that object's motion where it was, not where it is now
(a fast fall at 15 fps then reads as a bounce one pair early). The warm start alone
keeps a bouncing object's old direction on some backgrounds, so both flows are computed
and fused per pixel by warping error (7×7 mean |I0(x) − I1(x + flow)|). Only two decoded
frames (and one flow field) are in memory at a time.

Keys (all float32; N = frames, P = N - 1 frame pairs; pair k is frame k → k + 1 and
describes the interval [k/fps, (k+1)/fps], defined on frame k's pixel grid):

| key | shape | meaning |
|---|---|---|
| fps, n_frames | () | proxy frame rate, frame count |
| size | (2,) | proxy width, height in pixels |
| flow_grid | (P, 9, 16, 2) | mean flow (dx, dy) per cell, pixels/frame ÷ width |
| global_motion | (P, 2) | median flow (camera motion), pixels/frame ÷ width |
| residual_energy | (P,) | mean |flow − global| over the frame, pixels/frame ÷ width |
| moving_fraction | (P,) | fraction of pixels in the moving mask |
| regions | (P, 8, 10) | up to 8 moving regions, largest first, zero-padded; fields below |
| mean_rgb | (N, 3) | mean R, G, B in [0, 1] |
| luma_hist | (N, 16) | luma histogram, sums to 1 |
| thumb | (N, 8, 8) | gray thumbnail in [0, 1] |
| sharpness | (N,) | variance of the Laplacian of gray (intensities in [0, 1]) |

Region fields (`REGION_FIELDS`): valid (1/0); x, y centroid on frame k in picture units
(÷ width, ÷ height); area (fraction of the frame); vx, vy the region's median residual flow
over its core (pixels above half its 95th-percentile speed) in picture units per frame (÷ width,
÷ height, so x + vx + gx is where the region's centre is on frame k + 1, with the camera's
motion gx = global_motion[k, 0] and gy = global_motion[k, 1] · width / height); x0, y0, x1,
y1 its bounding box in picture units. A region is a connected
component of the mask |flow − global| > max(0.5 px, 4 × median residual), opened with a
3×3 kernel, at least 0.1 % of the frame.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tasks.media import MediaError, iter_frames

GRID = (9, 16)
MAX_REGIONS = 8
REGION_FIELDS = ("valid", "x", "y", "area", "vx", "vy", "x0", "y0", "x1", "y1")
MIN_RESIDUAL_PX = 0.5
MIN_AREA = 0.001
HIST_BINS = 16
THUMB = 8
KEYS = ("fps", "n_frames", "size", "flow_grid", "global_motion", "residual_energy",
        "moving_fraction", "regions", "mean_rgb", "luma_hist", "thumb", "sharpness")


def make_flow() -> cv2.DISOpticalFlow:
    """The DIS configuration every feature file is computed with."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    dis.setFinestScale(0)
    return dis


def _appearance(rgb: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean_rgb = rgb.reshape(-1, 3).mean(axis=0) / 255.0
    hist = np.bincount(gray.ravel() >> 4, minlength=HIST_BINS).astype(np.float64)
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA) / 255.0
    sharp = float(cv2.Laplacian(gray.astype(np.float32) / 255.0, cv2.CV_32F).var())
    return mean_rgb, hist / hist.sum(), thumb, sharp


def _regions(residual: np.ndarray, mag: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fixed-shape (MAX_REGIONS, len(REGION_FIELDS)) table of the mask's components."""
    h, w = mask.shape
    out = np.zeros((MAX_REGIONS, len(REGION_FIELDS)), np.float32)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= MIN_AREA * h * w]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    for row, i in enumerate(keep[:MAX_REGIONS]):
        x, y, bw, bh, area = stats[i]
        sub = labels[y:y + bh, x:x + bw] == i
        speeds = mag[y:y + bh, x:x + bw][sub]
        core = speeds >= 0.5 * np.percentile(speeds, 95)
        v = np.median(residual[y:y + bh, x:x + bw][sub][core], axis=0)
        cx, cy = centroids[i]
        out[row] = (1.0, (cx + 0.5) / w, (cy + 0.5) / h, area / (h * w), v[0] / w, v[1] / h,
                    x / w, y / h, (x + bw) / w, (y + bh) / h)
    return out


def _warp_error(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Local (7×7) mean |prev(x) − cur(x + flow(x))|: how well a flow explains the pair."""
    h, w = prev.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(cur, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return cv2.blur(cv2.absdiff(warped, prev).astype(np.float32), (7, 7))


def _fuse(prev: np.ndarray, cur: np.ndarray, cold: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Per pixel, the flow (from scratch or warm-started) that better explains the pair."""
    better = _warp_error(prev, cur, warm) < _warp_error(prev, cur, cold)
    return np.where(better[..., None], warm, cold)


def _propagate(flow: np.ndarray) -> np.ndarray:
    """The previous pair's flow carried to the next frame's grid (constant velocity).

    The previous flow lives on the previous frame's grid: an object that moves more than its
    own size per frame is no longer where its flow is, so used as it stands the warm start
    holds background motion where the object now is. Each pixel's flow is splatted (nearest)
    to where that pixel went; where two land on one pixel the larger residual motion (the
    moving object in front) wins; pixels nobody lands on (just uncovered) get the median.
    """
    h, w = flow.shape[:2]
    glob = np.median(flow.reshape(-1, 2), axis=0)
    out = np.empty_like(flow)
    out[:] = glob
    gy, gx = np.mgrid[0:h, 0:w]
    tx = np.rint(gx + flow[..., 0]).astype(np.int64)
    ty = np.rint(gy + flow[..., 1]).astype(np.int64)
    ok = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    order = np.argsort(np.linalg.norm(flow - glob, axis=2)[ok], kind="stable")
    out[ty[ok][order], tx[ok][order]] = flow[ok][order]
    return out


def _pair(dis: cv2.DISOpticalFlow, prev: np.ndarray, cur: np.ndarray,
          init: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flow features of one frame pair (gray uint8 frames), and the flow itself."""
    h, w = prev.shape
    flow = dis.calc(prev, cur, None)                                   # (H, W, 2) px
    if init is not None:
        flow = _fuse(prev, cur, flow, dis.calc(prev, cur, _propagate(init)))
    glob = np.median(flow.reshape(-1, 2), axis=0)
    residual = flow - glob
    mag = np.linalg.norm(residual, axis=2)
    thr = max(MIN_RESIDUAL_PX, 4.0 * float(np.median(mag)))
    mask = cv2.morphologyEx((mag > thr).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    grid = cv2.resize(flow, (GRID[1], GRID[0]), interpolation=cv2.INTER_AREA) / w  # (9, 16, 2)
    return {"flow_grid": grid, "global_motion": glob / w, "residual_energy": mag.mean() / w,
            "moving_fraction": mask.mean(), "regions": _regions(residual, mag, mask > 0)}, flow


def compute_features(proxy_path: Path, fps: float) -> dict[str, np.ndarray]:
    """Stream the proxy once and return the feature dict documented above."""
    dis = make_flow()
    per_frame: dict[str, list] = {"mean_rgb": [], "luma_hist": [], "thumb": [], "sharpness": []}
    per_pair: dict[str, list] = {k: [] for k in ("flow_grid", "global_motion", "residual_energy",
                                                 "moving_fraction", "regions")}
    prev: np.ndarray | None = None
    flow: np.ndarray | None = None
    size = (0, 0)
    for rgb in iter_frames(proxy_path):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        size = (gray.shape[1], gray.shape[0])
        for key, value in zip(per_frame, _appearance(rgb, gray)):
            per_frame[key].append(value)
        if prev is not None:
            pair, flow = _pair(dis, prev, gray, flow)
            for key, value in pair.items():
                per_pair[key].append(value)
        prev = gray
    n = len(per_frame["sharpness"])
    if n == 0:
        raise MediaError(f"{proxy_path}: no frames decoded")
    empty = {"flow_grid": (0, *GRID, 2), "global_motion": (0, 2), "residual_energy": (0,),
             "moving_fraction": (0,), "regions": (0, MAX_REGIONS, len(REGION_FIELDS))}
    feats = {"fps": np.float32(fps), "n_frames": np.float32(n), "size": np.float32(size)}
    for key, values in {**per_frame, **per_pair}.items():
        feats[key] = np.asarray(values, np.float32) if values else np.zeros(empty[key], np.float32)
    return {k: np.asarray(v, np.float32) for k, v in feats.items()}


def save_features(feats: dict[str, np.ndarray], path: Path) -> None:
    """Write features to a compressed .npz (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **feats)
    tmp.replace(path)


def load_features(path: Path) -> dict[str, np.ndarray]:
    """Read features written by `save_features`; ValueError naming the file if keys are missing."""
    with np.load(Path(path)) as data:
        feats = {k: data[k] for k in data.files}
    missing = [k for k in KEYS if k not in feats]
    if missing:
        raise ValueError(f"{path}: not a foleyflow feature file (missing {', '.join(missing)})")
    return feats
