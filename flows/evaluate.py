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

Point estimates on a few dozen clips differ by an onset or two by chance, so each metric also
gets the model's difference from the baseline with its 95 % interval from a paired bootstrap
over clips (`envelope_metrics.paired_bootstrap`) and a verdict: better, worse, or no clear
difference. `model_wins_every_metric` stays the strict reading of the point estimates.

`onset_timing` says where the model's onset error comes from (`envelope_metrics.OnsetTiming`):
its matched onsets at the tracker's contact times and those its onset head adds on its own,
each with its median, and the median of both estimators on the onsets both find. The pooled
median mixes the two sources, so an onset only the model finds (timed on its 125 Hz curve)
raises it even where the onsets both find are timed alike.

`onset_chance` is the control for onset figures that chance alone would reach: each
estimator's events scored against its clips' true onsets moved by ¼, ½ and ¾ of each clip
(`envelope_metrics.chance_scores`). On sparse procedural clips it is near zero; on a film's
mix, dense with onsets the picture does not cause, it is most of the F1, and only the F1 above
it is read from the picture.

`curve_references` are what E-L1 and acc@k give for nothing (`curve_references`): an
all-zero curve, and the motion baseline with its gain and floor fitted on the evaluated clips
themselves. The baseline's curve is a strength on a scale of its own, so against the true RMS
its E-L1 and acc@k mostly read its level; the fitted baseline reads its shape, and the model's
difference from it is bootstrapped as against the baseline.

`by_frame_rate` pools the onset figures of each frame-rate band of the contact scorer
(`contact_scorer.band_of`: under 20, 20–40, 40 fps and over): how much the tracker alone
resolves, and so where the model can add onsets, depends on the frame rate, and a split's
overall figures are its mix of rates.

Bad input is an `EvalInputError` naming it in one line (the CLI exits 2): the checkpoint is
read through the pass's own check (`tasks.envelope.load_checked`), and DATA's index and every
clip's file (`clips_to_score`) are checked before any clip is scored; a clip damaged inside
its file, or whose features hold NaN, is named when it is read, with the `foley dataset`
command that makes it again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models import envelope_metrics as em
from models import contact_scorer, motion_baseline, rms_targets, v2a_envelope
from tasks.stage import one_line

ESTIMATORS = ("model", "baseline")


class EvalInputError(ValueError):
    """Bad input to the evaluation — the checkpoint, DATA's index, a clip of it, a split it
    has no clips of — found before or while scoring: the message is one line naming the file
    and what to do (`foley eval envelope` prints it and exits 2)."""


def _rebuild(data: Path, entry: dict[str, Any]) -> str:
    """The `foley dataset` command that makes a clip of DATA again (it makes only the clips
    that are missing)."""
    split = entry.get("split", "heldout")
    if entry.get("source", "procedural") == "procedural":
        return (f"`foley dataset procedural {data} --split {split}` with the --clips and --seed "
                "that built it")
    return f"`foley dataset videos VIDEOS {data} --split {split}` as it was built"


def _damaged(data: Path, entry: dict[str, Any], exc: ValueError) -> EvalInputError:
    """A clip `tasks.dataset` could not read: named, with the command that makes it again."""
    path = Path(data) / entry["file"]
    if exc.__cause__ is not None:  # the file itself: cut short, not a zip, a bad CRC
        return EvalInputError(f"clip {entry['name']}: {path} is not a readable dataset clip "
                              f"({one_line(exc.__cause__)}); delete it and rerun "
                              f"{_rebuild(data, entry)}")
    return EvalInputError(f"clip {entry['name']}: {one_line(exc)} (the build: "
                          f"{_rebuild(data, entry)})")


