"""Which sound of a past reel should the model learn from: its Foley stem or its full mix?
(`foley dataset videos --stems`; models/README.md, "Real footage"; issue 5.)

A studio adapting the model to its show has both: the reels' mixes (Foley with music,
dialogue and effects the picture does not cause) and, usually, their Foley stems. No real
Foley stem is reachable here, so this study makes the two from scenes whose truth is known:
clips of a procedural calibration set (`foley dataset procedural data/cal …`: picture with
physically timed Foley, never trained on) stand for the reels, each clip's own sound for its
Foley stem, and the same sound under a bed cut from a real film's mix (Big Buck Bunny's
soundtrack, `foley dataset videos … --split real`, at one fixed level: the median Foley level
of the clips) for its mix. Both arms read their truth the way `foley dataset videos` does —
the onsets detected in the sound they are given (`models.audio_env.detect_onsets`), no
generator truth — and go through the same adaptation as `scripts/real_calibration_study.py`:
the shipped network fine-tuned on the first two thirds of the clips (30 epochs, peak lr 5e-4,
batch 8, seed 0, one thread), its scorer fitted on the last third. Both are then scored on
picture-caused truth: the validation clips of the training set (`--val`, generator onsets),
with the shipped checkpoint and the motion baseline alongside.

Run (13 min on two cores; the arms train one after the other, one thread each):
    .venv/bin/python scripts/stems_vs_mix_study.py data/cal data/bbb --val data/v2a_1000 \
        --work runs/stems_vs_mix
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from flows.evaluate import evaluate
from flows.train import checkpoint_name, train
from models.audio_env import detect_onsets
from tasks import dataset
from tasks.envelope import CHECKPOINT

ROWS = ("onset_f1@50ms", "onset_precision@50ms", "onset_recall@50ms", "onset_recall@100ms",
        "onset_error_median_ms", "e_l1_tfoley")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def bed_source(bed_data: Path) -> np.ndarray:
    """The bed film's windows' sound, end to end in window order (16 kHz mono)."""
    clips = sorted(dataset.iter_clips(bed_data), key=lambda c: (c.meta["source"], c.meta["window"]))
    return np.concatenate([c.audio16k.astype(np.float64) for c in clips])


def build_arms(clips_data: Path, bed_data: Path, work: Path) -> dict[str, dict]:
    """WORK/{stems,mix}/{tune,calibrate}: each clip of `clips_data` (all splits) with its own
    sound (stems) or under the bed (mix), onsets detected in that sound, events dropped (as
    `foley dataset videos` writes them); the first two thirds by name tune, the rest calibrate.
    Returns per arm the detected onsets' agreement with the generator's (F1 at ±50 ms)."""
    from models import envelope_metrics as em

    clips = sorted(dataset.iter_clips(clips_data), key=lambda c: c.name)
    bed = bed_source(bed_data)
    levels = np.array([rms(c.audio16k) for c in clips])
    level = float(np.median(levels[levels > 1e-4]))      # the Foley level of clips that sound
    bed = bed * level / rms(bed)
    rng = np.random.default_rng(0)
    counts = {"stems": em.OnsetCounts({0.05: 0}, 0, 0, []), "mix": em.OnsetCounts({0.05: 0}, 0, 0, [])}
    n_tune = 2 * len(clips) // 3
    for i, clip in enumerate(clips):
        part = "tune" if i < n_tune else "calibrate"
        start = int(rng.integers(0, len(bed) - len(clip.audio16k)))
        sounds = {"stems": clip.audio16k.astype(np.float64),
                  "mix": clip.audio16k + bed[start:start + len(clip.audio16k)]}
        true = [float(o["t"]) for o in clip.onsets]
        for arm, sound in sounds.items():
            onsets = [{"t": float(t)} for t in detect_onsets(sound, dataset.AUDIO_SR)]
            counts[arm] = counts[arm] + em.OnsetCounts.of([o["t"] for o in onsets], true, (0.05,))
            meta = clip.meta | {"kind": "video", "split": "train", "source": f"{clip.name}.{arm}",
                                "seed": -1, "sound_source": f"study:{arm}"}
            dataset.write_clip(work / arm / part / f"{clip.name}.npz", clip.features,
                               sound.astype(np.float32), events=[], sustained=[], onsets=onsets,
                               meta=meta)
    for arm in counts:
        for part in ("tune", "calibrate"):
            dataset.write_index(work / arm / part)
    return {arm: em.onset_scores(c) for arm, c in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", type=Path, help="procedural clips never trained on (data/cal)")
    ap.add_argument("bed", type=Path, help="a real film's windows (foley dataset videos)")
    ap.add_argument("--val", type=Path, required=True, help="the training set (its val clips score)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = ap.parse_args()
    for folder in (args.clips, args.bed, args.val):
        if not (folder / "index.json").is_file():
            raise SystemExit(f"{folder}: no index.json (build it with `foley dataset …`)")
    if args.work.exists():
        shutil.rmtree(args.work)          # a fresh run each time: no resuming into another build
    truth = build_arms(args.clips, args.bed, args.work)
    quiet = {"log": lambda _m: None}
    results = {"shipped": evaluate(args.val, args.checkpoint, split="val", **quiet)}
    runs = {}
    for arm in ("stems", "mix"):
        runs[arm] = train(args.work / arm / "tune", args.work / arm / "fine_tuned", epochs=30,
                          lr=5e-4, batch_size=8, seed=0, threads=1,
                          calibration=args.work / arm / "calibrate", init=args.checkpoint, **quiet)
        results[arm] = evaluate(args.val, args.work / arm / "fine_tuned" / checkpoint_name("tiny"),
                                split="val", **quiet)
    (args.work / "results.json").write_text(json.dumps(
        {"detected_truth": truth, "fine_tuning": {a: {k: v for k, v in s.items()
                                                      if k not in ("history", "clips_seen")}
                                                  for a, s in runs.items()}, **results}, indent=1))
    print("truth detected in the sound each arm learns from, against the generator's onsets "
          "(F1 / P / R at ±50 ms):")
    for arm, t in truth.items():
        print(f"  {arm}: {t['onset_f1@50ms']:.3f} / {t['onset_precision@50ms']:.3f} / "
              f"{t['onset_recall@50ms']:.3f}")
    print(f"\nscored on the {results['shipped']['clips']} validation clips of {args.val} "
          "(generator onsets):\n")
    print("| metric | shipped | fine-tuned on stems | fine-tuned on mixes | motion baseline |")
    print("|---|---|---|---|---|")
    for k in ROWS:
        cells = [f"{results[a]['model'][k]:.4f}" for a in ("shipped", "stems", "mix")]
        print(f"| {k} | {' | '.join(cells)} | {results['shipped']['baseline'][k]:.4f} |")
    chance = [results[a]["onset_chance"]["model"]["onset_f1@50ms"] for a in ("shipped", "stems", "mix")]
    print(f"| onset_f1@50ms out of sync | {' | '.join(f'{c:.4f}' for c in chance)} | "
          f"{results['shipped']['onset_chance']['baseline']['onset_f1@50ms']:.4f} |")
    print(f"\n(results in {args.work / 'results.json'})")


if __name__ == "__main__":
    main()
