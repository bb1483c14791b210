"""`foley eval envelope DATA`: the RMS-Mapper and the motion baseline, side by side.

For every clip of the chosen split (default: the held-out one, which training never reads)
both estimators predict an envelope from the clip's features; both are scored against the
targets of the clip's own sound (`models.rms_targets`, the same function training uses) with
`models.envelope_metrics`: E-L1 (T-Foley and Video-Foley definitions), acc@1/5/10 on the 64
µ-law classes, onset precision / recall / F1 at ±25 / ±50 / ±100 ms and the median / 90th
percentile onset error. True onsets are the clip's own event list (procedural data: the
physical contact times) or, for clips cut from real reels, the onsets of their sound track
(`models.audio_env.detect_onsets`).

The baseline's curve is at 100 Hz (the envelope contract); it is resampled to the targets'
125 Hz. Inference speed of the model (features excluded: they are shared with the baseline and
reported by `foley bench`) is measured on one thread and reported as × real time; it includes
the motion tracker the model's envelope takes positions and contact times from.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models import envelope_metrics as em
from models import motion_baseline, rms_targets, v2a_envelope
from models import rms_mapper as mapper

ESTIMATORS = ("model", "baseline")


def evaluate(data: Path, checkpoint: Path, *, split: str = "heldout", threads: int = 1,
             log: Any = print) -> dict[str, Any]:
    import torch

    from tasks.dataset import iter_clips

    torch.set_num_threads(threads)
    model, config, meta = mapper.load_checkpoint(checkpoint)
    sums: dict[str, dict[str, list[float]]] = {k: {} for k in ESTIMATORS}
    onsets = {k: None for k in ESTIMATORS}
    infer_s = audio_s = 0.0
    n = 0
    from flows.train import is_validation

    clips = iter_clips(data, split="train" if split == "val" else split)
    for clip in clips:
        if split == "val" and not is_validation(clip.name):
            continue  # "val": the validation clips of the train split (training never fits them)
        n += 1
        rms = rms_targets.rms_target(clip.audio16k, rms_targets.SR)
        true_cls = rms_targets.mu_encode(rms)
        true_onsets = [float(e["t"]) for e in clip.onsets]
        duration = float(clip.features["n_frames"]) / float(clip.features["fps"])
        audio_s += duration
        t0 = time.perf_counter()  # the model's envelope needs the tracker: both are timed
        base = motion_baseline.estimate_envelope(clip.features, shot=clip.name,
                                                 duration_s=duration, motion=True)
        env, curve, probs = v2a_envelope.estimate(model, meta, clip.features, shot=clip.name,
                                                  duration_s=duration, base=base)
        infer_s += time.perf_counter() - t0
        events = env["events"]
        base_curve = rms_targets.resample_curve(np.asarray(base["curve"], np.float64),
                                                base["rate_hz"], rms_targets.RATE_HZ)
        preds = {
            "model": (curve, np.argmax(probs, axis=1), [e["t"] for e in events]),
            "baseline": (base_curve, rms_targets.mu_encode(base_curve),
                         [e["t"] for e in base["events"]]),
        }
        for name, (c, cls, ons) in preds.items():
            row = sums[name]
            row.setdefault("e_l1_tfoley", []).append(em.e_l1_tfoley(c, rms))
            row.setdefault("e_l1_videofoley", []).append(em.e_l1_videofoley(c, rms))
            for k in (1, 5, 10):
                row.setdefault(f"acc@{k}", []).append(em.acc_at_k(cls, true_cls, k))
            counts = em.OnsetCounts.of(ons, true_onsets)
            onsets[name] = counts if onsets[name] is None else onsets[name] + counts
    if n == 0:
        raise ValueError(f"{data}: no clips of split {split!r}")
    result: dict[str, Any] = {"split": split, "clips": n, "audio_s": round(audio_s, 1),
                              "checkpoint": str(checkpoint), "preset": config.preset}
    for name in ESTIMATORS:
        scores = {k: float(np.mean(v)) for k, v in sums[name].items()}
        scores |= em.onset_scores(onsets[name])
        result[name] = scores
    result["model_inference_x_realtime"] = round(audio_s / infer_s, 1) if infer_s else None
    result["model_wins_every_metric"] = wins(result["model"], result["baseline"])
    log(format_table(result))
    return result


LOWER_IS_BETTER = ("e_l1", "onset_error")


def wins(model: dict[str, float], baseline: dict[str, float]) -> bool:
    for k, v in model.items():
        b = baseline[k]
        if any(k.startswith(p) for p in LOWER_IS_BETTER):
            if not v < b:
                return False
        elif not v > b and not (v == b == 1.0):
            return False
    return True


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['clips']} clips ({result['audio_s']} s) of split {result['split']!r}",
             f"{'metric':<26}{'model':>10}{'baseline':>10}"]
    for k in result["model"]:
        lines.append(f"{k:<26}{result['model'][k]:>10.4f}{result['baseline'][k]:>10.4f}")
    lines.append(f"model inference: {result['model_inference_x_realtime']}× real time "
                 "(one thread, features excluded)")
    return "\n".join(lines)