def clips_to_score(data: Path, split: str) -> list[dict[str, Any]]:
    """The index entries of the clips `evaluate` scores (split "val": the validation clips of
    the train split); EvalInputError naming DATA's index.json if it does not read, or DATA
    and the splits it has if there are none, or a clip whose file is missing or damaged
    (checked by its zip directory and header: `tasks.dataset._peek`) — all before anything is
    scored."""
    from flows.train import is_validation
    from tasks.dataset import INDEX, _peek, clip_entries

    index = Path(data) / INDEX
    if not index.is_file():
        raise EvalInputError(f"{data} is not a dataset folder (no {INDEX}): build one with "
                             "`foley dataset procedural` or `foley dataset videos`")
    try:
        everything = clip_entries(data)
        entries = [e for e in everything
                   if e["split"] == ("train" if split == "val" else split)
                   and (split != "val" or is_validation(str(e["name"])))]
        files = [str(e["file"]) for e in entries]  # every entry names its file
        del files
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise EvalInputError(f"{index}: not a readable dataset index ({one_line(exc)}); "
                             "rebuild the folder with the `foley dataset` command that made "
                             "it") from exc
    if not entries:
        have: dict[str, int] = {}
        for e in everything:
            have[str(e.get("split"))] = have.get(str(e.get("split")), 0) + 1
        held = ("holds " + ", ".join(f"{k} ({n} clips)" for k, n in sorted(have.items()))
                if have else "lists no clips")
        build = {"val": f"foley dataset procedural {data} --split train",
                 "train": f"foley dataset procedural {data} --split train",
                 "heldout": f"foley dataset procedural {data} --split heldout",
                 "real": f"foley dataset videos VIDEOS {data} --split real"}.get(split)
        what = ("validation clips of the train split" if split == "val" else
                f"clips of split {split!r}")
        raise EvalInputError(
            f"{data}: no {what} to evaluate (its index.json {held}): choose a split it has "
            "with --split (or val: the validation clips of its train split)"
            + (f", or build them with `{build}`" if build else ""))
    for e in entries:
        path = Path(data) / e["file"]
        if not path.is_file():
            raise EvalInputError(f"clip {e['name']}: its file {path} is missing; make it "
                                 f"again with {_rebuild(data, e)}")
        try:
            _peek(path)
        except ValueError as exc:
            raise _damaged(data, e, exc) from exc
    return entries


def evaluate(data: Path, checkpoint: Path, *, split: str = "heldout", threads: int = 1,
             log: Any = print) -> dict[str, Any]:
    """Score the model of `checkpoint` and the motion baseline on DATA's clips of `split` (the
    module docstring). Bad input — a checkpoint `tasks.envelope.check_checkpoint` refuses, an
    index that does not read, no clips of the split, a damaged clip — is an EvalInputError
    naming it; the checkpoint and every clip's file are checked before any clip is scored."""
    import torch

    from tasks.dataset import read_clip
    from tasks.envelope import load_checked

    torch.set_num_threads(threads)
    try:  # the pass's own check: readable, this input layout, finite, a usable scorer
        model, config, meta = load_checked(Path(checkpoint))
    except ValueError as exc:
        raise EvalInputError(one_line(exc)) from exc
    entries = clips_to_score(data, split)
    per_clip: dict[str, list[em.ClipScores]] = {k: [] for k in ESTIMATORS}
    timing = em.OnsetTiming([], [], [])
    edges = tuple(meta.get("selection", {}).get("band_edges", contact_scorer.BAND_EDGES))
    bands: list[int] = []
    onset_lists: dict[str, list[list[float]]] = {k: [] for k in ESTIMATORS}
    truths: list[list[float]] = []
    durations: list[float] = []
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # true RMS, classes, baseline
    infer_s = audio_s = 0.0
    n = 0
    for entry in entries:
        try:  # damage inside the file (its CRCs) shows only when it is read whole
            clip = read_clip(Path(data) / entry["file"])
        except ValueError as exc:
            raise _damaged(data, entry, exc) from exc
        n += 1
        rms = rms_targets.rms_target(clip.audio16k, rms_targets.SR)
        true_cls = rms_targets.mu_encode(rms)
        true_onsets = [float(e["t"]) for e in clip.onsets]
        fps = float(clip.features["fps"])
        duration = float(clip.features["n_frames"]) / fps
        audio_s += duration
        bands.append(contact_scorer.band_of(fps, edges))
        t0 = time.perf_counter()  # the model's envelope needs the tracker: both are timed
        bad = v2a_envelope.nonfinite_features(clip.features)
        if bad:  # NaN in, NaN out: the clip is damaged, not the model worse
            raise EvalInputError(f"clip {clip.name}: its features hold NaN or infinity in "
                                 f"{', '.join(bad)}; delete {Path(data) / entry['file']} and "
                                 f"rerun {_rebuild(data, entry)}")
        base = motion_baseline.estimate_envelope(clip.features, shot=clip.name,
                                                 duration_s=duration, motion=True)
        try:
            env, curve, probs = v2a_envelope.estimate(model, meta, clip.features,
                                                      shot=clip.name, duration_s=duration,
                                                      base=base)
        except v2a_envelope.NonFinite as exc:
            raise EvalInputError(f"{checkpoint} on clip {clip.name}: {one_line(exc)}") from exc
        infer_s += time.perf_counter() - t0
        events = env["events"]
        base_curve = rms_targets.resample_curve(np.asarray(base["curve"], np.float64),
                                                base["rate_hz"], rms_targets.RATE_HZ, len(rms))
        preds = {
            "model": (curve, np.argmax(probs, axis=1), [e["t"] for e in events]),
            "baseline": (base_curve, rms_targets.mu_encode(base_curve),
                         [e["t"] for e in base["events"]]),
        }
        for name, (c, cls, ons) in preds.items():
            means = em.curve_means(c, cls, rms, true_cls)
            per_clip[name].append(em.ClipScores(means, em.OnsetCounts.of(ons, true_onsets)))
            onset_lists[name].append(ons)
        curves.append((rms, true_cls, base_curve))
        truths.append(true_onsets)
        durations.append(duration)
        timing = timing + em.OnsetTiming.of(preds["model"][2], preds["baseline"][2], true_onsets)
    result: dict[str, Any] = {"split": split, "clips": n, "audio_s": round(audio_s, 1),
                              "checkpoint": str(checkpoint), "preset": config.preset}
    for name in ESTIMATORS:
        result[name] = em.pooled_scores(per_clip[name])
    result["model_inference_x_realtime"] = round(audio_s / infer_s, 1) if infer_s else None
    result["model_wins_every_metric"] = wins(result["model"], result["baseline"])
    result["model_minus_baseline"] = em.paired_bootstrap(per_clip["model"], per_clip["baseline"])
    result["onset_timing"] = timing.summary()
    result["by_frame_rate"] = by_frame_rate(per_clip, bands, edges)
    result["onset_chance"] = {name: em.chance_scores(onset_lists[name], truths, durations)
                              for name in ESTIMATORS}
    result["curve_references"] = curve_references(per_clip["model"], curves)
    log(format_table(result))
    return result


