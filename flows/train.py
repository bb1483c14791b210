"""`foley train envelope`: the RMS-Mapper (models/rms_mapper.py) trained on a dataset folder.

Data: a folder written by `tasks.dataset` (`foley dataset procedural|videos`): one npz per clip
with the picture's features and the 16 kHz sound of the same span. Inputs are
`models.v2a_inputs.frame_inputs`, targets `models.rms_targets` (the one target function).
Training uses random crops of `crop_s` seconds; a fixed 10 % of the training clips (by name
hash) is the validation set that picks the best epoch. The held-out split is never read here.

Resumable: after every epoch the model, optimizer, scheduler, RNG states and the curves so far
are written (atomically) to OUT/train_state.pt with what determines the run (the data, its
clips, the options: flows/train_checks.py); running the same command again continues from
there, and a rerun that differs is refused before anything is written. One run at a time
trains into a folder (a lock on OUT, which a calibration writing into the folder also
takes). The best epoch's model is OUT/rms_mapper_<preset>.safetensors (config, input
statistics and the training record embedded from the first epoch on, `complete` false
until the run ends; then the onset calibration, the contact scorer and the training summary).
The contact scorer (`models.contact_scorer`: which tracked contacts sound) is fitted after
the last epoch on a calibration set of clips the network never trained on (`calibration`),
else on the validation clips; `calibrate_checkpoint` refits it on an existing checkpoint.

Fine-tuning (`init`): the run starts from an existing checkpoint — the shipped one, say — and
adapts it to a studio's own material (`foley dataset videos` over its past reels with their
Foley or production tracks), with a lower peak learning rate and fewer epochs
(models/README.md, "Real footage": 30 epochs at 5e-4, batch 8, on 39 five-second windows of a
film take under a minute). Curves are published as
Prefect artifacts (a table per epoch, the summary as markdown) and drawn to OUT/curves.png;
each finished epoch is a line of the flow run's log (`run_log`), so the Prefect UI shows the
run's progress as the CLI's bar does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.train_checks import (
    CROP_S, STATE, TrainingError, calibration_folder, calibration_inputs, check_resume,
    checkpoint_name, is_validation, out_lock, prepare_calibration, prepare_run,
)
from models import curve_events, rms_targets, v2a_inputs
from models import rms_mapper as mapper
from tasks.store import atomic_write

ONSET_WEIGHT = 3.0  # the onset term is ~20× smaller than the cross-entropy


@dataclass
class Example:
    name: str
    inputs: np.ndarray  # (T_in, D) float32 at v2a_inputs.IN_RATE_HZ
    classes: np.ndarray  # (T,) int64 at rms_targets.RATE_HZ
    rms: np.ndarray  # (T,) float32 linear RMS (the target before µ-law)
    onsets: list[float] = field(default_factory=list)  # true onsets (s)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # for calibrating events
    tracked: list[dict] = field(default_factory=list)  # the motion tracker's events

    def onset_target(self) -> np.ndarray:
        """The onset head's target on the class frames (`rms_targets.onset_target`)."""
        return rms_targets.onset_target(self.onsets, len(self.classes))


def load_examples(data: Path, split: str, contacts: bool, all_features: bool = False
                  ) -> list[Example]:
    """Every clip of `split` in the dataset folder as model inputs and targets, with the
    motion tracker's events (calibration fuses them; with `contacts` the inputs carry them too,
    `v2a_inputs` block D). The picture features are kept for the clips calibration reads: the
    validation clips, or every clip with `all_features`."""
    from rich.console import Console
    from rich.progress import track

    from models import motion_baseline
    from tasks.dataset import clip_entries, iter_clips

    out = []
    clips = iter_clips(data, split=split)
    for _ in track(range(len(clip_entries(data, split))),
                   description=f"reading {data.name} ({split})", console=Console(stderr=True)):
        try:  # a clip cut short or damaged on disk: its file and what to do, not a traceback
            clip = next(clips)
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
        rms = rms_targets.rms_target(clip.audio16k, rms_targets.SR)
        duration = float(clip.features["n_frames"]) / float(clip.features["fps"])
        tracked = motion_baseline.estimate_envelope(clip.features, shot=clip.name,
                                                    duration_s=duration, motion=True)["events"]
        inputs = v2a_inputs.model_inputs(clip.features, tracked if contacts else None)
        out.append(Example(clip.name, inputs.astype(np.float32),
                           rms_targets.mu_encode(rms).astype(np.int64), rms.astype(np.float32),
                           [float(e["t"]) for e in clip.onsets],
                           clip.features if all_features or is_validation(clip.name) else {},
                           tracked))
    return out


