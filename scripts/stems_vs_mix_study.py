"""Which sound of a past reel should the model learn from, its Foley stem or its full mix, and
which onsets of it: `foley dataset videos --stems`, `--onset-rise-db`, `--onset-gap-ms`
(models/README.md, "Real footage"; issue 5).

A studio adapting the model to its show has both: the reels' mixes (Foley with music,
dialogue and effects the picture does not cause) and, usually, their Foley stems. No real
Foley stem is reachable here, so this study makes the two from scenes whose truth is known:
clips of a procedural calibration set (`foley dataset procedural data/cal …`: picture with
physically timed Foley, never trained on) stand for the reels, each clip's own sound for its
Foley stem, and the same sound under a bed cut from a real film's mix (Big Buck Bunny's
soundtrack, `foley dataset videos … --split real`, at one fixed level: the median Foley level
of the clips) for its mix. Every arm reads its truth the way `foley dataset videos` does —
the onsets an `OnsetTruth` finds in the sound it is given, no generator truth — with the
builder's settings (14 dB, 150 ms) or `detect_onsets`' own (6 dB, 50 ms, the builder's
before session 16) — and, as the ceiling no studio has, with the generator's own onsets
("generator": the truth a perfect reading of the sound would give). Each goes through the
same adaptation as `scripts/real_calibration_study.py`: the shipped network fine-tuned on the
first two thirds of the clips (30 epochs, peak lr 5e-4, batch 8, seed 0, one thread), its
scorer fitted on the last third. All are then scored on picture-caused truth: clips with generator onsets that
neither the shipped network nor the arms saw (`--score`, split `--split`), with the shipped
checkpoint and the motion baseline alongside.

Run (session 16: 300 calibration clips, 150 fresh clips scored, six arms two at a time,
about 15 min on two cores):
    .venv/bin/foley dataset procedural data/fresh --clips 150 --split train --seed 400000
    .venv/bin/python scripts/stems_vs_mix_study.py data/cal data/bbb --score data/fresh \
        --split train --work runs/stems_vs_mix
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tasks import dataset
from tasks.envelope import CHECKPOINT

ROWS = ("onset_f1@50ms", "onset_precision@50ms", "onset_recall@50ms", "onset_recall@100ms",
        "onset_error_median_ms", "e_l1_tfoley")
TRUTHS: dict[str, dataset.OnsetTruth | None] = {
    "builder": dataset.OnsetTruth(), "detector": dataset.DETECTOR_TRUTH,
    "generator": None}                 # the clip's own onsets: the ceiling
SOUNDS = ("stems", "mix")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def bed_source(bed_data: Path) -> np.ndarray:
    """The bed film's windows' sound, end to end in window order (16 kHz mono)."""
    clips = sorted(dataset.iter_clips(bed_data), key=lambda c: (c.meta["source"], c.meta["window"]))
    return np.concatenate([c.audio16k.astype(np.float64) for c in clips])


def stems_and_mixes(clips_data: Path, bed_data: Path) -> Iterator[tuple[dataset.Clip, dict]]:
    """Each clip of `clips_data` (all splits, by name) with its two sounds: its own ("stems")
    and the same under a stretch of the bed film's soundtrack set to the clips' median level
    ("mix"; where in the film: default_rng(0), drawn clip by clip)."""
    clips = sorted(dataset.iter_clips(clips_data), key=lambda c: c.name)
    bed = bed_source(bed_data)
    levels = np.array([rms(c.audio16k) for c in clips])
    level = float(np.median(levels[levels > 1e-4]))      # the Foley level of clips that sound
    bed = bed * level / rms(bed)
    rng = np.random.default_rng(0)
    for clip in clips:
        start = int(rng.integers(0, len(bed) - len(clip.audio16k)))
        yield clip, {"stems": clip.audio16k.astype(np.float64),
                     "mix": clip.audio16k + bed[start:start + len(clip.audio16k)]}


def build_arms(clips_data: Path, bed_data: Path, work: Path) -> dict[str, dict]:
    """WORK/<sound>_<truth>/{tune,calibrate}: each clip with its sound, onsets read by the
    truth, events dropped (as `foley dataset videos` writes them); the first two thirds by name
    tune, the rest calibrate. Returns per arm the truth's agreement with the generator's onsets
    (P / R / F1 at ±50 ms)."""
    from models import envelope_metrics as em

    n = len(dataset.clip_entries(clips_data))
    counts = {f"{s}_{t}": em.OnsetCounts({0.05: 0}, 0, 0, []) for s in SOUNDS for t in TRUTHS}
    for i, (clip, sounds) in enumerate(stems_and_mixes(clips_data, bed_data)):
        part = "tune" if i < 2 * n // 3 else "calibrate"
        true = [float(o["t"]) for o in clip.onsets]
        for sound_name, sound in sounds.items():
            for truth_name, truth in TRUTHS.items():
                arm = f"{sound_name}_{truth_name}"
                onsets = truth.detect(sound) if truth else clip.onsets
                found = [o["t"] for o in onsets]
                counts[arm] = counts[arm] + em.OnsetCounts.of(found, true, (0.05,))
                meta = clip.meta | {"kind": "video", "split": "train", "seed": -1,
                                    "source": f"{clip.name}.{sound_name}",
                                    "sound_source": f"study:{sound_name}",
                                    "onset_truth": truth.meta() if truth else "generator"}
                dataset.write_clip(work / arm / part / f"{clip.name}.npz", clip.features,
                                   sound.astype(np.float32), events=[], sustained=[],
                                   onsets=onsets, meta=meta)
    for arm in counts:
        for part in ("tune", "calibrate"):
            dataset.write_index(work / arm / part)
    return {arm: em.onset_scores(c) for arm, c in counts.items()}


def run_arm(arm_dir: Path, checkpoint: Path, score: Path, split: str) -> tuple[dict, dict]:
    """Fine-tune the shipped network on the arm's clips (one thread) and score it."""
    from flows.evaluate import evaluate
    from flows.train import checkpoint_name, train

    quiet = {"log": lambda _m: None}
    summary = train(arm_dir / "tune", arm_dir / "fine_tuned", epochs=30, lr=5e-4, batch_size=8,
                    seed=0, threads=1, calibration=arm_dir / "calibrate", init=checkpoint, **quiet)
    result = evaluate(score, arm_dir / "fine_tuned" / checkpoint_name("tiny"), split=split, **quiet)
    return {k: v for k, v in summary.items() if k not in ("history", "clips_seen")}, result


