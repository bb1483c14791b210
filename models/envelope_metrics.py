"""How well a predicted envelope matches the sound a picture should make.

All curves are linear RMS at the same rate (the targets' 125 Hz, `models.rms_targets`); onset
lists are times in seconds. Definitions (our reading of the papers, fixed here so every figure
in docs/BENCHMARKS.md means one thing):

- **E-L1, T-Foley** (Chung et al. 2024): mean over frames of |RMS_pred − RMS_true| on the
  linear RMS curves as they are (level errors count).
- **E-L1, Video-Foley** (Lee et al. 2024): the same after min–max normalizing each curve of a
  clip to [0, 1] (shape only: a gain error does not count). A curve whose range is under
  FLAT_RANGE (−60 dBFS RMS: room tone, a silent scene) normalizes to 0: stretched to [0, 1],
  its noise would be scored as a shape.
- **acc@k**: the share of frames whose predicted µ-law class lies within k − 1 classes of the
  true class (acc@1 = exact class), on the 64 classes of `models.rms_targets`. A classifier
  (the RMS-Mapper) is scored on its most probable class per frame; an estimator of a curve
  (the motion baseline) on its curve's class.
- **Onsets**: in each list, onsets within 30 ms of each other are first combined, each pair
  into its mean as madmom's `combine_events` does (two feet landing 20 ms apart are one onset
  to a listener and to any detector; madmom's `OnsetEvaluation(combine=0.03)`, Böck et al.,
  ISMIR 2012, combines the annotations — here the predictions are combined the same way, so
  an estimator is not charged a false onset for sounding one contact twice). Then predicted
  and true onsets are matched one to one within a tolerance: the most pairs there can be (as
  mir_eval's `match_events`), and of those the pairing with the least total error. Precision =
  matched / predicted (1.0 with nothing predicted: nothing is wrong), recall = matched / true
  (1.0 with no true onset: nothing is missed), F1 their harmonic mean — madmom's conventions.
  Onset errors (median, 90th percentile) are taken over the pairs matched at the widest
  tolerance (undefined, NaN, with none).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOLERANCES_S = (0.025, 0.05, 0.1)
COMBINE_S = 0.03
FLAT_RANGE = 1e-3   # linear RMS (−60 dBFS): a curve that varies less is flat (Video-Foley E-L1)


def e_l1_tfoley(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = _same_length(pred, true)
    return float(np.mean(np.abs(pred - true))) if len(true) else 0.0


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi - lo >= FLAT_RANGE else np.zeros_like(x)


def e_l1_videofoley(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = _same_length(pred, true)
    if not len(true):
        return 0.0
    return float(np.mean(np.abs(_minmax(pred) - _minmax(true))))


def acc_at_k(pred_classes: np.ndarray, true_classes: np.ndarray, k: int) -> float:
    pred_classes, true_classes = _same_length(pred_classes, true_classes)
    if not len(true_classes):
        return 1.0
    return float(np.mean(np.abs(pred_classes.astype(int) - true_classes.astype(int)) < k))


def combine_onsets(times: Sequence[float], window: float = COMBINE_S) -> list[float]:
    """Sorted onsets, each within `window` of the one before it (as combined so far) replaced
    with their mean — madmom's `combine_events(..., combine="mean")`, with its 1e-12 of slack
    so a gap of exactly `window` combines whatever the times' magnitude."""
    out: list[float] = []
    for t in sorted(float(v) for v in times):
        if out and t - out[-1] <= window + 1e-12:
            out[-1] = 0.5 * (out[-1] + t)
        else:
            out.append(t)
    return out


def match_onsets(pred: Sequence[float], true: Sequence[float], tol: float
                 ) -> list[tuple[float, float]]:
    """One-to-one pairs (pred, true) within `tol`: as many as there can be, and of those the
    pairing with the least total |error| (an assignment where a pair outside `tol` costs more
    than every pair inside could together), in the order of the true onsets."""
    from scipy.optimize import linear_sum_assignment

    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if not len(p) or not len(t):
        return []
    dist = np.abs(p[:, None] - t[None, :])
    tol = tol + 1e-12                                     # 0.14 − 0.09 is 0.05 at ±50 ms
    near = dist <= tol
    rows, cols = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
    if not len(rows):
        return []
    sub = dist[np.ix_(rows, cols)]
    far = 1.0 + tol * 2 * min(len(rows), len(cols))      # > any sum of in-tolerance errors
    cost = np.where(sub <= tol, sub, far)
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] <= tol
    pairs = sorted(zip(cols[c[keep]], rows[r[keep]]))
    return [(float(p[i]), float(t[j])) for j, i in pairs]


