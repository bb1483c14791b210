"""Where the motion baseline's curve sits on the RMS scale (`motion_baseline.RMS_AT_FULL_STRENGTH`).

The envelope contract's `curve` is linear RMS, and the sampler plays the event layer at the
curve's level (`models.sampler`: the layer's peaks meet the curve's peaks at the events). The
baseline's transients are built from its strengths, a 0–1 score of speed and size, so without a
scale they ask for RMS up to 1.0 — 20–25 dB over any recording's level — and the stems go into
the −1 dBFS limiter. This script reads, on clips the held-out split never holds (a train split),
how loud the sound is at each tracked contact against the baseline's unscaled curve there, and
prints the scale three ways:

1. `event_peak` (the one shipped): the median over tracked contacts of the true RMS's peak
   within 30 ms before to 80 ms after the contact (`models.rms_targets`, the curve the model
   learns) over the unscaled curve's peak in the same window — what the sampler's leveling
   reads, so the delivered level follows it;
2. `e_l1`: the gain (no floor) with the least T-Foley E-L1 over the clips;
3. the model's own ratio at the same contacts (its 125 Hz curve over the truth), for the level
   difference between the two estimators that is left.

Run (about 2 min on one core):
    .venv/bin/foley dataset procedural data/v2a_lvl --clips 80 --split train --seed 0  # ~4 min
    .venv/bin/python scripts/baseline_level.py data/v2a_lvl
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models import motion_baseline, rms_targets, v2a_envelope
from models.envelope_metrics import fit_level
from tasks.dataset import clip_entries, read_clip
from tasks.envelope import load_checked

BEFORE_S, AFTER_S = 0.03, 0.08


def _peak(curve: np.ndarray, t: float) -> float:
    lo = max(int(np.floor((t - BEFORE_S) * rms_targets.RATE_HZ)), 0)
    hi = min(int(np.ceil((t + AFTER_S) * rms_targets.RATE_HZ)) + 1, len(curve))
    return float(curve[lo:hi].max()) if hi > lo else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--checkpoint", type=Path,
                    default=Path("models/checkpoints/rms_mapper_tiny.safetensors"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    model, _, meta = load_checked(args.checkpoint)
    scale = motion_baseline.RMS_AT_FULL_STRENGTH
    base_ratio: list[float] = []
    model_ratio: list[float] = []
    raws: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for entry in clip_entries(args.data, args.split):
        clip = read_clip(args.data / entry["file"])
        rms = rms_targets.rms_target(clip.audio16k, rms_targets.SR)
        fps = float(clip.features["fps"])
        duration = float(clip.features["n_frames"]) / fps
        base = motion_baseline.estimate_envelope(clip.features, shot=clip.name,
                                                 duration_s=duration, motion=True)
        raw = rms_targets.resample_curve(np.asarray(base["curve"], np.float64) / scale,
                                         base["rate_hz"], rms_targets.RATE_HZ, len(rms))
        _, curve, _ = v2a_envelope.estimate(model, meta, clip.features, shot=clip.name,
                                            duration_s=duration, base=base)
        raws.append(raw)
        truths.append(rms)
        for e in base["events"]:
            b, truth = _peak(raw, e["t"]), _peak(rms, e["t"])
            if b > 0 and truth > 0:
                base_ratio.append(truth / b)
                model_ratio.append(_peak(curve, e["t"]) / truth)
    g_l1, _ = fit_level(raws, truths)  # with a floor; refit without one below
    gains = np.geomspace(g_l1 / 4, g_l1 * 4, 161)
    l1 = [float(np.mean([np.mean(np.abs(g * c - t)) for c, t in zip(raws, truths)]))
          for g in gains]
    out = {"clips": len(raws), "contacts": len(base_ratio),
           "event_peak": round(float(np.median(base_ratio)), 4),
           "event_peak_iqr": [round(float(q), 4) for q in np.percentile(base_ratio, [25, 75])],
           "e_l1": round(float(gains[int(np.argmin(l1))]), 4),
           "model_over_truth_db_at_contacts": round(float(20 * np.log10(np.median(model_ratio))), 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
