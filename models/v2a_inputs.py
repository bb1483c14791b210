"""The RMS-Mapper's per-step inputs, built from a shot's visual features (`tasks.features`).

Input steps come at a fixed IN_RATE_HZ = 31.25 Hz (a quarter of the targets' 125 Hz) whatever
the picture's frame rate, so one model serves 12, 24, 29.97 and 60 fps. Step i stands for
target frames 4i … 4i + 3 (the model upsamples by 4, nearest) and is sampled at their centre,
t_i = (4i + 1.5) / 125 s; a clip of d seconds has n_steps(d) = ceil(d · 31.25) steps.

Time placement: pair k (frame k → k + 1) describes [k / fps, (k + 1) / fps] and sits at its
midpoint (k + ½) / fps; frame k sits at k / fps. Both are linearly interpolated to t_i (the
first and last value are held beyond the ends). Motion is converted from per frame to per
second (× fps), so a given motion gives the same numbers at any frame rate.

Change cues (block C) are the interpolated value at t_i + h minus the one at t_i − h, h half
a step (16 ms): the change within the step's own window. A contact is a jump in velocity;
as a change per step it has the same size at every frame rate and the changes of
consecutive steps add up to the whole jump, where a per-frame acceleration grows with fps
and, sampled at 31.25 Hz, can fall between two steps of a 60 fps picture. For the same
reason the thumbnail difference is taken over the step (16 ms either side), not frame to
frame.

Layout of the INPUT_DIM = 757 values of a step (widths = picture widths, heights = heights):

| index | block | what |
|---|---|---|
| 0–287 | A motion (pairs) | flow_grid (9 rows × 16 columns × dx, dy), widths/s |
| 288–289 | A | global_motion (camera) dx, dy, widths/s |
| 290 | A | residual_energy, widths/s |
| 291 | A | moving_fraction |
| 292–311 | A | the 2 largest regions × REGION_FIELDS (valid, x, y, area, vx widths/s, vy heights/s, x0, y0, x1, y1) |
| 312–313 | A | the 2 largest regions' speed, widths/s |
| 314–316 | B appearance (frames) | mean_rgb |
| 317–332 | B | luma_hist |
| 333–396 | B | thumb (8 × 8, row-major) |
| 397 | B | sharpness |
| 398–685 | C change over the step | flow_grid, widths/s |
| 686–687 | C | global_motion, widths/s |
| 688 | C | residual_energy, widths/s |
| 689–692 | C | the 2 largest regions' velocity (vx widths/s, vy heights/s) |
| 693–756 | C | thumb |

Regions are not tracked here: slot 0 is whichever region is largest in each pair.

Block D (CONTACT_DIM = 8, appended by `contact_inputs` for models trained with
`MapperConfig.contact_inputs`): the motion tracker's contacts (`models.motion_baseline`), each
a Gaussian bump of σ half a step at its sub-frame time; a step holds the row of the contact
whose bump is largest there:

| index | what |
|---|---|
| 757 | bump |
| 758–760 | bump × the tracker's confidence, × strength, × y (0 top, 1 bottom: a bounce on the floor vs a turn in mid-air) |
| 761–763 | bump × kind (impact, step, scrape) |
| 764 | bump × (contact time − step time) in steps: where within the step it is |

The tracker finds nearly every contact a picture shows (and many it does not sound: a turn
in flight, a silent mover); the onset head then decides which of them sound, seeing when and
where each is to a fraction of a step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.rms_targets import RATE_HZ

UPSAMPLE = 4
IN_RATE_HZ = RATE_HZ / UPSAMPLE  # 31.25
N_REGIONS = 2
_REGION_VX, _REGION_VY = 4, 5  # indices in tasks.features.REGION_FIELDS
_MOTION_DIM = 288 + 2 + 1 + 1 + 10 * N_REGIONS + N_REGIONS  # block A: 314
_CHANGING_DIM = 288 + 2 + 1 + 2 * N_REGIONS  # block C without the thumbnail: 295
INPUT_DIM = 757
CONTACT_KINDS = ("impact", "step", "scrape")
CONTACT_DIM = 5 + len(CONTACT_KINDS)


def input_dim(*, contacts: bool) -> int:
    """Values per step `model_inputs` builds: INPUT_DIM, plus block D with the contacts."""
    return INPUT_DIM + (CONTACT_DIM if contacts else 0)


def n_steps(duration_s: float) -> int:
    """Input steps for a clip of `duration_s` seconds: ceil(d · 31.25) (model output: 4×)."""
    return max(1, math.ceil(round(duration_s * IN_RATE_HZ, 6)))


def step_times(n: int) -> np.ndarray:
    """Seconds of input steps 0 … n − 1: the centre of the 4 target frames each stands for."""
    return (UPSAMPLE * np.arange(n) + (UPSAMPLE - 1) / 2) / RATE_HZ


def _interp(values: np.ndarray, t0: float, dt: float, times: np.ndarray) -> np.ndarray:
    """Rows of `values` (sampled at t0 + k · dt) linearly interpolated at `times`, ends held."""
    n = len(values)
    flat = values.reshape(n, -1).astype(np.float64)
    pos = np.clip((times - t0) / dt, 0.0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0)[:, None]
    return (1.0 - w) * flat[i0] + w * flat[i1]  # (len(times), prod(values.shape[1:]))


def _pair_motion(feats: dict[str, np.ndarray], fps: float, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Block A per pair (P, 314), and the velocities whose change goes into block C (P, 295)."""
    p = len(feats["flow_grid"])
    flow = feats["flow_grid"].reshape(p, -1) * fps                     # (P, 288) widths/s
    glob = feats["global_motion"].reshape(p, 2) * fps                  # (P, 2)
    energy = feats["residual_energy"].reshape(p, 1) * fps              # (P, 1)
    moving = feats["moving_fraction"].reshape(p, 1)                    # (P, 1)
    regions = np.array(feats["regions"][:, :N_REGIONS], dtype=np.float64)  # (P, 2, 10)
    regions[..., [_REGION_VX, _REGION_VY]] *= fps
    velocity = regions[..., [_REGION_VX, _REGION_VY]]                  # (P, 2, 2)
    speed = np.hypot(velocity[..., 0], velocity[..., 1] / aspect)      # (P, 2) widths/s
    block_a = np.concatenate([flow, glob, energy, moving, regions.reshape(p, -1), speed], axis=1)
    changing = np.concatenate([flow, glob, energy, velocity.reshape(p, -1)], axis=1)
    return block_a, changing