@dataclass
class OnsetCounts:
    """Matched / predicted / true counts at each tolerance, and the matched errors."""

    matched: dict[float, int]
    predicted: int
    true: int
    errors: list[float]

    @classmethod
    def of(cls, pred: Sequence[float], true: Sequence[float],
           tolerances: Sequence[float] = TOLERANCES_S) -> OnsetCounts:
        pred, true = combine_onsets(pred), combine_onsets(true)
        matched = {tol: len(match_onsets(pred, true, tol)) for tol in tolerances}
        widest = match_onsets(pred, true, max(tolerances))
        return cls(matched, len(pred), len(true), [abs(p - t) for p, t in widest])

    def __add__(self, other: OnsetCounts) -> OnsetCounts:
        return OnsetCounts({k: v + other.matched[k] for k, v in self.matched.items()},
                           self.predicted + other.predicted, self.true + other.true,
                           self.errors + other.errors)


def onset_scores(counts: OnsetCounts) -> dict[str, float]:
    """Precision / recall / F1 per tolerance (ms in the key) and onset error statistics (ms)."""
    out: dict[str, float] = {}
    for tol, m in counts.matched.items():
        ms = int(round(tol * 1000))
        p = m / counts.predicted if counts.predicted else 1.0   # nothing predicted wrongly
        r = m / counts.true if counts.true else 1.0             # nothing missed
        out[f"onset_precision@{ms}ms"] = p
        out[f"onset_recall@{ms}ms"] = r
        out[f"onset_f1@{ms}ms"] = 2 * p * r / (p + r) if p + r else 0.0
    errs = np.asarray(counts.errors) * 1000.0
    out["onset_error_median_ms"] = float(np.median(errs)) if len(errs) else float("nan")
    out["onset_error_p90_ms"] = float(np.percentile(errs, 90)) if len(errs) else float("nan")
    return out


SAME_TIME_S = 2e-4   # a predicted onset this close to one of the tracker's times is timed by it


@dataclass
class OnsetTiming:
    """Where one estimator's onset error comes from, against a reference estimator on the same
    clip (the learned model against the motion tracker it takes contact times from), both
    matched one to one to the true onsets at the widest tolerance like `OnsetCounts`:

    - `tracked` / `untracked`: |error| (s) of the estimator's matched onsets that coincide with
      one of the reference's own times (within SAME_TIME_S), and of those that do not (the
      onset head's own peaks);
    - `shared`: (estimator's, reference's) |error| on the true onsets both found.

    The pooled median mixes the two sources: onsets only the estimator finds, timed on its
    125 Hz curve, raise it while the onsets both find are timed alike."""

    tracked: list[float]
    untracked: list[float]
    shared: list[tuple[float, float]]

    @classmethod
    def of(cls, pred: Sequence[float], ref: Sequence[float], true: Sequence[float],
           tol: float = max(TOLERANCES_S)) -> OnsetTiming:
        true = combine_onsets(true)
        raw = np.asarray(ref, np.float64)
        mine = {t: p for p, t in match_onsets(combine_onsets(pred), true, tol)}
        theirs = {t: p for p, t in match_onsets(combine_onsets(ref), true, tol)}
        tracked, untracked = [], []
        for t, p in mine.items():
            timed_by_ref = len(raw) > 0 and np.abs(raw - p).min() <= SAME_TIME_S
            (tracked if timed_by_ref else untracked).append(abs(p - t))
        shared = [(abs(mine[t] - t), abs(theirs[t] - t)) for t in mine if t in theirs]
        return cls(tracked, untracked, shared)

    def __add__(self, other: OnsetTiming) -> OnsetTiming:
        return OnsetTiming(self.tracked + other.tracked, self.untracked + other.untracked,
                           self.shared + other.shared)

    def summary(self) -> dict[str, Any]:
        """Counts and median |error| in ms of each part (None where a part is empty)."""
        def median(x: Sequence[float]) -> float | None:
            return round(float(np.median(x)) * 1000, 4) if len(x) else None

        both = np.asarray(self.shared, np.float64).reshape(-1, 2)
        return {"tracked": {"onsets": len(self.tracked), "median_ms": median(self.tracked)},
                "untracked": {"onsets": len(self.untracked),
                              "median_ms": median(self.untracked)},
                "found_by_both": {"onsets": len(both), "median_ms": median(both[:, 0]),
                                  "reference_median_ms": median(both[:, 1]),
                                  "timed_alike": int(np.sum(np.abs(both[:, 0] - both[:, 1])
                                                            <= SAME_TIME_S))}}


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = min(len(a), len(b))
    return a[:n], b[:n]


