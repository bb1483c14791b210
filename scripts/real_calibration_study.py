"""Does calibrating the contact scorer on a studio's own material pay on more of that material?
(models/README.md, "Real footage"; issue 5.)

The shipped scorer is fitted on procedural scenes; on a film's mix it keeps few contacts and
loses to the motion baseline on onset recall. A studio can refit it on its own past reels
(`foley dataset videos REELS data/reels --split train`, then `foley train calibrate`). This
study measures what that does, on one real paired dataset (`foley dataset videos … --split
real`, e.g. Big Buck Bunny): per source video, the first half of its windows (by time)
calibrate, the second half is scored —

1. the checkpoint as shipped, and
2. the same weights with the scorer refitted on the first half (`calibrate_checkpoint`),

each against the motion baseline on the second half (`flows.evaluate.evaluate`, with the
paired intervals over clips). The halves are folders of hard links to the dataset's clips with
their own index (`WORK/calibrate`, split train; `WORK/test`, split real); the data is not
copied.

Run (about 3 min for the film's 118 windows on one core):
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
from flows.train import calibrate_checkpoint
from tasks.envelope import CHECKPOINT
from tasks.plots import plot_comparison

ROWS = ("e_l1_tfoley", "acc@5", "onset_precision@50ms", "onset_recall@50ms", "onset_f1@50ms",
        "onset_f1@25ms", "onset_f1@100ms", "onset_error_median_ms", "onset_error_p90_ms")


def halves(data: Path, work: Path) -> tuple[Path, Path, int, int]:
    """Folders WORK/calibrate (first half of each source's windows, split train) and WORK/test
    (the rest, split real) of hard links to `data`'s clips."""
    index = json.loads((data / "index.json").read_text())
    by_source: dict[str, list[dict[str, Any]]] = {}
    for c in index["clips"]:
        by_source.setdefault(str(c.get("source", "")), []).append(c)
    parts: dict[str, list[dict[str, Any]]] = {"calibrate": [], "test": []}
    for clips in by_source.values():
        clips = sorted(clips, key=lambda c: c["name"])  # window order: names carry the index
        parts["calibrate"] += [dict(c, split="train") for c in clips[:len(clips) // 2]]
        parts["test"] += [dict(c, split="real") for c in clips[len(clips) // 2:]]
    folders = []
    for name, clips in parts.items():
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
        folders.append(folder)
    return folders[0], folders[1], len(parts["calibrate"]), len(parts["test"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="real paired clips (foley dataset videos)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the halves and results")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = ap.parse_args()
    if not (args.data / "index.json").is_file():
        raise SystemExit(f"{args.data}: no index.json; build it with `foley dataset videos`")
    args.work.mkdir(parents=True, exist_ok=True)
    cal, test, n_cal, n_test = halves(args.data, args.work)
    print(f"{n_cal} windows calibrate, {n_test} are scored")
    recal = args.work / "calibrated.safetensors"
    report = calibrate_checkpoint(args.checkpoint, cal, recal, log=lambda _m: None)
    quiet = {"log": lambda _m: None}
    results = {"shipped": evaluate(test, args.checkpoint, split="real", **quiet),
               "calibrated": evaluate(test, recal, split="real", **quiet)}
    (args.work / "results.json").write_text(json.dumps(
        {"calibration": report, **results}, indent=1))
    for name, r in results.items():
        plot_comparison(r["model_minus_baseline"], args.work / f"forest_{name}.png",
                        title=f"{name} scorer − motion baseline, {n_test} windows")
    print(f"scorer refitted on {n_cal} windows: thresholds "
          f"{[c['thresholds'] for c in report['band_choices']]}, out of fold F1 "
          f"{report['oof_onset_f1']:.3f} (P {report['oof_onset_precision']:.3f} / "
          f"R {report['oof_onset_recall']:.3f})\n")
    print("| metric | shipped scorer | refitted on the first half | motion baseline |")
    print("|---|---|---|---|")
    for k in ROWS:
        cells = [f"{r['model'][k]:.4f} ({r['model_minus_baseline'][k]['verdict']})"
                 for r in results.values()]
        print(f"| {k} | {' | '.join(cells)} | {results['shipped']['baseline'][k]:.4f} |")
    print(f"\n(verdict: against the baseline, 95 % paired interval over the {n_test} windows; "
          f"results and forest plots in {args.work})")


if __name__ == "__main__":
    main()
