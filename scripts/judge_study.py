"""How far the evaluation's judge can be trusted, and what limits it (docs/BENCHMARKS.md,
issue 6, phase 5). Three readings of the same judge (`flows.eval_synth.train_judge`), each with
the log-mel statistics alone (`spectral_features`, the judge before phase 5) and with the
temporal descriptors added (`judge_features`):

1. cross-validated accuracy (5 folds by recording) on what the judge may learn from: the
   held-out sfx recordings and the judge corpus;
2. the same on the whole sfx folder — NOT a usable judge (the generator trained on most of
   these recordings), only the ceiling of this kind of classifier when training and test come
   from the same three packages;
3. trained as in 1 and read on real scenes cut from the generator's training recordings
   (`--scenes` per class): real sound of the generator's domain the judge never saw.

Run: .venv/bin/python scripts/judge_study.py --judge-corpus data/judge   (~5 min, 2 cores)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from flows import eval_synth as es
from flows.synth_data import load_corpus, load_recordings

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sfx", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "sfx")
    ap.add_argument("--judge-corpus", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path(".foley/eval/synth"))
    ap.add_argument("--segments", type=int, default=12, help="augmented segments per recording")
    ap.add_argument("--scenes", type=int, default=40, help="domain scenes per class")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    splits = load_corpus(a.sfx, a.work, with_kit=False)
    classes = es.eval_classes(splits["heldout"])
    corpus = [c for c in load_recordings(a.judge_corpus, a.work / "library" / "judge")
              if c.category in classes]
    allowed = [c for c in splits["heldout"] if c.category in classes] + corpus
    sfx = [c for part in splits.values() for c in part if c.category in classes]
    own = [c for c in splits["train"] if c.category in classes]
    scenes = es.make_scenes(own, classes, per_class=a.scenes, seed=a.seed + 3)
    f_allowed, c_allowed, n_allowed = es.judge_segments(allowed, a.segments, a.seed + 1)
    f_sfx, c_sfx, n_sfx = es.judge_segments(sfx, a.segments, a.seed + 1)
    f_scenes = np.stack([es.judge_features(s.audio) for s in scenes])
    print(f"classes {classes}; judge may learn from {len(allowed)} recordings "
          f"({len(allowed) - len(corpus)} held-out sfx + {len(corpus)} corpus); sfx folder "
          f"{len(sfx)}; {len(scenes)} domain scenes from {len(own)} training recordings")
    for name, cols in (("spectral only", slice(0, es.SPECTRAL_DIM)),
                       ("spectral + temporal", slice(None))):
        cv = es.cross_validate(f_allowed[:, cols], c_allowed, n_allowed, classes, a.seed)
        ceiling = es.cross_validate(f_sfx[:, cols], c_sfx, n_sfx, classes, a.seed)
        judge = es.train_judge(f_allowed[:, cols], c_allowed, classes, a.seed)
        pred = judge.predict(f_scenes[:, cols])
        per = {c: np.mean([p == c for p, s in zip(pred, scenes) if s.category == c])
               for c in classes}
        print(f"{name}: 1. CV {cv['accuracy']:.3f} (balanced {cv['balanced_accuracy']:.3f}) | "
              f"2. sfx-folder CV {ceiling['accuracy']:.3f} (balanced "
              f"{ceiling['balanced_accuracy']:.3f}) | 3. domain scenes "
              f"{np.mean([p == s.category for p, s in zip(pred, scenes)]):.3f} "
              + " ".join(f"{c} {v:.2f}" for c, v in per.items()))


if __name__ == "__main__":
    main()