@dataclass
class ClipScores:
    """One estimator's scores of one clip: its frame-averaged metrics (E-L1, acc@k) and its
    onset counts — what `paired_bootstrap` resamples."""

    means: dict[str, float]
    onsets: OnsetCounts


def pooled_scores(clips: Sequence[ClipScores]) -> dict[str, float]:
    """The scores of a set of clips as `foley eval envelope` reports them: frame-averaged
    metrics as the mean over clips, onset metrics on the pooled counts."""
    out = {k: float(np.mean([c.means[k] for c in clips])) for k in clips[0].means}
    total = clips[0].onsets
    for c in clips[1:]:
        total = total + c.onsets
    return out | onset_scores(total)


CURVE_METRICS = ("e_l1_tfoley", "e_l1_videofoley", "acc@1", "acc@5", "acc@10")


def curve_means(curve: np.ndarray, classes: np.ndarray, true: np.ndarray,
                true_classes: np.ndarray) -> dict[str, float]:
    """One clip's frame-averaged metrics (CURVE_METRICS) of a curve and its classes."""
    return {"e_l1_tfoley": e_l1_tfoley(curve, true), "e_l1_videofoley": e_l1_videofoley(
        curve, true)} | {f"acc@{k}": acc_at_k(classes, true_classes, k) for k in (1, 5, 10)}


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, cum[-1] / 2)])


def fit_level(curves: Sequence[np.ndarray], truths: Sequence[np.ndarray]
              ) -> tuple[float, float]:
    """The gain g ≥ 0 and floor f ≥ 0 that make g · curve + f closest to the true RMS in T-Foley
    E-L1 (the mean over clips of each clip's mean |error|): for each gain on a log grid, then
    on a finer one around the best, the floor is the weighted median of the residuals, the
    L1-optimal constant. What an estimator whose curve is on a scale of its own (the motion
    baseline's strength) would score with its level set by someone who knew the answers."""
    pairs = [_same_length(c, t) for c, t in zip(curves, truths)]
    pairs = [(c, t) for c, t in pairs if len(t)]
    if not pairs:
        return 1.0, 0.0
    x = np.concatenate([c for c, _ in pairs])
    y = np.concatenate([t for _, t in pairs])
    w = np.concatenate([np.full(len(t), 1.0 / len(t)) for _, t in pairs])

    def best(gains: np.ndarray) -> tuple[float, float, float]:
        out = []
        for g in gains:
            f = max(_weighted_median(y - g * x, w), 0.0)
            out.append((float(np.sum(w * np.abs(g * x + f - y))), float(g), f))
        return min(out)

    coarse = np.r_[0.0, np.geomspace(1e-4, 1e2, 121)]
    _, g0, _ = best(coarse)
    i = int(np.searchsorted(coarse, g0))
    lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
    _, g, f = best(np.linspace(lo, hi, 41))
    return g, f


CHANCE_SHIFTS = (0.25, 0.5, 0.75)   # of each clip's duration


def shifted_onsets(true: Sequence[float], duration_s: float, frac: float) -> list[float]:
    """The true onsets moved by `frac` of the clip's duration, wrapped around its end: as many
    onsets, spaced as they were, out of step with the picture."""
    if duration_s <= 0:
        return sorted(float(t) for t in true)
    return sorted((float(t) + frac * duration_s) % duration_s for t in true)


