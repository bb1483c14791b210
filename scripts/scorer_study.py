"""What the contact scorer's inputs and threshold rule are worth (models/rms_mapper_rounds.md,
round 6; issue 5). For one checkpoint, the scorer is fitted on the calibration set four ways —
the round-5 inputs (`BASE_CONTACT_FEATURES`, `BASE_PEAK_FEATURES`) or with the tracker's
motion descriptors and the rhythm of the contacts added (`CONTACT_FEATURES`, `PEAK_FEATURES`),
each with thresholds for the best out-of-fold F1 or for the fewest misses within one standard
error of it (what `foley train calibrate` ships) — and each fit is read on:

1. the calibration set, out of fold (what the choice is made on);
2. the validation clips of a training-distribution set (`--val`, its train split's
   validation clips: the network never trained on them);
3. the held-out split (`--heldout`): reported, never chosen on.

Run (about 6 min on one core; the checkpoint's own selection is not used):
    .venv/bin/python scripts/scorer_study.py models/checkpoints/rms_mapper_tiny.safetensors \\
        data/cal --val data/v2a_1000 --heldout data/v2a
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flows.train import is_validation
from models import contact_scorer as cs
from models import motion_baseline, v2a_envelope
from models import rms_mapper as mapper
from models.envelope_metrics import OnsetCounts, combine_onsets, onset_scores
from tasks.dataset import clip_entries, read_clip

Clips = list[tuple[cs.Candidates, list[float]]]


def candidates(model: object, data: Path, split: str, offset_s: float,
               only_validation: bool = False) -> Clips:
    """Every clip's candidates (the model's outputs, the tracker's contacts with motion)."""
    out = []
    for entry in clip_entries(data, split):
        if only_validation and not is_validation(entry["name"]):
            continue
        clip = read_clip(data / entry["file"])
        fps = float(clip.features["fps"])
        duration = float(clip.features["n_frames"]) / fps
        tracked = motion_baseline.estimate_envelope(clip.features, shot=clip.name,
                                                    duration_s=duration, motion=True)["events"]
        _probs, curve, _conf, onset = v2a_envelope.model_outputs(model, clip.features, tracked)
        out.append((cs.candidates(onset, curve, tracked, fps, offset_s),
                    combine_onsets([float(e["t"]) for e in clip.onsets])))
    return out


def read(selection: cs.Selection, clips: Clips) -> str:
    total = None
    for c, truth in clips:
        k = OnsetCounts.of([e["t"] for e in selection.events(c)], truth)
        total = k if total is None else total + k
    if total is None:
        return "—"
    s = onset_scores(total)
    return (f"{s['onset_f1@50ms']:.3f} ({s['onset_precision@50ms']:.3f} / "
            f"{s['onset_recall@50ms']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("calibration", type=Path)
    ap.add_argument("--val", type=Path, help="a training-distribution set: its validation clips")
    ap.add_argument("--heldout", type=Path, help="a set with a heldout split")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _config, meta = mapper.load_checkpoint(a.checkpoint)
    offset = float(meta.get("onset_offset_s", 0.0))
    cal = candidates(model, a.calibration, "train", offset)
    val = candidates(model, a.val, "train", offset, only_validation=True) if a.val else []
    held = candidates(model, a.heldout, "heldout", offset) if a.heldout else []
    print(f"{len(cal)} calibration clips, {len(val)} validation, {len(held)} held out\n")
    print("| scorer inputs | thresholds | calibration, out of fold | validation | held out |")
    print("|---|---|---|---|---|")
    for name, features in (("round 5", (cs.BASE_CONTACT_FEATURES, cs.BASE_PEAK_FEATURES)),
                           ("+ motion, rhythm", (cs.CONTACT_FEATURES, cs.PEAK_FEATURES))):
        for rule, prefer in (("best F1", False), ("fewest misses within 1 SE", True)):
            selection, report = cs.fit_selection(cal, offset, prefer_recall=prefer,
                                                 contact_features=features[0],
                                                 peak_features=features[1])
            oof = (f"{report['oof_onset_f1']:.3f} ({report['oof_onset_precision']:.3f} / "
                   f"{report['oof_onset_recall']:.3f})")
            print(f"| {name} | {rule} | {oof} | {read(selection, val)} | "
                  f"{read(selection, held)} |")
    print("\nF1 @ ±50 ms (precision / recall)")


if __name__ == "__main__":
    main()