def frame_inputs(feats: dict[str, np.ndarray]) -> np.ndarray:
    """(n_steps(n_frames / fps), INPUT_DIM) float32 model inputs of one shot's features."""
    fps = float(feats["fps"])
    n = int(feats["n_frames"])
    if n < 1 or fps <= 0:
        raise ValueError(f"features with {n} frames at {fps} fps: nothing to build inputs from")
    width, height = (float(v) for v in feats["size"])
    times = step_times(n_steps(n / fps))
    half = 0.5 / IN_RATE_HZ
    dt = 1.0 / fps

    if len(feats["flow_grid"]):
        block_a, changing = _pair_motion(feats, fps, width / height)
        a = _interp(block_a, 0.5 * dt, dt, times)
        moving = _interp(changing, 0.5 * dt, dt, times + half) - _interp(changing, 0.5 * dt, dt, times - half)
    else:  # a one-frame shot has no pairs: no motion
        a = np.zeros((len(times), _MOTION_DIM))
        moving = np.zeros((len(times), _CHANGING_DIM))

    thumb = feats["thumb"].reshape(n, -1)
    appearance = np.concatenate([feats["mean_rgb"].reshape(n, 3), feats["luma_hist"].reshape(n, -1),
                                 thumb, feats["sharpness"].reshape(n, 1)], axis=1)  # (N, 84)
    b = _interp(appearance, 0.0, dt, times)
    thumb_change = _interp(thumb, 0.0, dt, times + half) - _interp(thumb, 0.0, dt, times - half)

    out = np.concatenate([a, b, moving, thumb_change], axis=1)
    assert out.shape[1] == INPUT_DIM, f"{out.shape=}: the layout in the docstring changed"
    return out.astype(np.float32)


def model_inputs(feats: dict[str, np.ndarray], contacts: Sequence[dict] | None = None) -> np.ndarray:
    """`frame_inputs`, with block D appended when `contacts` are given (a model trained with
    `MapperConfig.contact_inputs` needs them; pass None for one without)."""
    x = frame_inputs(feats)
    if contacts is None:
        return x
    return np.concatenate([x, contact_inputs(contacts, len(x))], axis=1)


def contact_inputs(contacts: Sequence[dict], n: int) -> np.ndarray:
    """Block D, (n, CONTACT_DIM) float32, for input steps 0 … n − 1 (see the module docstring);
    `contacts` are envelope events (t, strength, y, kind, confidence)."""
    times = step_times(n)
    out = np.zeros((n, CONTACT_DIM), np.float32)
    sigma = 0.5 / IN_RATE_HZ
    reach = 40 * sigma  # farther, exp(-800) is 0.0 in float64: the bump writes nothing there
    for c in contacts:
        t = float(c["t"])
        lo, hi = np.searchsorted(times, [t - reach, t + reach], side="left")
        near, mine = times[lo:hi + 1], out[lo:hi + 1]  # each contact costs its window only
        bump = np.exp(-0.5 * ((near - t) / sigma) ** 2)
        kinds = [bump * (c.get("kind") == k) for k in CONTACT_KINDS]
        row = np.stack([bump, bump * float(c.get("confidence", 1.0)), bump * float(c["strength"]),
                        bump * float(c["y"]), *kinds, bump * (t - near) * IN_RATE_HZ], axis=1)
        take = bump > mine[:, 0]
        mine[take] = row[take]
    return out


def align(x, length: int, axis: int = 0):
    """`x` cropped, or padded by holding its last frame, to `length` frames along `axis`.

    The model's 4 · n_steps(d) frames cover at least d · 125, while rms_target gives
    floor(d · 125) + 1: prediction → target's T is a crop of up to 3 frames or one held frame.
    In training, pad targets to the model's length instead and mask the padded frames out of
    the loss. Works on numpy arrays and torch tensors alike.
    """
    n = x.shape[axis]
    if n == 0:
        raise ValueError("cannot align an empty sequence")
    idx = np.minimum(np.arange(length), n - 1)
    return x[(slice(None),) * axis + (idx,)]


def input_stats(inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (float32) over all steps of `inputs`."""
    stacked = np.concatenate([np.asarray(x, dtype=np.float64) for x in inputs], axis=0)
    return stacked.mean(axis=0).astype(np.float32), stacked.std(axis=0).astype(np.float32)