def chance_scores(pred: Sequence[Sequence[float]], true: Sequence[Sequence[float]],
                  durations: Sequence[float], tol: float = 0.05,
                  shifts: Sequence[float] = CHANCE_SHIFTS) -> dict[str, float]:
    """Onset precision / recall / F1 at ±`tol` of each clip's predicted onsets against its own
    true onsets moved by each of `shifts` (`shifted_onsets`), pooled over clips and averaged
    over the shifts: what the same number of events would score out of sync. Where a
    soundtrack is dense with onsets (a film's mix: music, dialogue, ambience) this is far from
    zero, and only the F1 above it comes from reading the picture."""
    ms = int(round(tol * 1000))
    rows = []
    for frac in shifts:
        total = None
        for p, t, d in zip(pred, true, durations):
            k = OnsetCounts.of(p, shifted_onsets(t, d, frac), (tol,))
            total = k if total is None else total + k
        if total is not None:
            rows.append(onset_scores(total))
    keys = (f"onset_precision@{ms}ms", f"onset_recall@{ms}ms", f"onset_f1@{ms}ms")
    return {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in keys}


LOWER_IS_BETTER = ("e_l1", "onset_error")
BOOTSTRAP_DRAWS = 1000


def lower_is_better(metric: str) -> bool:
    return metric.startswith(LOWER_IS_BETTER)


def paired_bootstrap(a: Sequence[ClipScores], b: Sequence[ClipScores], *,
                     draws: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = 0.95
                     ) -> dict[str, dict[str, object]]:
    """Per metric, the difference a − b of two estimators scored on the same clips (a[i] and
    b[i] are clip i) with its percentile interval over `draws` resamplings of the clips, the
    same clips for both (a paired bootstrap: a hard clip is hard for both, so the interval is
    the one of the difference, not of either score), and a verdict: "better" when the whole
    interval lies on a's better side, "worse" on its worse side, else "no clear difference";
    "undefined" (no interval) where the difference itself is (an onset error with no matched
    onset) or fewer than half the draws define it. `draws` counts the draws that do.
    Clips are the unit because a clip's onsets share its objects, walker and frame rate."""
    if len(a) != len(b) or not len(a):
        raise ValueError("paired_bootstrap needs the two estimators' scores of the same clips")
    n = len(a)
    tols = sorted(a[0].onsets.matched)
    keys = list(a[0].means)

    def arrays(rows: Sequence[ClipScores]) -> dict[str, Any]:
        return {"means": np.array([[r.means[k] for k in keys] for r in rows], np.float64),
                "matched": np.array([[r.onsets.matched[t] for t in tols] for r in rows], float),
                "pt": np.array([(r.onsets.predicted, r.onsets.true) for r in rows], float),
                "errors": [np.asarray(r.onsets.errors, np.float64) for r in rows]}

    def scores(x: dict[str, Any], idx: np.ndarray) -> dict[str, float]:
        """`pooled_scores` of the clips `idx`, from the arrays (a draw is summed, not added
        one OnsetCounts at a time)."""
        m, (p, t) = x["matched"][idx].sum(0), x["pt"][idx].sum(0)
        counts = OnsetCounts(dict(zip(tols, m)), p, t,
                             np.concatenate([x["errors"][i] for i in idx]).tolist())
        return dict(zip(keys, x["means"][idx].mean(0))) | onset_scores(counts)

    xa, xb = arrays(a), arrays(b)
    everyone = np.arange(n)
    sa, sb = scores(xa, everyone), scores(xb, everyone)
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in sa}
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        da, db = scores(xa, idx), scores(xb, idx)
        for k in sa:
            diffs[k].append(da[k] - db[k])
    out: dict[str, dict[str, object]] = {}
    tail = (1 - level) / 2 * 100
    for k in sa:
        d = np.asarray(diffs[k])
        d = d[np.isfinite(d)]   # a draw of clips without a matched onset has no onset error
        point = float(sa[k] - sb[k])
        if not np.isfinite(point) or len(d) < draws / 2:
            out[k] = {"difference": point if np.isfinite(point) else None, "ci95": None,
                      "verdict": "undefined", "draws": int(len(d))}
            continue
        lo, hi = np.percentile(d, [tail, 100 - tail])
        sign = -1.0 if lower_is_better(k) else 1.0  # > 0: a is better
        least, most = sorted((sign * lo, sign * hi))  # how much better a is, at the ends
        verdict = "better" if least > 0 else "worse" if most < 0 else "no clear difference"
        out[k] = {"difference": point, "ci95": [round(float(lo), 6), round(float(hi), 6)],
                  "verdict": verdict, "draws": int(len(d))}
    return out


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float as None (JSON has no NaN: a strict reader of
    `foley eval envelope --json` would fail on one)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
