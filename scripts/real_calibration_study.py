"""Does adapting the model to a studio's own material pay on more of that material?
(models/README.md, "Real footage"; issue 5.)

The shipped checkpoint is trained and calibrated on procedural scenes; on a film's mix its
scorer keeps few contacts and loses to the motion baseline on onset recall. A studio can
refit the scorer on its own past reels (`foley dataset videos REELS data/reels --split
train`, then `foley train calibrate`), or fine-tune the network on them as well (`foley train
envelope data/reels --init <shipped checkpoint> --calibration <reels kept apart>`). This
study measures both on one real paired dataset (`foley dataset videos … --split real`, e.g.
Big Buck Bunny): per source video, the first half of its windows (by time) adapts, the second
half is scored —

1. the checkpoint as shipped;
2. the same weights with the scorer refitted on the first half (`calibrate_checkpoint`);
3. the network fine-tuned on the first two thirds of the first half (`flows.train.train` with
   `init`: 30 epochs, peak lr 5e-4, batch 8, seed 0, one thread) and its scorer fitted on the
   last third, which the fine-tuning never reads —

each against the motion baseline on the second half (`flows.evaluate.evaluate`, with the
paired intervals over clips), and each estimator's onset F1 out of sync (`onset_chance`: its
events against the true onsets moved by ¼, ½ and ¾ of each window) — a film's mix is dense
with onsets, so only the F1 above that comes from reading the picture. The parts are folders
of hard links to the dataset's clips with their own index (WORK/calibrate, WORK/tune,
WORK/tune_calibrate: split train; WORK/test: split real); the data is not copied.

Run (about 1.5 min for the film's 118 windows on one core):
    .venv/bin/python scripts/real_calibration_study.py data/bbb --work runs/real_calibration
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from flows.evaluate import evaluate
from flows.train import calibrate_checkpoint, checkpoint_name, train
from tasks.envelope import CHECKPOINT
from tasks.plots import plot_comparison

ROWS = ("e_l1_tfoley", "e_l1_videofoley", "acc@5", "onset_precision@50ms", "onset_recall@50ms",
        "onset_f1@50ms", "onset_f1@25ms", "onset_f1@100ms", "onset_recall@100ms",
        "onset_error_median_ms", "onset_error_p90_ms")


def parts(data: Path, work: Path) -> dict[str, tuple[Path, int]]:
    """Folders of hard links to `data`'s clips, by window order within each source video:
    WORK/calibrate (the first half, split train), WORK/tune and WORK/tune_calibrate (the first
    two thirds of that half and the rest, split train) and WORK/test (the second half, split
    real); each with its number of clips."""
    index = json.loads((data / "index.json").read_text())
    by_source: dict[str, list[dict[str, Any]]] = {}
    for c in index["clips"]:
        by_source.setdefault(str(c.get("source", "")), []).append(c)
    out: dict[str, list[dict[str, Any]]] = {"calibrate": [], "tune": [], "tune_calibrate": [],
                                            "test": []}
    for clips in by_source.values():
        clips = sorted(clips, key=lambda c: c["name"])  # window order: names carry the index
        half = len(clips) // 2
        tune = 2 * half // 3
        out["calibrate"] += [dict(c, split="train") for c in clips[:half]]
        out["tune"] += [dict(c, split="train") for c in clips[:tune]]
        out["tune_calibrate"] += [dict(c, split="train") for c in clips[tune:half]]
        out["test"] += [dict(c, split="real") for c in clips[half:]]
    folders = {}
    for name, clips in out.items():
        folder = work / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for c in clips:
            try:
                os.link(data / c["file"], folder / c["file"])
            except OSError:  # another file system: copy
                shutil.copy2(data / c["file"], folder / c["file"])
        (folder / "index.json").write_text(json.dumps(
            {**index, "clips": clips, "skipped": []}, indent=1))
        folders[name] = (folder, len(clips))
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="real paired clips (foley dataset videos)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the halves and results")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = ap.parse_args()
    if not (args.data / "index.json").is_file():
        raise SystemExit(f"{args.data}: no index.json; build it with `foley dataset videos`")
    args.work.mkdir(parents=True, exist_ok=True)
    folders = parts(args.data, args.work)
    (cal, n_cal), (test, n_test) = folders["calibrate"], folders["test"]
    (tune, n_tune), (tune_cal, n_tune_cal) = folders["tune"], folders["tune_calibrate"]
    print(f"{n_cal} windows adapt ({n_tune} fine-tune, {n_tune_cal} calibrate the fine-tuned "
          f"scorer), {n_test} are scored")
    quiet = {"log": lambda _m: None}
    recal = args.work / "calibrated.safetensors"
    report = calibrate_checkpoint(args.checkpoint, cal, recal, **quiet)
    tuned_dir = args.work / "fine_tuned"
    if tuned_dir.exists():      # a fresh run each time: no resuming into another split
        shutil.rmtree(tuned_dir)
    summary = train(tune, tuned_dir, epochs=30, lr=5e-4, batch_size=8, seed=0, threads=1,
                    calibration=tune_cal, init=args.checkpoint, **quiet)
    tuned = tuned_dir / checkpoint_name("tiny")
    results = {"shipped": evaluate(test, args.checkpoint, split="real", **quiet),
               "calibrated": evaluate(test, recal, split="real", **quiet),
               "fine-tuned": evaluate(test, tuned, split="real", **quiet)}
    (args.work / "results.json").write_text(json.dumps(
        {"calibration": report, "fine_tuning": {k: v for k, v in summary.items()
                                                if k not in ("history", "clips_seen")},
         **results}, indent=1))
    for name, r in results.items():
        plot_comparison(r["model_minus_baseline"], args.work / f"forest_{name}.png",
                        title=f"{name} − motion baseline, {n_test} windows")
    print(f"scorer refitted on {n_cal} windows: thresholds "
          f"{[c['thresholds'] for c in report['band_choices']]}, out of fold F1 "
          f"{report['oof_onset_f1']:.3f} (P {report['oof_onset_precision']:.3f} / "
          f"R {report['oof_onset_recall']:.3f})")
    sel = summary["selection"] or {}
    print(f"fine-tuned on {n_tune} windows: best epoch {summary['best_epoch']} of "
          f"{summary['epochs_run']} ({summary['train_minutes']} min); its scorer on "
          f"{n_tune_cal}: out of fold F1 {sel.get('oof_onset_f1', float('nan')):.3f}\n")
    print("| metric | shipped | scorer refitted on the first half | fine-tuned + its scorer "
          "| motion baseline |")
    print("|---|---|---|---|---|")
    for k in ROWS:
        cells = [f"{r['model'][k]:.4f} ({r['model_minus_baseline'][k]['verdict']})"
                 for r in results.values()]
        print(f"| {k} | {' | '.join(cells)} | {results['shipped']['baseline'][k]:.4f} |")
    chance = [r["onset_chance"]["model"]["onset_f1@50ms"] for r in results.values()]
    base_chance = results["shipped"]["onset_chance"]["baseline"]["onset_f1@50ms"]
    base_f1 = results["shipped"]["baseline"]["onset_f1@50ms"]
    print(f"| onset_f1@50ms out of sync (chance) | {' | '.join(f'{c:.4f}' for c in chance)} "
          f"| {base_chance:.4f} |")
    print("| onset_f1@50ms above chance | " + " | ".join(
        f"{r['model']['onset_f1@50ms'] - c:+.4f}" for r, c in zip(results.values(), chance))
        + f" | {base_f1 - base_chance:+.4f} |")
    print(f"\n(verdict: against the baseline, 95 % paired interval over the {n_test} windows; "
          f"results and forest plots in {args.work})")


if __name__ == "__main__":
    main()
