"""What `foley train envelope` and `foley train calibrate` (flows/train.py) check before they
write anything: the options, the dataset's index, the checkpoints they read, the clips a
calibration set may hold, the resumable state a rerun continues and the lock on the folder
they write into (a run's --out; a calibration's, the folder of its --out).

Every refusal is a `TrainingError` whose message names the file or option, what it holds and
what to do; the CLI prints it as one line (exit 2). The CLI runs these checks before Prefect
starts, and `train` / `calibrate_checkpoint` run them again, so a caller of the library gets
the same refusals.

A run's state (OUT/train_state.pt) records what determines the run (`run_identity`: the data
folder, its training clips, preset, epochs, batch size, learning rate, seed, crop, the
checkpoint it started from). A rerun that differs in any of them would continue another run's
optimizer and one-cycle schedule on other data, so it is refused, naming each difference.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE = "train_state.pt"
LOCK = ".train.lock"        # flock'ed by the run training into the folder
VAL_FRACTION = 0.1
MIN_TRAINING_CLIPS = 4
MIN_CALIBRATION_CLIPS = 4   # the contact scorer's folds need a few clips (hundreds fit well)
CROP_S = 4.0                # seconds of each clip in a training batch (not a CLI option)


class TrainingError(ValueError):
    """Bad input to a training or calibration run, or a run that cannot go on; the message
    names the file or option and what to do (the CLI prints it alone, exit 2)."""


def checkpoint_name(preset: str) -> str:
    return f"rms_mapper_{preset}.safetensors"


def is_validation(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VAL_FRACTION


def dataset_entries(data: Path, split: str | None) -> list[dict]:
    """The index entries of `split` (None: all) in the dataset folder `data` (tasks.dataset's
    index.json); TrainingError if the folder has no index or it cannot be read."""
    index = Path(data) / "index.json"
    if not index.is_file():
        raise TrainingError(f"{data} is not a dataset folder (no index.json): build one with "
                            "`foley dataset procedural` or `foley dataset videos`")
    try:
        clips = json.loads(index.read_text())["clips"]
        entries = [e for e in clips if split is None or e["split"] == split]
        if not all(isinstance(e["name"], str) for e in entries):
            raise ValueError("a clip without a name")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{index} is not a readable dataset index ({exc}): run the "
                            f"`foley dataset …` command that built {data} again, which writes "
                            "the index anew from the clips on disk") from exc
    return entries


def training_names(data: Path) -> list[str]:
    """The names of the train-split clips of `data` (training and validation), sorted;
    TrainingError if they are too few or leave no validation or no training clip."""
    entries = dataset_entries(data, None)
    names = sorted(e["name"] for e in entries if e["split"] == "train")
    if not names:
        splits = sorted({str(e["split"]) for e in entries})
        held = f" (its {len(entries)} clips are {' and '.join(splits)})" if entries else ""
        raise TrainingError(f"{data} has no train-split clips{held}; training reads only the "
                            f"train split: build training clips with `foley dataset procedural "
                            f"{data} --split train` or `foley dataset videos REELS {data} "
                            "--split train`")
    if len(names) < MIN_TRAINING_CLIPS:
        raise TrainingError(f"{data}: only {len(names)} training clips; add clips with `foley "
                            f"dataset procedural {data} --clips 400` (a few dozen at least)")
    val = [n for n in names if is_validation(n)]
    if not val or len(val) == len(names):
        raise TrainingError(f"{data}: its {len(names)} training clips leave "
                            f"{'no validation clip' if not val else 'nothing to train on'} "
                            f"(a fixed {VAL_FRACTION:.0%} is chosen by name hash); add clips — a "
                            "few dozen at least")
    return names


def read_checkpoint(path: Path, what: str, advice: str) -> tuple[Any, Any, dict[str, Any]]:
    """The RMS-Mapper checkpoint at `path` (model, config, metadata); TrainingError naming
    it — `what` gave it (an option, an argument) — with `advice` if it is missing, or
    with what stopped it loading if it is not one."""
    from models import rms_mapper as mapper

    if not Path(path).is_file():
        raise TrainingError(f"{what} {path}: no such checkpoint; {advice}")
    try:
        return mapper.load_checkpoint(Path(path))
    except Exception as exc:  # noqa: BLE001 - not safetensors, another kind, other weights
        raise TrainingError(f"{what} {path} is not a readable RMS-Mapper checkpoint ({exc}); "
                            f"{advice}") from exc


def fine_tune_start(init: Path, config: Any, out: Path | None = None
                    ) -> tuple[Any, dict[str, Any]]:
    """The network a fine-tuning run starts from — `init`, an RMS-Mapper checkpoint of the
    run's preset — and what the run records of it: the file (absolute), its sha256, the data
    it was trained on and the clips it saw (a fine-tuned checkpoint has seen those too, so
    `foley train calibrate` refuses them). TrainingError naming the file if it is missing,
    not a checkpoint, another preset's, or the one this run writes into `out`."""
    from models import SHIPPED
    from tasks.store import sha256_file

    init = Path(init)
    if out is not None and init.resolve() == (out / checkpoint_name(config.preset)).resolve():
        raise TrainingError(f"{init} is where this run writes its checkpoint: fine-tune into "
                            "another --out")
    base, base_config, meta = read_checkpoint(
        init, "--init", f"give --init an RMS-Mapper checkpoint to fine-tune (the shipped one "
        f"is {SHIPPED / checkpoint_name('tiny')}), or leave --init out to train from scratch")
    if base_config != config:
        raise TrainingError(f"{init} is a {base_config.preset!r} RMS-Mapper; fine-tune it with "
                            f"--preset {base_config.preset}")
    training = meta.get("training") or {}
    return base, {"checkpoint": str(init.resolve()),
                  "sha256": sha256_file(init),
                  "data": training.get("data"),
                  "clips_seen": list(training.get("clips_seen", []))}


