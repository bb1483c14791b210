"""How should `foley dataset videos` read a window's onsets from its sound? (`OnsetTruth`,
`--onset-rise-db`, `--onset-gap-ms`; models/README.md, "Real footage"; issue 5.)

A window's onsets are the truth the envelope model's onset head learns and its contact
scorer is fitted on, so they should be the onsets the picture causes. Procedural clips know
theirs (the generator's contacts and abrupt sustained starts); this study reads their sound
the way the builder would, with each setting of a grid — rise over the 21 ms before (dB) ×
the gap within which only the strongest attack counts (ms), floor −40 dBFS — and scores the
onsets found against the generator's (P / R / F1 at ±50 ms, the evaluation's matching). Each
clip is read twice: its own sound (a Foley stem) and the same under a stretch of a real
film's soundtrack (a mix; `stems_vs_mix_study.stems_and_mixes`).

Run (session 16, on 150 fresh clips the setting was not chosen on, about 2 min):
    .venv/bin/python scripts/onset_truth_study.py data/fresh data/bbb
The builder's setting was chosen on the calibration clips (`data/cal`, session 15) and
confirmed on fresh ones (`data/fresh`, seed 400000).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stems_vs_mix_study import SOUNDS, stems_and_mixes

from models import envelope_metrics as em
from tasks import dataset

RISES_DB = (6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
GAPS_MS = (50.0, 100.0, 150.0, 200.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", type=Path, help="procedural clips (generator onsets)")
    ap.add_argument("bed", type=Path, help="a real film's windows (foley dataset videos)")
    ap.add_argument("--json", type=Path, help="write every cell here too")
    args = ap.parse_args()
    grid = {(r, g): dataset.OnsetTruth(rise_db=r, min_gap_s=g / 1000) for r in RISES_DB
            for g in GAPS_MS}
    counts = {(s, k): em.OnsetCounts({0.05: 0}, 0, 0, []) for s in SOUNDS for k in grid}
    n = 0
    for clip, sounds in stems_and_mixes(args.clips, args.bed):
        n += 1
        true = [float(o["t"]) for o in clip.onsets]
        for s, sound in sounds.items():
            for k, truth in grid.items():
                found = [o["t"] for o in truth.detect(sound)]
                counts[s, k] = counts[s, k] + em.OnsetCounts.of(found, true, (0.05,))
    scores = {key: em.onset_scores(c) for key, c in counts.items()}
    builder, detector = dataset.OnsetTruth(), dataset.DETECTOR_TRUTH
    marks = {(builder.rise_db, builder.min_gap_s * 1000): " (builder)",
             (detector.rise_db, detector.min_gap_s * 1000): " (detect_onsets)"}
    for s in SOUNDS:
        print(f"\n{s} of {n} clips of {args.clips}: F1 (P / R) at ±50 ms against the generator's "
              "onsets\n")
        print("| rise \\ gap | " + " | ".join(f"{g:.0f} ms" for g in GAPS_MS) + " |")
        print("|---" * (len(GAPS_MS) + 1) + "|")
        for r in RISES_DB:
            cells = []
            for g in GAPS_MS:
                sc = scores[s, (r, g)]
                cells.append(f"{sc['onset_f1@50ms']:.3f} ({sc['onset_precision@50ms']:.2f} / "
                             f"{sc['onset_recall@50ms']:.2f}){marks.get((r, g), '')}")
            print(f"| {r:.0f} dB | " + " | ".join(cells) + " |")
        best = max(grid, key=lambda k: scores[s, k]["onset_f1@50ms"])
        f1 = scores[s, best]["onset_f1@50ms"]
        print(f"\nbest: {best[0]:.0f} dB, {best[1]:.0f} ms: F1 {f1:.3f}")
    if args.json:
        args.json.write_text(json.dumps([{"sound": s, "rise_db": k[0], "gap_ms": k[1], **sc}
                                         for (s, k), sc in scores.items()], indent=1))


if __name__ == "__main__":
    main()