def curve_references(model: list[em.ClipScores],
                     curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """What the curve metrics (E-L1, acc@k) give for nothing: silence (an all-zero curve), and
    the motion baseline with its gain and floor fitted on these very clips to the true RMS
    (`envelope_metrics.fit_level`: an oracle, the most its curve's shape is worth once its
    level is right — its own curve is a strength on a scale of its own). The model's
    difference from the fitted baseline is bootstrapped as against the baseline."""
    g, f = em.fit_level([b for _, _, b in curves], [r for r, _, _ in curves])
    rows: dict[str, list[em.ClipScores]] = {"silence": [], "level_fitted_baseline": []}
    for (rms, true_cls, base), m in zip(curves, model):
        for name, c in (("silence", np.zeros_like(rms)), ("level_fitted_baseline", g * base + f)):
            rows[name].append(em.ClipScores(
                em.curve_means(c, rms_targets.mu_encode(c), rms, true_cls), m.onsets))
    out: dict[str, Any] = {name: {k: float(np.mean([c.means[k] for c in clips]))
                                  for k in em.CURVE_METRICS} for name, clips in rows.items()}
    out["level_fitted_baseline"] |= {"gain": round(g, 6), "floor": round(f, 6)}
    diff = em.paired_bootstrap(model, rows["level_fitted_baseline"])
    out["model_minus_level_fitted_baseline"] = {k: diff[k] for k in em.CURVE_METRICS}
    return out


BAND_METRICS = ("onset_f1@50ms", "onset_recall@100ms", "onset_error_median_ms")


def by_frame_rate(per_clip: dict[str, list[em.ClipScores]], bands: list[int],
                  edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per frame-rate band that holds clips: its clips and true onsets, and each estimator's
    pooled BAND_METRICS there."""
    rows = []
    for b, name in enumerate(contact_scorer.band_names(edges)):
        idx = [i for i, x in enumerate(bands) if x == b]
        if not idx:
            continue
        row: dict[str, Any] = {"frame_rate": name, "clips": len(idx), "true_onsets": sum(
            per_clip[ESTIMATORS[0]][i].onsets.true for i in idx)}
        for est in ESTIMATORS:
            scores = em.pooled_scores([per_clip[est][i] for i in idx])
            row[est] = {k: scores[k] for k in BAND_METRICS}
        rows.append(row)
    return rows


def wins(model: dict[str, float], baseline: dict[str, float]) -> bool:
    """Whether the model's figure is better than the baseline's on every metric (a tie at a
    perfect 1.0 counts), point estimates only: `model_minus_baseline` says which differences
    the clips are enough to tell."""
    for k, v in model.items():
        b = baseline[k]
        if em.lower_is_better(k):
            if not v < b:
                return False
        elif not v > b and not (v == b == 1.0):
            return False
    return True


def _signed(v: float | None) -> str:
    """A difference as the table prints it; "—" where it is undefined (None or NaN: a metric
    with no value for one of the two, e.g. an onset error without a matched onset)."""
    return "—" if v is None or not np.isfinite(v) else f"{v:+.4f}"


def _difference_cell(d: dict[str, Any] | None) -> str:
    """"+0.0123 [-0.0100, +0.0300]", the difference alone where it has no interval, "—" where
    it is undefined."""
    if not d:
        return ""
    ci = d.get("ci95")
    if ci and d.get("difference") is not None:
        return f"{_signed(d['difference'])} [{_signed(ci[0])}, {_signed(ci[1])}]"
    return _signed(d.get("difference"))


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side table: each metric for both, the model's difference with its 95 %
    interval over resampled clips and whether the clips tell the two apart."""
    diff = result.get("model_minus_baseline", {})
    lines = [f"{result['clips']} clips ({result['audio_s']} s) of split {result['split']!r}",
             f"{'metric':<24}{'model':>9}{'baseline':>10}   {'model − baseline [95 % CI]':<34}"
             "verdict"]
    for k in result["model"]:
        d = diff.get(k)
        cell = _difference_cell(d)
        lines.append(f"{k:<24}{result['model'][k]:>9.4f}{result['baseline'][k]:>10.4f}   "
                     f"{cell:<34}{d['verdict'] if d else ''}")
    lines.append(f"model inference: {result['model_inference_x_realtime']}× real time "
                 "(one thread, features excluded)")
    timing = result.get("onset_timing")
    if timing:
        def ms(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f} ms"

        tr, un, both = timing["tracked"], timing["untracked"], timing["found_by_both"]
        lines.append(f"model's onset error by source: {tr['onsets']} at the tracker's contact "
                     f"times, median {ms(tr['median_ms'])}; {un['onsets']} from the onset head "
                     f"only, median {ms(un['median_ms'])}")
        lines.append(f"on the {both['onsets']} onsets both find: model {ms(both['median_ms'])}, "
                     f"baseline {ms(both['reference_median_ms'])} "
                     f"({both['timed_alike']} timed alike)")
    chance = result.get("onset_chance")
    if chance:
        m, b = (result[k]["onset_f1@50ms"] for k in ESTIMATORS)
        cm, cb = (chance[k]["onset_f1@50ms"] for k in ESTIMATORS)
        lines.append(f"onset F1@50ms out of sync (true onsets moved ¼, ½, ¾ of each clip): "
                     f"model {cm:.3f}, baseline {cb:.3f}; above it: model {m - cm:+.3f}, "
                     f"baseline {b - cb:+.3f}")
    refs = result.get("curve_references")
    if refs:
        def row(x: dict[str, float]) -> str:
            return (f"E-L1 {x['e_l1_tfoley']:.4f} / {x['e_l1_videofoley']:.4f}, acc@1/5/10 "
                    f"{x['acc@1']:.3f} / {x['acc@5']:.3f} / {x['acc@10']:.3f}")

        fit = refs["level_fitted_baseline"]
        lines.append(f"curve references (E-L1 T-Foley / Video-Foley): silence {row(refs['silence'])}")
        lines.append(f"  baseline with gain {fit['gain']:.4g} and floor {fit['floor']:.4g} fitted "
                     f"on these clips (an oracle): {row(fit)}")
        lines.append("  model − it: " + ", ".join(
            f"{k} {_signed(d.get('difference'))} {d['verdict']}"
            for k, d in refs["model_minus_level_fitted_baseline"].items()))
    if result.get("by_frame_rate"):
        lines.append(f"{'by frame rate':<24}{'clips':>6}{'onsets':>8}   "
                     "F1@50ms model / baseline   recall@100ms model / baseline")
        for r in result["by_frame_rate"]:
            m, b = r["model"], r["baseline"]
            lines.append(f"{r['frame_rate']:<24}{r['clips']:>6}{r['true_onsets']:>8}   "
                         f"{m['onset_f1@50ms']:.3f} / {b['onset_f1@50ms']:.3f}{'':<14}"
                         f"{m['onset_recall@100ms']:.3f} / {b['onset_recall@100ms']:.3f}")
    if diff:
        lines.append("CI: the 2.5–97.5 percentiles of the difference over "
                     f"{em.BOOTSTRAP_DRAWS} resamplings of the clips, the same clips for both "
                     "(errors in ms; lower E-L1 and onset error are better)")
    return "\n".join(lines)