def check_calibration_data(meta: dict[str, Any], data: Path, checkpoint: Path | str) -> None:
    """TrainingError if `data` holds clips the checkpoint (`meta`, its metadata) was trained or
    validated on (by the clip names its training summary lists — a procedural clip's name is
    its seed, so the same name is the same clip in any folder — or, for a summary without
    them, by the folder). `checkpoint` names it in the message."""
    training = meta.get("training") or {}
    names = {e["name"] for e in dataset_entries(data, "train")}
    seen = names & set(training.get("clips_seen", []))
    folders = [training.get("data"), (training.get("init") or {}).get("data")]
    same_folder = any(f and Path(f).resolve() == Path(data).resolve() for f in folders)
    if seen or same_folder:
        which = (f"{len(seen)} of its clips ({', '.join(sorted(seen)[:3])}"
                 f"{', …' if len(seen) > 3 else ''}) are" if seen else "it is")
        raise TrainingError(f"{data}: {which} what {checkpoint} was trained on; calibrate on "
                            "clips it never saw (e.g. `foley dataset procedural CAL --seed "
                            "100000`, beyond the training seeds)")


def check_training_calibration(data: Path, calibration: Path,
                               started_from: dict[str, Any] | None = None) -> None:
    """TrainingError if the calibration set is too small to fit the contact scorer on, or
    holds clips this run sees: those of the training set `data` (its "train" split: the
    training and validation clips) and, fine-tuning, those the checkpoint it starts from
    (`started_from`, `fine_tune_start`) was trained on."""
    check_calibration_set(calibration, "--calibration")
    seen = [e["name"] for e in dataset_entries(data, "train")]
    label = f"this run (the training set {data}"
    init = None
    if started_from:
        seen += started_from.get("clips_seen", [])
        init = {"data": started_from.get("data")}
        label += f", and {started_from['checkpoint']}, which it starts from"
    check_calibration_data({"training": {"data": str(data), "clips_seen": seen, "init": init}},
                           calibration, label + ")")


def check_calibration_set(data: Path, what: str) -> int:
    """The number of clips of the calibration set `data` (its train split); TrainingError if
    there are fewer than the contact scorer's fit needs."""
    n = len(dataset_entries(data, "train"))
    if n < MIN_CALIBRATION_CLIPS:
        raise TrainingError(f"{what} {data}: only {n} train-split clips; a calibration set "
                            f"needs at least {MIN_CALIBRATION_CLIPS} (a few hundred to be "
                            f"useful): build one with `foley dataset procedural {data} --clips "
                            "400 --seed 100000`")
    return n


def check_finished(meta: dict[str, Any], checkpoint: Path) -> None:
    """TrainingError if `checkpoint` is the best epoch so far of a run that has not ended: its
    detection and contact scorer are fitted when the run ends, and the run replaces the file
    when it resumes."""
    training = meta.get("training")
    unfinished = (training.get("complete") is False if training
                  else "epoch" in meta and "onset_offset_s" not in meta)  # before the record
    if unfinished:
        when = (f" at epoch {training['epochs_run']} of {training['epochs']}"
                if training and "epochs" in training else "")
        raise TrainingError(f"{checkpoint} was written{when} of a training run that has not "
                            "ended: finish the run first (the same `foley train envelope` "
                            "command resumes it; its end fits the contact scorer), then "
                            "calibrate the checkpoint it writes")