def input_stats(examples: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    """`v2a_inputs.input_stats` of the training clips, std floored at 1e-3 so a near-constant
    input is not blown up."""
    mean, std = v2a_inputs.input_stats([e.inputs for e in examples])
    return mean, np.maximum(std, 1e-3)


def _batch(examples: list[Example], rng: np.random.Generator, crop_steps: int, up: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random crops: inputs (B, L, D), smoothed labels (B, up·L, C), onset targets (B, up·L),
    mask (B, up·L)."""
    d = examples[0].inputs.shape[1]
    b = len(examples)
    x = np.zeros((b, crop_steps, d), np.float32)
    y = np.zeros((b, up * crop_steps, rms_targets.N_CLASSES), np.float32)
    o = np.zeros((b, up * crop_steps), np.float32)
    m = np.zeros((b, up * crop_steps), np.float32)
    for i, e in enumerate(examples):
        n_in = len(e.inputs)
        s0 = int(rng.integers(0, max(1, n_in - crop_steps + 1)))
        xi = e.inputs[s0:s0 + crop_steps]
        x[i, :len(xi)] = xi
        ci = e.classes[up * s0: up * (s0 + crop_steps)]
        y[i, :len(ci)] = rms_targets.smooth_labels(ci)
        o[i, :len(ci)] = e.onset_target()[up * s0: up * (s0 + crop_steps)]
        m[i, :len(ci)] = 1.0
    return x, y, o, m


def total_loss(logits: Any, onset: Any, y: Any, o: Any, m: Any) -> tuple[Any, float]:
    """Cross-entropy of the model's class logits plus ONSET_WEIGHT × the onset head's loss
    (if the model has one, `onset` not None); also the onset term alone (0 without a head)."""
    logits = v2a_inputs.align(logits, y.shape[1], axis=1)
    loss = mapper.loss(logits, y, m)
    if onset is None:
        return loss, 0.0
    term = mapper.onset_loss(v2a_inputs.align(onset, y.shape[1], axis=1), o, m)
    return loss + ONSET_WEIGHT * term, term.item()


def evaluate_loss(model: Any, examples: list[Example]) -> tuple[float, float, float]:
    """Mean loss, mean onset term and E-L1 (T-Foley) of whole clips, one at a time (eval
    mode)."""
    import torch

    from models.envelope_metrics import e_l1_tfoley

    model.eval()
    losses, onset_terms, l1s = [], [], []
    with torch.no_grad():
        for e in examples:
            n = len(e.classes)
            y = torch.from_numpy(rms_targets.smooth_labels(e.classes)[None])
            o = torch.from_numpy(e.onset_target()[None])
            logits, onset = model(torch.from_numpy(e.inputs[None]))  # one forward pass
            loss, term = total_loss(logits, onset, y, o, torch.ones(1, n))
            losses.append(float(loss))
            onset_terms.append(term)
            probs = torch.softmax(v2a_inputs.align(logits[0], n), dim=-1).numpy()
            curve, _conf = rms_targets.decode_probs(probs)
            l1s.append(e_l1_tfoley(curve, e.rms))
    return float(np.mean(losses)), float(np.mean(onset_terms)), float(np.mean(l1s))


DETECTION_GRID = {"rise_db": (1.5, 3.0, 4.5, 6.0, 9.0), "min_peak_db": (-50.0, -45.0, -40.0)}
HEAD_GRID = {"track_threshold": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
             "own_threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)}  # 1.01: never


def calibrate(model: Any, trn: list[Example], val: list[Example]) -> dict[str, float]:
    """How this model's outputs become events. First the onset offset (median lag of the
    detected onsets behind the true ones on training clips: onset-head peaks, or the curve's
    half-way crossings for a model without the head); then the thresholds that give the best
    onset F1 at ±50 ms of the pass's own events (`models.v2a_envelope`) on the validation
    clips — never the held-out split. With an onset head: `track_threshold` and
    `own_threshold` (HEAD_GRID); without: the curve's `rise_db` and `min_peak_db`."""
    from models import v2a_envelope
    from models.envelope_metrics import OnsetCounts, onset_scores

    rate = rms_targets.RATE_HZ
    head = model.config.onset_head
    found, truth = [], []
    for e in trn:
        probs, onset = mapper.predict(model, e.inputs)
        if head:
            ons = curve_events.onset_peaks(v2a_inputs.align(onset, len(e.classes)), rate, 0.5)
        else:
            curve, conf = rms_targets.decode_probs(v2a_inputs.align(probs, len(e.classes)))
            ons = curve_events.events_from_curve(curve, rate, conf)
        found.append([ev["t"] for ev in ons])
        truth.append(e.onsets)
    offset = curve_events.calibrate_offset(found, truth)
    clips = []  # (truth, tracked contacts, model outputs) of each validation clip, once
    for e in val:
        clips.append((e.onsets, e.tracked, v2a_envelope.model_outputs(model, e.features, e.tracked)))

    def events(params: dict[str, float], base: list, out: tuple) -> list[dict[str, Any]]:
        _probs, curve, conf, onset = out
        if head:
            return v2a_envelope.fuse_onset_head(onset, curve, base, {"offset_s": offset, **params})
        ons = curve_events.events_from_curve(curve, rate, conf, offset_s=offset, **params)
        return v2a_envelope.fuse_onsets(ons, curve, conf, base, params["rise_db"])

    grid = HEAD_GRID if head else DETECTION_GRID
    (k1, v1), (k2, v2) = grid.items()
    best: dict[str, float] = {"onset_offset_s": offset, "val_onset_f1": -1.0}
    for a in v1:
        for b in v2:
            params = {k1: a, k2: b}
            total = None
            for true, base, out in clips:
                counts = OnsetCounts.of([ev["t"] for ev in events(params, base, out)], true)
                total = counts if total is None else total + counts
            f1 = onset_scores(total)["onset_f1@50ms"] if total is not None else 0.0
            if f1 > best["val_onset_f1"]:
                best.update(params, val_onset_f1=f1)
    return best


def scorer_metadata(model: Any, clips: list[Example], offset_s: float,
                    log: Any = None, prefer_recall: bool = False,
                    correct_timing: bool = False, recall_floor: bool = True) -> dict[str, Any]:
    """The contact scorer (`models.contact_scorer`) of `model`, fitted on `clips` — clips the
    network never trained on (a calibration set, or the validation clips) — as checkpoint
    metadata: {"selection": ..., "selection_report": out-of-fold onset P / R / F1}."""
    from models import contact_scorer, v2a_envelope
    from models.envelope_metrics import combine_onsets

    cands = []
    for e in clips:
        _probs, curve, _conf, onset = v2a_envelope.model_outputs(model, e.features, e.tracked)
        cands.append((contact_scorer.candidates(onset, curve, e.tracked, float(e.features["fps"]),
                                                offset_s), combine_onsets(e.onsets)))
    try:
        selection, report = contact_scorer.fit_selection(cands, offset_s, log=log,
                                                         prefer_recall=prefer_recall,
                                                         correct_timing=correct_timing,
                                                         recall_floor=recall_floor)
    except ValueError as exc:   # the clips' fault (too few contacts, one class): not a bug
        raise UnfittableSet(str(exc)) from exc
    return {"selection": selection.to_dict(), "selection_report": report}


class UnfittableSet(ValueError):
    """The contact scorer cannot be fitted on these clips (`fit_selection` refused them)."""


def calibrate_checkpoint(checkpoint: Path, data: Path, out: Path, *, log: Any = print,
                         prefer_recall: bool = False, correct_timing: bool = False,
                         recall_floor: bool = True) -> dict[str, Any]:
    """Fit the contact scorer of an existing checkpoint on every clip of the "train" split of
    `data` (a calibration set the checkpoint never trained on) and write the checkpoint with
    it to `out` (weights unchanged); `prefer_recall`: thresholds by the recall rule;
    `correct_timing`: kept contacts move by the lags learned; `recall_floor`: only thresholds
    that find at least as many onsets as the tracker alone (`contact_scorer.fit_selection`).
    Returns the selection report. TrainingError (`prepare_calibration`) for a checkpoint of a
    run that has not ended, a set too small or holding its training clips, an `out` that
    cannot be written or whose folder a training run or another calibration is writing into
    (the lock on it is held from reading the checkpoint to writing `out`); and for a set the
    scorer cannot be fitted on."""
    prepare_calibration(checkpoint, data, out)   # before the lock, as the CLI checks
    with out_lock(calibration_folder(out), "calibration"):
        # again, now that no run can rewrite the checkpoint before this writes `out`
        model, config, meta = calibration_inputs(checkpoint, data, out)
        clips = load_examples(data, "train", config.contact_inputs, all_features=True)
        log(f"calibrating on {len(clips)} clips of {data}"
            + (" — few: expect noisy thresholds; a few hundred clips fit well"
               if len(clips) < 100 else ""))
        try:
            fitted = scorer_metadata(model, clips, float(meta.get("onset_offset_s", 0.0)),
                                     log=log, prefer_recall=prefer_recall,
                                     correct_timing=correct_timing, recall_floor=recall_floor)
        except UnfittableSet as exc:   # the set's clips, not a bug: one line
            raise TrainingError(
                f"calibration set {data}: the contact scorer of {checkpoint} cannot be fitted "
                f"on its clips ({exc}); calibrate on another set (`foley dataset procedural "
                "CAL --clips 400 --seed 100000`)") from exc
        fitted["selection_report"]["data"] = str(Path(data).resolve())
        atomic_write(out, lambda p: mapper.save_checkpoint(model, config, p, {**meta, **fitted}))
    return fitted["selection_report"]


def train(data: Path, out: Path, *, preset: str = "tiny", epochs: int = 60,
          batch_size: int = 16, lr: float = 2e-3, crop_s: float = CROP_S, seed: int = 0,
          max_minutes: float | None = None, threads: int = 2, calibration: Path | None = None,
          init: Path | None = None, log: Any = print, publish: Any = None,
          progress: Any = None) -> dict[str, Any]:
    """Train (or resume) and return the summary (also embedded in the checkpoint). The
    contact scorer is fitted on `calibration` (a dataset folder of clips never trained on) when
    given, else on the validation clips. With `init` (an RMS-Mapper checkpoint of `preset`) the
    run fine-tunes it: its weights and input statistics are the start, and the summary records
    it (`fine_tune_start`). `log` gets one line per finished epoch (losses, validation E-L1,
    the best epoch so far) and the run's other news (resuming, the time budget spent, the
    scorer's fit). `progress(epochs done, epochs, the last epoch's row or None, best epoch or
    None)` is called as the run starts and after each epoch's state is written.
    TrainingError, before anything is written, for bad options or data, another run's state
    or lock in `out` (`prepare_run`); after, for a clip that cannot be read or a run that
    diverges."""
    import torch

    plan = prepare_run(data, out, preset=preset, epochs=epochs, batch_size=batch_size, lr=lr,
                       crop_s=crop_s, seed=seed, threads=threads, calibration=calibration,
                       init=init)   # before an hour of training, not after it
    torch.set_num_threads(threads)
    t_start = time.monotonic()
    config, started_from = plan.config, plan.started_from
    examples = load_examples(plan.data, "train", config.contact_inputs)
    val = [e for e in examples if is_validation(e.name)]
    trn = [e for e in examples if not is_validation(e.name)]
    torch.manual_seed(seed)
    model = mapper.build(config)
    if plan.base is None:
        mapper.set_input_stats(model, *input_stats(trn))
    else:   # fine-tune: the checkpoint's weights and the input statistics they were fitted to
        model.load_state_dict(plan.base.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=plan.steps_per_epoch)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best, best_epoch, start_epoch = math.inf, None, 0
    record = {  # what every checkpoint of the run says of it (`check_calibration_data` reads it)
        "preset": preset, "data": str(plan.data), "train_clips": len(trn), "val_clips": len(val),
        "clips_seen": sorted({e.name for e in trn + val}
                             | set((started_from or {}).get("clips_seen", []))),
        "init": {k: v for k, v in started_from.items() if k != "clips_seen"}
        if started_from else None,
        "seed": seed, "batch_size": batch_size, "lr": lr, "crop_s": crop_s, "epochs": epochs}
    state_path = out / STATE
    ckpt = out / checkpoint_name(preset)
    with out_lock(out):   # one run at a time; the folder exists from here on
        st = check_resume(out, plan)   # again, now that no other run can write it
        if st is not None:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            rng.bit_generator.state = st["rng"]
            torch.set_rng_state(st["torch_rng"])
            history, best, start_epoch = st["history"], st["best"], st["epoch"] + 1
            best_epoch = min(history, key=lambda h: h["val_loss"])["epoch"]
            log((f"resuming after epoch {start_epoch}" if start_epoch < epochs else
                 f"all {epochs} epochs done: calibrating again")
                + f" (best validation loss {best:.4f}, epoch {best_epoch})")
        if progress is not None:
            progress(start_epoch, epochs, None, best_epoch)
        for epoch in range(start_epoch, epochs):
            t0 = time.monotonic()
            train_loss = _train_epoch(model, opt, sched, trn, rng, batch_size,
                                      plan.steps_per_epoch, crop_s)
            val_loss, val_onset, val_l1 = evaluate_loss(model, val)
            row = {"epoch": epoch + 1, "train_loss": train_loss,
                   "val_loss": val_loss, "val_onset_loss": val_onset, "val_e_l1": val_l1,
                   "lr": float(sched.get_last_lr()[0]), "seconds": time.monotonic() - t0}
            if not (math.isfinite(row["train_loss"]) and math.isfinite(val_loss)):
                raise TrainingError(
                    f"training diverged at epoch {epoch + 1} (training loss "
                    f"{row['train_loss']:.4g}, validation loss {val_loss:.4g}): lower --lr "
                    f"(this run's is {lr:g}) and run again"
                    + (f", into another --out (or remove {out}: it holds this run's first "
                       f"{epoch} epochs)" if epoch else ""))
            history.append(row)
            if val_loss < best:  # both heads' objectives; E-L1 alone would ignore the head
                best, best_epoch = val_loss, epoch + 1
                atomic_write(ckpt, lambda p: mapper.save_checkpoint(
                    model, config, p, {"epoch": epoch + 1, "val_loss": val_loss,
                                       "val_e_l1": val_l1, "training": {
                                           **record, "epochs_run": epoch + 1,
                                           "complete": False}}))
            log(f"epoch {epoch + 1}/{epochs}: train {row['train_loss']:.4f} · val "
                f"{val_loss:.4f} (onsets {val_onset:.4f}) · val E-L1 {val_l1:.4f} · best "
                f"epoch {best_epoch} · {row['seconds']:.1f} s")
            atomic_write(state_path, lambda p: torch.save({
                "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "history": history, "best": best,
                "epoch": epoch, "run": plan.identity}, p))
            if progress is not None:
                progress(epoch + 1, epochs, row, best_epoch)
            plot_curves(history, out / "curves.png")
            if publish is not None:
                publish(history)
            if max_minutes is not None and time.monotonic() - t_start > max_minutes * 60:
                log(f"stopping after epoch {epoch + 1}: the {max_minutes:g}-minute budget is "
                    "spent")
                break
        return _finish(ckpt, out, record, history, best, trn, val, calibration, log)


def _train_epoch(model: Any, opt: Any, sched: Any, trn: list[Example],
                 rng: np.random.Generator, batch_size: int, steps: int, crop_s: float) -> float:
    """One epoch over the training clips in a random order, random crops of `crop_s`; the
    mean training loss."""
    import torch

    config = model.config
    up = int(round(config.out_rate_hz / config.in_rate_hz))
    crop_steps = int(round(crop_s * config.in_rate_hz))
    model.train()
    order = rng.permutation(len(trn))
    losses = []
    for b in range(steps):
        idx = order[b * batch_size:(b + 1) * batch_size]
        if len(idx) == 0:
            continue
        x, y, o, m = _batch([trn[i] for i in idx], rng, crop_steps, up)
        logits, onset = model(torch.from_numpy(x))
        loss, _term = total_loss(logits, onset, *map(torch.from_numpy, (y, o, m)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _finish(ckpt: Path, out: Path, record: dict[str, Any], history: list[dict[str, float]],
            best: float, trn: list[Example], val: list[Example], calibration: Path | None,
            log: Any) -> dict[str, Any]:
    """The end of a run: the best epoch's detection calibrated, its contact scorer fitted on
    `calibration` (else the validation clips), the checkpoint written with them and the
    summary (`complete`), which training.json also holds. TrainingError for clips the scorer
    cannot be fitted on."""
    best_model, config, meta = mapper.load_checkpoint(ckpt)
    detection = calibrate(best_model, trn, val)
    cal = load_examples(calibration, "train", config.contact_inputs, all_features=True) \
        if calibration is not None else val
    log(f"fitting the contact scorer on {len(cal)} clips"
        + (f" of {calibration}" if calibration is not None else " (validation)"))
    try:
        fitted = scorer_metadata(best_model, cal, detection["onset_offset_s"], log=log)
    except UnfittableSet as exc:   # the clips, not a bug: one line; the epochs are kept
        where = calibration or f"the validation clips of {record['data']}"
        raise TrainingError(
            f"{where}: the contact scorer cannot be fitted on these clips ({exc}); the "
            f"{len(history)} epochs run are kept: run the same command again with "
            "--calibration naming another set (it continues from them)") from exc
    fitted["selection_report"]["data"] = (str(calibration.resolve()) if calibration
                                          else "validation")
    summary = {
        **record, "epochs_run": len(history), "complete": True, "best_val_loss": best,
        "best_val_e_l1": meta["val_e_l1"], "best_epoch": meta["epoch"], "detection": detection,
        "selection": fitted["selection_report"],
        "train_minutes": round(sum(h["seconds"] for h in history) / 60, 1),
        "parameters": int(sum(p.numel() for p in best_model.parameters())),
        "history": history}
    epoch = {k: meta[k] for k in ("epoch", "val_loss", "val_e_l1")}  # not an earlier end's
    atomic_write(ckpt, lambda p: mapper.save_checkpoint(   # scorer: this one's, or none
        best_model, config, p, {**epoch, **detection, **fitted, "training": summary}))
    atomic_write(out / "training.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    return summary


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], label="validation")
    if any(h.get("val_onset_loss") for h in history):
        ax[0].plot(ep, [h.get("val_onset_loss", 0.0) for h in history], label="validation, onset head")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("loss (class CE + onset BCE)")
    ax[0].legend()
    ax[1].plot(ep, [h["val_e_l1"] for h in history], color="#c0392b")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation E-L1 (T-Foley)")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def artifact_key(preset: str, out: Path, what: str) -> str:
    """The Prefect artifact key of a run's `what` (curves, summary): one per --out folder
    (its name and a digest of its absolute path), in the lowercase letters, digits and dashes
    Prefect allows."""
    where = str(Path(out).resolve())
    name = re.sub(r"[^a-z0-9]+", "-", Path(where).name.lower()).strip("-")[:40]
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return f"train-envelope-{preset}-{name + '-' if name else ''}{digest}-{what}"


RUN_LOG = "foleyflow"   # prefect.flow_runs.foleyflow: the lines of `run_log`


def run_log(console: Any = None) -> Any:
    """`log` for `train` / `calibrate_checkpoint` inside a flow run: each line one INFO record
    of the run's log, which the Prefect API stores with the run (the UI shows a training run's
    epochs as they end), and printed by `console` if given (the CLI's, above its epoch bar),
    else by Prefect's console handler. The records come from a child of the run logger held
    at INFO: the CLI sets PREFECT_LOGGING_LEVEL to WARNING for a quiet console, and at that
    level the run logger drops INFO records before its API handler sees them. A line
    `console` prints is marked, and `_ExpectedStops` keeps Prefect's console from printing
    it again."""
    from prefect import get_run_logger

    logger = get_run_logger().getChild(RUN_LOG)
    logger.setLevel(logging.INFO)
    shown = {"shown_on_console": console is not None}

    def line(message: str) -> None:
        logger.info(message, extra=shown)
        if console is not None:
            console(message)

    return line


class _ExpectedStops(logging.Filter):
    """Keeps the console to the CLI's own lines: when a run is refused (TrainingError) or
    stopped (^C, SIGTERM), Prefect's traceback and its "Crash detected!" stay in the flow
    run's log (the Prefect API / UI); a line of `run_log` the CLI printed itself is not
    printed again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "shown_on_console", False):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (TrainingError, KeyboardInterrupt)) \
                or type(exc).__name__ == "TerminationSignal":
            return False
        return not record.getMessage().startswith("Crash detected!")


def quiet_expected_stops_on_console() -> None:
    """Install `_ExpectedStops` on the console handlers (once per process): for the CLI,
    which reports refusals and stops itself."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and \
                not isinstance(handler, logging.FileHandler) and \
                not any(isinstance(f, _ExpectedStops) for f in handler.filters):
            handler.addFilter(_ExpectedStops())


def train_envelope_flow(log: Any = None, progress: Any = None) -> Any:
    """The Prefect flow around `train` (built on demand: importing this module stays cheap).
    `train`'s lines — one per finished epoch — go to the flow run's log (`run_log`) and to
    `log`, the CLI's console, which prints them above `progress`, its epoch bar."""
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    @flow(name="train-envelope", log_prints=True)
    def train_envelope(data: str, out: str, preset: str = "tiny", epochs: int = 60,
                       batch_size: int = 16, lr: float = 2e-3, crop_s: float = CROP_S,
                       seed: int = 0, max_minutes: float | None = None,
                       threads: int = 2, calibration: str | None = None,
                       init: str | None = None) -> dict[str, Any]:
        """Train the RMS-Mapper on a dataset folder; resumable from OUT/train_state.pt."""
        def publish(history: list[dict[str, float]]) -> None:
            create_table_artifact([{k: round(v, 5) for k, v in h.items()} for h in history],
                                  key=artifact_key(preset, Path(out), "curves"),
                                  description="Training curves, one row per epoch")

        summary = train(Path(data), Path(out), preset=preset, epochs=epochs,
                        batch_size=batch_size, lr=lr, crop_s=crop_s, seed=seed,
                        max_minutes=max_minutes, threads=threads,
                        calibration=Path(calibration) if calibration else None,
                        init=Path(init) if init else None, log=run_log(log),
                        publish=publish, progress=progress)
        tuned = f", fine-tuned from `{init}`" if init else ""
        create_markdown_artifact(
            f"# RMS-Mapper `{preset}`{tuned}\n\nbest validation E-L1 "
            f"{summary['best_val_e_l1']:.4f} after {summary['epochs_run']} epochs "
            f"({summary['train_minutes']} min) on {summary['train_clips']} clips; onset offset "
            f"{summary['detection']['onset_offset_s'] * 1000:.1f} ms.\n\n"
            + selection_markdown(summary.get("selection")) + "\n\nCheckpoint: "
            f"`{Path(out) / checkpoint_name(preset)}`; curves: `{Path(out) / 'curves.png'}`",
            key=artifact_key(preset, Path(out), "summary"), description="Training summary")
        return {k: v for k, v in summary.items() if k != "history"}

    return train_envelope


def selection_markdown(report: dict[str, Any] | None) -> str:
    """The contact scorer's fit, for a Prefect artifact."""
    if not report:
        return "Contact scorer: none (no clips to fit on); the onset head's thresholds decide."
    text = (f"Contact scorer fitted on {report['clips']} clips of {report.get('data', '?')} "
            f"(per frame-rate band: {report.get('band_clips')}): out-of-fold onset F1 @ ±50 ms "
            f"{report['oof_onset_f1']:.3f} (P {report['oof_onset_precision']:.3f} / "
            f"R {report['oof_onset_recall']:.3f}).")
    choices = report.get("band_choices")
    if not choices:
        return text
    from models.contact_scorer import band_names

    rows = [f"| {name} | {n} | {c['thresholds'][0]:.2f} / {c['thresholds'][1]:.2f} | "
            f"{c['f1']:.3f} / {c['recall']:.3f} | {c['best_f1']:.3f} / {c['best_f1_recall']:.3f}"
            f" | {c['f1_se']:.3f} | "
            + (f"{c['tracker_recall']:.3f} |" if "tracker_recall" in c else "— |")
            for name, n, c in zip(band_names(), report.get("band_clips", []), choices)]
    return "\n".join([text, "", f"Thresholds per frame-rate band: {report['threshold_rule']}.",
                      "",
                      "| band | clips | contact / peak threshold | F1 / recall | best F1 / its "
                      "recall | standard error | the tracker's recall |",
                      "|---|---|---|---|---|---|---|", *rows,
                      *timing_markdown(report.get("timing"))])


def timing_markdown(timing: dict[str, Any] | None) -> list[str]:
    """The contact-time correction of a calibration report, as markdown lines."""
    if not timing:
        return []
    from models.contact_scorer import band_names

    names = band_names()
    lags = ", ".join(f"{names[b]} {kind} {lag:+.3f}" for b, kind, lag in timing["lags_frames"])
    rows = [f"| {name} | {b['contacts']} | {b['median_ms']:.2f} / {b['p90_ms']:.2f} | "
            f"{b['oof_median_ms']:.2f} / {b['oof_p90_ms']:.2f} |"
            for name, b in zip(names, timing["bands"]) if b["contacts"]]
    use = ("kept contacts move by them" if timing.get("applied")
           else "not applied (foley train calibrate --timing-correction applies them)")
    return ["", f"Contact times: true onsets fall after the tracker's by (frames) "
            f"{lags or 'nothing measurable'}; {use}. Corrected by these lags, per band, the "
            "onset error (ms, median / 90th percentile) of the timed contacts:", "",
            "| band | contacts | tracker | corrected, out of fold |", "|---|---|---|---|", *rows]


def calibrate_flow(log: Any = None) -> Any:
    """The Prefect flow around `calibrate_checkpoint` (built on demand); its lines go to the
    flow run's log (`run_log`) and to `log`, the CLI's console."""
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    @flow(name="calibrate-envelope", log_prints=True)
    def calibrate_envelope(checkpoint: str, data: str, out: str, prefer_recall: bool = False,
                           correct_timing: bool = False, recall_floor: bool = True
                           ) -> dict[str, Any]:
        """Fit a checkpoint's contact scorer on a calibration set (weights unchanged)."""
        report = calibrate_checkpoint(Path(checkpoint), Path(data), Path(out),
                                      log=run_log(log), prefer_recall=prefer_recall,
                                      correct_timing=correct_timing, recall_floor=recall_floor)
        create_markdown_artifact(f"# RMS-Mapper calibration\n\n{selection_markdown(report)}"
                                 f"\n\nCheckpoint: `{out}`", key="calibrate-envelope",
                                 description="Contact scorer fit")
        return report

    return calibrate_envelope


def summary_of(checkpoint: Path) -> dict[str, Any]:
    _model, config, meta = mapper.load_checkpoint(checkpoint)
    return {"config": asdict(config), **meta}