def main() -> None:
    from flows.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", type=Path, help="procedural clips never trained on (data/cal)")
    ap.add_argument("bed", type=Path, help="a real film's windows (foley dataset videos)")
    ap.add_argument("--score", type=Path, required=True,
                    help="procedural clips to score on (generator onsets), none of them in CLIPS "
                         "nor trained on by the shipped network")
    ap.add_argument("--split", default="val",
                    help="which of SCORE's clips: val (the validation clips of a training set) "
                         "or train (all of a set built for scoring)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--workers", type=int, default=2, help="arms fine-tuned at once")
    args = ap.parse_args()
    for folder in (args.clips, args.bed, args.score):
        if not (folder / "index.json").is_file():
            raise SystemExit(f"{folder}: no index.json (build it with `foley dataset …`)")
    if args.work.exists():
        shutil.rmtree(args.work)          # a fresh run each time: no resuming into another build
    truth = build_arms(args.clips, args.bed, args.work)
    results = {"shipped": evaluate(args.score, args.checkpoint, split=args.split,
                                   log=lambda _m: None)}
    arms = list(truth)
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        done = dict(zip(arms, pool.map(run_arm, [args.work / a for a in arms],
                                       [args.checkpoint] * len(arms), [args.score] * len(arms),
                                       [args.split] * len(arms))))
    results |= {a: r for a, (_s, r) in done.items()}
    (args.work / "results.json").write_text(json.dumps(
        {"detected_truth": truth,
         "truths": {k: t.meta() if t else "generator" for k, t in TRUTHS.items()},
         "fine_tuning": {a: s for a, (s, _r) in done.items()}, **results}, indent=1))
    print("truth read from the sound each arm learns from, against the generator's onsets "
          "(F1 / P / R at ±50 ms):")
    for arm, t in truth.items():
        print(f"  {arm}: {t['onset_f1@50ms']:.3f} / {t['onset_precision@50ms']:.3f} / "
              f"{t['onset_recall@50ms']:.3f}")
    print(f"\nscored on {results['shipped']['clips']} clips of {args.score} (split {args.split}, "
          "generator onsets):\n")
    cols = ["shipped", *arms]
    print(f"| metric | {' | '.join(cols)} | motion baseline |")
    print("|---" * (len(cols) + 2) + "|")
    for k in ROWS:
        cells = [f"{results[a]['model'][k]:.4f}" for a in cols]
        print(f"| {k} | {' | '.join(cells)} | {results['shipped']['baseline'][k]:.4f} |")
    chance = [results[a]["onset_chance"]["model"]["onset_f1@50ms"] for a in cols]
    print(f"| onset_f1@50ms out of sync | {' | '.join(f'{c:.4f}' for c in chance)} | "
          f"{results['shipped']['onset_chance']['baseline']['onset_f1@50ms']:.4f} |")
    print(f"\n(results in {args.work / 'results.json'})")


if __name__ == "__main__":
    main()