def check_calibration_out(out: Path) -> None:
    """TrainingError if the calibrated checkpoint cannot be written at `out`."""
    if out.is_dir():
        raise TrainingError(f"--out {out} is a folder: give the file to write "
                            "(e.g. calibrated.safetensors)")
    if not out.parent.is_dir():
        raise TrainingError(f"--out {out}: folder {out.parent} does not exist; create it or "
                            "pick another")


def prepare_calibration(checkpoint: Path, data: Path, out: Path
                        ) -> tuple[Any, Any, dict[str, Any]]:
    """The checks of `foley train calibrate` (`calibration_inputs`, then the lock on the
    folder it writes into: no run or other calibration writing there); returns the checkpoint
    (model, config, metadata)."""
    found = calibration_inputs(checkpoint, data, out)
    check_out_free(calibration_folder(out), "calibration")
    return found


def calibration_folder(out: Path) -> Path:
    """The folder whose lock a calibration writing `out` takes (absolute: a refusal names it)."""
    return Path(out).absolute().parent


def calibration_inputs(checkpoint: Path, data: Path, out: Path
                       ) -> tuple[Any, Any, dict[str, Any]]:
    """The checkpoint, the calibration set and where the calibrated checkpoint goes, checked
    in that order; returns the checkpoint (model, config, metadata)."""
    model, config, meta = read_checkpoint(
        checkpoint, "checkpoint", "give an RMS-Mapper checkpoint (`foley train envelope` "
        "writes OUT/rms_mapper_<preset>.safetensors)")
    check_finished(meta, checkpoint)
    check_calibration_set(data, "calibration set")
    check_calibration_data(meta, data, checkpoint)
    check_calibration_out(out)
    return model, config, meta


# ---------------------------------------------------------------- the run and its state


@dataclass
class RunPlan:
    """A training run as checked: the data folder (absolute), the names of its train-split
    clips, the preset's config, the fine-tuning start (`fine_tune_start`, or None), the
    run's identity (`run_identity`) and its optimizer steps per epoch."""

    data: Path
    names: list[str]
    config: Any
    base: Any
    started_from: dict[str, Any] | None
    identity: dict[str, Any]
    steps_per_epoch: int


def prepare_run(data: Path, out: Path, *, preset: str, epochs: int, batch_size: int,
                lr: float, seed: int, threads: int, calibration: Path | None,
                init: Path | None, crop_s: float = CROP_S) -> RunPlan:
    """Every check a training run passes before it writes anything: the options, the data,
    the checkpoint it fine-tunes, the calibration set, the state a rerun resumes (the same
    run, `check_resume`) and the lock on `out` (no other run training into it)."""
    from models import rms_mapper as mapper

    for name, value, ok in (("--epochs", epochs, epochs >= 1),
                            ("--batch-size", batch_size, batch_size >= 1),
                            ("--threads", threads, threads >= 1),
                            ("--lr", lr, math.isfinite(lr) and lr > 0),
                            ("crop_s", crop_s, math.isfinite(crop_s) and crop_s > 0)):
        if not ok:
            raise TrainingError(f"{name} {value}: give a positive number"
                                + (" (1 or more)" if isinstance(value, int) else ""))
    try:
        config = mapper.get_config(preset)
    except ValueError as exc:
        raise TrainingError(f"--preset: {exc}") from exc
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file: give a folder for the checkpoint, curves "
                            "and resumable state")
    names = training_names(data)
    base, started_from = fine_tune_start(init, config, out) if init is not None else (None, None)
    if calibration is not None:
        check_training_calibration(data, calibration, started_from)
    n_train = sum(not is_validation(n) for n in names)
    plan = RunPlan(Path(data).resolve(), names, config, base, started_from,
                   run_identity(data, names, preset=preset, epochs=epochs,
                                batch_size=batch_size, lr=lr, seed=seed, crop_s=crop_s,
                                started_from=started_from),
                   max(1, math.ceil(n_train / batch_size)))
    check_resume(out, plan)
    check_out_free(out)
    return plan


def run_identity(data: Path, names: list[str], *, preset: str, epochs: int, batch_size: int,
                 lr: float, seed: int, crop_s: float, started_from: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """What determines a run, as its state records it: a rerun that differs in any of these
    is another run (threads, the time budget and the calibration set are not among them)."""
    return {"data": str(Path(data).resolve()), "clips": sorted(names), "preset": preset,
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "crop_s": crop_s,
            "init": {k: started_from[k] for k in ("checkpoint", "sha256")}
            if started_from else None}


OPTIONS = {"init": "--init", "data": "DATA", "clips": "clips in DATA", "preset": "--preset",
           "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
           "crop_s": "crop_s", "steps": "--batch-size (and clips)"}  # as a refusal lists them


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def _difference(key: str, old: Any, new: Any) -> str:
    """One difference between a run's state and a rerun, in words: the old and new value."""
    if key == "clips":
        added = sorted(set(new) - set(old))
        gone = sorted(set(old) - set(new))
        what = "; ".join(s for s in (f"{len(added)} added: {_listed(added)}" if added else "",
                                     f"{len(gone)} gone: {_listed(gone)}" if gone else "") if s)
        return f"the training clips: {len(old)} then, {len(new)} now ({what})"
    if key == "init":
        def start(i: dict | None) -> str:
            if not i:
                return "from scratch"
            where = f"{i['checkpoint']} " if i.get("checkpoint") else ""
            return f"from the checkpoint {where}(sha256 {i['sha256'][:12]}…)"
        return f"it started {start(old)}, this one {start(new)}"
    if key == "data":
        return f"the data folder: {old} then, {new} now"
    if key == "steps":
        return (f"its one-cycle schedule takes {old} steps an epoch, this one {new} (another "
                "--batch-size, or other clips)")
    return f"{OPTIONS[key]} {old} then, {new} now"


def check_resume(out: Path, plan: RunPlan) -> dict[str, Any] | None:
    """The state in `out` a rerun continues (None if there is none: a new run); TrainingError
    if it is another run's (any `run_identity` field differs, each named with its old and new
    value), cannot be read, or has lost its checkpoint. Reads only."""
    import torch

    path = out / STATE
    if not path.is_file():
        return None
    try:
        st = torch.load(path, weights_only=False)
        old = st.get("run")
        if old is None:  # written before the identity: what it kept, and its schedule's steps
            old = {"preset": st["preset"], "epochs": st["epochs"],
                   "init": {"sha256": st["init"]} if st.get("init") else None,
                   "steps": st["sched"]["total_steps"] // st["epochs"]}
    except Exception as exc:  # noqa: BLE001 - truncated, not a state, another torch's pickle
        raise TrainingError(f"{path} is not a readable training state ({exc}): remove it to "
                            "start the run over, or train into another --out") from exc
    new = {**plan.identity, "steps": plan.steps_per_epoch}

    def same(key: str) -> bool:
        if key == "init":
            return (old[key] or {}).get("sha256") == (new[key] or {}).get("sha256")
        return old[key] == new[key]

    differ = [k for k in OPTIONS if k in old and k in new and not same(k)]
    if differ:
        names = [OPTIONS[k] for k in differ]
        same_ones = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1
                                 else names)
        raise TrainingError(
            f"{out} holds a run started with other inputs — "
            + "; ".join(_difference(k, old[k], new[k]) for k in differ)
            + f" — resume it with the same {same_ones}, or train into another --out (or "
            f"remove {out} to start over)")
    ckpt = out / checkpoint_name(plan.identity["preset"])
    if not ckpt.is_file():
        raise TrainingError(f"{out} holds a run's state but not its checkpoint {ckpt.name}: "
                            f"remove {path} to start over, or train into another --out")
    return st


# ---------------------------------------------------------------- the lock on --out

# What holds a folder's lock, as a refused command names it, and what the refused one can do
# instead: a training run holds its --out, a calibration the folder of the checkpoint it writes
# (which is a training run's --out when it replaces that run's checkpoint).
HOLDING = {"training": "another run is training into it",
           "calibration": "a calibration (`foley train calibrate`) is writing into it"}
INSTEAD = {"training": "train into another --out",
           "calibration": "give --out a file in another folder"}


@contextlib.contextmanager
def out_lock(out: Path, kind: str = "training") -> Iterator[None]:
    """Hold OUT/.train.lock (an exclusive flock the kernel releases when the process ends)
    while a run of `kind` (HOLDING) writes into the folder `out`, creating it; TrainingError
    if another run or calibration holds it. The lock file says who holds it, for the
    refusal."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise TrainingError(f"--out {out}: cannot write there ({exc.strerror})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(_held(out, fd, kind)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{kind}: process {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)


def check_out_free(out: Path, kind: str = "training") -> None:
    """TrainingError if a run or calibration holds the lock on the folder `out` now (a rerun
    started while it trains, a calibration into a folder a run trains into); `kind` is the
    one that would write there (what the refusal says to do instead)."""
    path = out / LOCK
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(_held(out, fd, kind)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _held(out: Path, fd: int, kind: str) -> str:
    """The refusal of a `kind` run when the lock on `out` is held: who holds it (the lock
    file's "kind: process … on host"; a bare "process …", from before calibrations took the
    lock, is a training run) and what to do."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    holding, _, holder = text.partition(": ")
    if holding not in HOLDING:
        holding, holder = "training", text
    return (f"{out}: {HOLDING[holding]}{f' ({holder})' if holder else ''}; let it finish or "
            f"stop it, or {INSTEAD[kind]}")
