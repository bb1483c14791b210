"""`foley dataset …`, `foley train envelope`, `foley eval envelope`: the learned envelope model's
data, training and evaluation (see models/README.md for the model card)."""
from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from models import SHIPPED  # the shipped checkpoints: the default of every --checkpoint(s)

dataset_app = typer.Typer(help="Build training / evaluation data: paired scenes and reels for "
                          "the envelope model, the judge corpus for `foley eval synth`.",
                          no_args_is_help=True)
train_app = typer.Typer(help="Train models (Prefect flows; resumable).", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate: the envelope model against the motion baseline (envelope), the diffusion synthesizer against the sampler (synth), the directions in a delivery or on rendered scenes (spatial).", no_args_is_help=True)

DEFAULT_SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"


def _need_dataset(folder: Path) -> None:
    if not (folder / "index.json").is_file():
        _fail(f"{folder} is not a dataset folder (no index.json): build one with "
              "`foley dataset procedural`")


Verify = Annotated[bool, typer.Option(
    "--verify", help="Read whole every clip this run would keep, checking each byte against "
                     "its checksum, and make again any that is damaged. Without it a rerun "
                     "checks each kept clip's keys, version and lengths, which is what an "
                     "interrupted or older build leaves wrong; damage on disk shows when "
                     "training reads the clip (it names the file).")]


@contextmanager
def _stopped_by_term(said: Callable[[], str] | None = None) -> Iterator[None]:
    """A dataset build stopped by ^C or SIGTERM (a scheduler or `kill` stopping the job) leaves
    an index of what is on disk (the builders' handler), says so, and exits 130 or 143 as a
    shell reports those signals; a rerun resumes. A second SIGTERM while the index is written
    is ignored. `said`: what to say instead (a training run: the epoch it stopped after)."""
    got: list[int] = []

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        got.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        before = signal.signal(signal.SIGTERM, stop)
        installed = True
    except ValueError:                  # not the main thread: signals are left as they are
        before, installed = None, False
    try:
        yield
    except KeyboardInterrupt:
        typer.secho(said() if said else "stopped: index.json lists what is on disk; run the "
                    "same command again to resume", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(128 + (got[0] if got else signal.SIGINT)) from None
    finally:
        if installed:                   # a handler not set from Python reads as None
            signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def file_in_the_way(path: Path) -> Path | None:
    """The nearest of `path` and the folders above it that exists, if it is a file: where an
    output folder (or a file's folder) cannot be made. None when that nearest one is a
    folder."""
    for at in (path, *path.parents):
        if at.exists():
            return None if at.is_dir() else at
    return None


@dataset_app.command("procedural")
def dataset_procedural(
    out: Annotated[Path, typer.Argument(help="Dataset folder to write (resumable).")],
    clips: Annotated[int, typer.Option(help="Number of clips.")] = 400,
    split: Annotated[str, typer.Option(help="train | heldout (unseen seeds, materials and "
                                       "frame rates).")] = "train",
    seed: Annotated[int, typer.Option(help="Seed of the first clip.")] = 0,
    sfx: Annotated[Path, typer.Option(help="Folder of recordings with catalog.csv.")] = DEFAULT_SFX,
    workers: Annotated[int, typer.Option(help="Processes.")] = 2,
    rates: Annotated[Optional[str], typer.Option(
        help="Only these of the split's frame rates, comma-separated (e.g. 60, or "
             "23.976,24): a calibration set for the material at hand. Default: all of the "
             "split's (train: 12, 15, 23.976, 24, 25, 29.97, 30, 60; heldout: 48, 50, "
             "59.94).")] = None,
    verify: Verify = False,
) -> None:
    """Render paired scenes (picture + physically timed sound from real recordings), compute
    the pass's features on their proxies, and store one npz per clip. Running it again with
    more --clips extends the set (clips already written are kept); with other --rates it
    renders again the clips it asks for, which are other scenes."""
    from models.paired_scenes import split_rates
    from tasks.dataset import build_procedural

    if split not in ("train", "heldout"):
        _fail(f"--split must be train or heldout, not {split!r}")
    if not (sfx / "catalog.csv").is_file():
        _fail(f"{sfx} has no catalog.csv: point --sfx at a folder of recordings with a catalog")
    wanted = None
    if rates:
        try:
            numbers = [float(r) for r in rates.split(",") if r.strip()]
        except ValueError:
            _fail(f"--rates {rates}: give frame rates as numbers, comma-separated (60 or "
                  "23.976,24)")
        try:
            wanted = split_rates(split, numbers)
        except ValueError as exc:
            _fail(f"--rates {rates}: {exc}")
    with _stopped_by_term():
        summary = build_procedural(out, n_clips=clips, split=split, seed=seed, workers=workers,
                                   sfx_dir=sfx, rates=wanted, verify=verify)
    _report_build(summary, out)


@dataset_app.command("videos")
def dataset_videos(
    videos: Annotated[Path, typer.Argument(help="Folder of videos that have sound (past reels "
                                           "with their Foley or production tracks).")],
    out: Annotated[Path, typer.Argument(help="Dataset folder to write (resumable).")],
    clip_s: Annotated[float, typer.Option(help="Window length in seconds.")] = 5.0,
    split: Annotated[str, typer.Option(help="Split to label the clips with.")] = "train",
    workers: Annotated[int, typer.Option(help="Processes.")] = 2,
    audio_stream: Annotated[int, typer.Option(
        help="Which audio stream of each video is the sound to learn from, counting from 0: "
             "a QuickTime of a past reel often carries the mix first and the Foley or effects "
             "on a later track (ffprobe lists them). Videos without it are skipped.")] = 0,
    stems: Annotated[Optional[str], typer.Option(
        help="Learn from sidecar stems instead of the video's audio: WAV / BWF files next to "
             "each video, named after it, then . _ - or a space, then anything holding this "
             "word (--stems foley takes R1_FOLEY_FS.wav and R1_FOLEY_PROPS.wav for R1.mov, "
             "summed, and leaves R1_MX.wav). A stem with a BWF time stamp is placed by it "
             "against the picture's start timecode; without one it starts with the picture.")] = None,
    onset_rise_db: Annotated[float, typer.Option(
        help="The training truth's onsets: an attack counts when its level rises at least "
             "this many dB above the 21 ms before it. 14 keeps the hits and footfalls the "
             "picture shows and leaves a rub's grain and a bounce's rattle; 6 is what "
             "foley eval synth hears as an attack (models/README.md, \"Real footage\"). A rerun "
             "with other onset settings reads the kept windows' onsets again from their "
             "stored sound, without recomputing the picture.")] = 14.0,
    onset_gap_ms: Annotated[float, typer.Option(
        help="Of attacks closer than this (ms), the training truth keeps the strongest: a heel "
             "then a toe is one footstep.")] = 150.0,
    onset_floor_dbfs: Annotated[float, typer.Option(
        help="Attacks quieter than this level (dBFS) are not onsets.")] = -40.0,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Remove the windows cut from VIDEOS of reels no longer in it (taken "
                        "out or renamed), files and index rows, and the windows of a folder "
                        "no longer there of a reel that moved into VIDEOS with its stems "
                        "exported again (the same picture, at a path that ends with its old "
                        "one). Other folders' windows and procedural clips stay. Off by "
                        "default: a reel missing from a half-mounted or half-copied folder "
                        "would take its windows with it.")] = False,
    verify: Verify = False,
) -> None:
    """Turn past reels into training pairs: the picture's features and the sound of the same
    span, in windows of --clip-s. The sound is the video's own (its first audio stream, or
    --audio-stream N), or its sidecar stems (--stems foley). A Foley or effects stem is the
    better teacher: the onsets of a full mix are partly music and dialogue, which the picture
    does not cause. Windows without sound are skipped, unreadable files fail alone; both are
    listed in the folder's index.json. Each window's onsets, where its sound starts, are read
    from its sound (--onset-rise-db, --onset-gap-ms, --onset-floor-dbfs): they teach the
    model's onset head and fit its contact scorer. Running it again resumes; with another
    sound source, split or --clip-s, or for a reel or stem exported again, added or gone, it
    cuts those videos again (no window of the earlier cut stays), with other onset settings it
    reads the windows' onsets again. One dataset folder may gather the reels of several
    folders: a reel whose path inside its folder is another folder's (two shows' R1.mov) fails
    alone rather than replace the other's windows; the folder moved elsewhere is the same
    reels, and its windows are kept. Cutting a folder inside or around one cut before (a
    show's folder after one of its reels' folders, or back) keeps the windows already cut,
    under the reels' paths in the folder cut now: nothing is computed again.

    Example, a show's past reels with their Foley stems next to them (R101.mov, R101_FOLEY.wav):
    foley dataset videos /mnt/show/reels data/show --stems foley"""
    from tasks.dataset import OnsetTruth, build_from_videos

    if not videos.is_dir():
        _fail(f"{videos} is not a folder")
    if stems is not None and audio_stream:
        _fail("--stems and --audio-stream both choose the sound: give one")
    try:
        truth = OnsetTruth(rise_db=onset_rise_db, min_gap_s=onset_gap_ms / 1000.0,
                           floor_dbfs=onset_floor_dbfs)
    except ValueError as exc:
        _fail(f"--onset-rise-db / --onset-gap-ms / --onset-floor-dbfs: {exc}")
    try:
        with _stopped_by_term():
            summary = build_from_videos(videos, out, clip_s=clip_s, workers=workers,
                                        split=split, audio_stream=audio_stream, stems=stems,
                                        onset_truth=truth, prune=prune, verify=verify)
    except ValueError as exc:           # the stems tag or stream number: the message names it
        _fail(str(exc))
    _report_build(summary, out)


def _report_build(summary: dict, out: Path) -> None:
    """One line of counts, a line per skipped / failed file or window (at most 10 each); exit
    2 when the run put nothing into the folder (a folder holding clips of earlier runs says
    so)."""
    relabelled = (f"{summary['relabelled']} with their onsets read again, "
                  if summary["relabelled"] else "")
    if summary["renamed"]:
        relabelled += f"{summary['renamed']} kept under their reels' new paths, "
    removed = f", {summary['removed']} of an earlier cut removed" if summary["removed"] else ""
    if summary["pruned"]:
        removed += f", {summary['pruned']} of reels no longer in the folder removed"
    typer.echo(f"dataset: {out}: {summary['written']} written, {relabelled}{summary['existing']} "
               f"already there, {len(summary['skipped'])} skipped, {len(summary['failed'])} "
               f"failed{removed} ({summary['wall_s']:.0f} s)")
    for key in ("failed", "skipped"):
        rows = summary[key]
        for r in rows[:10]:
            typer.echo(f"  {key}: {r['source']} ({r['name']}): {r['reason']}")
        if len(rows) > 10:
            typer.echo(f"  … {len(rows) - 10} more {key}: see {summary['index']}")
    if not (summary["written"] or summary["existing"] or summary["relabelled"]
            or summary["renamed"]):
        held = len(json.loads(Path(summary["index"]).read_text())["clips"])
        what = (f"nothing from this run went into {out} (it holds {held} clips of earlier runs)"
                if held else f"nothing to train on in {out}")
        _fail(f"{what}: every video or window was skipped or failed (reasons above)")


@dataset_app.command("judge")
def dataset_judge(
    out: Annotated[Path, typer.Argument(help="Folder to write the judge corpus to (recordings "
                                        "+ catalog.csv; a rerun fetches only what is "
                                        "missing).")],
    manifest: Annotated[Optional[Path], typer.Option(
        help="Curated list of package files (default: models/judge_corpus.csv).")] = None,
    debs: Annotated[Optional[Path], typer.Option(
        help="Folder holding the manifest's .deb files, for a machine without the Debian "
             "mirror (default: fetch them with apt-get download).")] = None,
    sfx: Annotated[Path, typer.Option(help="The synthesizer's training folder: files "
                                      "identical to one of its recordings are left "
                                      "out.")] = DEFAULT_SFX,
) -> None:
    """Build the corpus `foley eval synth --judge-corpus` trains its judge on: real recordings
    of footsteps, impacts, breaks and doors from Debian packages of free games, none of them in
    the synthesizer's training data (flows/judge_corpus.py). Each file is checked against the
    manifest's sha256; the packages' copyright files are kept under CREDITS/."""
    from flows.judge_corpus import MANIFEST, CorpusError, build

    if not (sfx / "catalog.csv").is_file():
        _fail(f"{sfx} has no catalog.csv: point --sfx at the synthesizer's training folder")
    if debs is not None and not debs.is_dir():
        _fail(f"--debs {debs} is not a folder")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(TextColumn("packages"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("packages", total=None)
        try:
            report = build(out, manifest=manifest or MANIFEST, sfx=sfx, debs=debs,
                           log=lambda m: console.print(m, markup=False, highlight=False),
                           progress=lambda done, total: bar.update(task, completed=done,
                                                                   total=total))
        except CorpusError as exc:
            _fail(str(exc))
    typer.echo(json.dumps(report, indent=1))


class _EpochBar:
    """The epoch bar of `foley train envelope` on stderr — epochs done, the last epoch's
    losses, the best epoch, time left — with the run's lines printed above it, and the epoch
    the run has reached, which a stop reports."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                                 TextColumn("{task.fields[losses]}"), TimeRemainingColumn(),
                                 console=self.console)
        self.task: int | None = None
        self.done, self.total = 0, 0

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def update(self, done: int, total: int, row: dict | None, best_epoch: int | None) -> None:
        self.done, self.total = done, total
        losses = (f"train {row['train_loss']:.4f} · val {row['val_loss']:.4f} · "
                  if row else "") + (f"best epoch {best_epoch}" if best_epoch else "")
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("epochs", total=total, completed=done,
                                               losses=losses)
        self.progress.update(self.task, completed=done, losses=losses)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()

    def stopped(self) -> str:
        self.close()
        if self.task is None:
            return "stopped before training began: run the same command again"
        if not self.done:
            return ("stopped in the first epoch: nothing to resume; run the same command again "
                    "to start")
        return (f"stopped after epoch {self.done} of {self.total}: run the same command again "
                "to resume")


@train_app.command("envelope")
def train_envelope(
    data: Annotated[Path, typer.Argument(help="Dataset folder (foley dataset …).")],
    out: Annotated[Path, typer.Option(help="Where the checkpoint, curves and resumable state "
                                      "go.")] = Path(".foley/train/envelope"),
    preset: Annotated[str, typer.Option(help="tiny (CPU, shipped) | base (GPU).")] = "tiny",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 60,
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop after the epoch that "
                                                         "passes this budget.")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads. Use 1 when other jobs share the cores: two threads then run 10× slower.")] = 2,
    calibration: Annotated[Optional[Path], typer.Option(
        help="Dataset folder of clips the model never trains on (e.g. `foley dataset "
             "procedural CAL --clips 400 --seed 100000`) to fit the contact scorer on; "
             "without it, the validation clips.")] = None,
    init: Annotated[Optional[Path], typer.Option(
        help="Fine-tune: start from this RMS-Mapper checkpoint (its weights and input "
             "statistics), e.g. models/checkpoints/rms_mapper_tiny.safetensors, instead of "
             "from scratch. For a studio's own reels; use a lower --lr and fewer --epochs "
             "(on 39 windows of a film: --lr 5e-4 --epochs 30 --batch-size 8).")] = None,
) -> None:
    """Train the RMS-Mapper (video → 125 Hz loudness classes) on a dataset folder, showing a
    bar over the epochs (the last one's losses, the best so far). Running the same command
    again resumes where it stopped (after ^C, a SIGTERM or --max-minutes) and, once every
    epoch is done, only recalibrates; a rerun with other options, or other clips in DATA,
    than the run in --out was started with is refused, naming what differs: train into
    another --out instead. One run at a time trains into an --out. After training, the
    contact scorer that decides which tracked contacts sound is fitted on --calibration (see
    `foley train calibrate`).

    Fine-tuning (--init) adapts a trained checkpoint to a studio's material: build pairs from
    past reels with their Foley or production tracks (`foley dataset videos REELS DATA
    --split train`), keep some reels apart for --calibration, and train from the shipped
    checkpoint. Judge the result with `foley eval envelope` on reels kept apart, by its
    onset F1 above `onset_chance`: on Big Buck Bunny, whose truth is the film's full mix,
    fine-tuning raised onset F1 from 0.13 to 0.41, all of it by sounding more events — above
    chance it reads no more than before, and less than the motion baseline
    (models/README.md, "Real footage")."""
    from flows.cli import _prefect_defaults

    if preset not in ("tiny", "base"):
        _fail(f"--preset must be tiny or base, not {preset!r}")
    for folder in (data, calibration):
        if folder is not None:
            _need_dataset(folder)
    from flows.train import TrainingError, prepare_run, quiet_expected_stops_on_console

    try:  # before Prefect starts: a refusal is one line, and nothing is written
        prepare_run(data, out, preset=preset, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, threads=threads, calibration=calibration, init=init)
    except TrainingError as exc:
        _fail(str(exc))
    _prefect_defaults()
    from flows.train import train_envelope_flow

    bar = _EpochBar()
    run = train_envelope_flow(log=bar.log, progress=bar.update)
    quiet_expected_stops_on_console()
    try:
        with _stopped_by_term(bar.stopped):
            summary = run(str(data), str(out), preset=preset, epochs=epochs,
                          batch_size=batch_size, lr=lr, seed=seed,
                          max_minutes=max_minutes, threads=threads,
                          calibration=str(calibration) if calibration else None,
                          init=str(init) if init else None)
    except TrainingError as exc:   # found only as it reads or trains: a damaged clip, divergence
        bar.close()
        _fail(str(exc))
    finally:
        bar.close()
    typer.echo(json.dumps(summary, indent=1))


@train_app.command("calibrate")
def train_calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="RMS-Mapper checkpoint (.safetensors).")],
    data: Annotated[Path, typer.Argument(help="Calibration set: a dataset folder of clips the "
                                         "checkpoint never trained on.")],
    out: Annotated[Optional[Path], typer.Option(help="Where the calibrated checkpoint goes "
                                                "(default: replace CHECKPOINT).")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    prefer_recall: Annotated[bool, typer.Option(
        "--prefer-recall", help="Of the threshold pairs within one standard error of the best "
        "F1, take the one that misses fewest onsets (more false events to delete in review, "
        "fewer missed ones to place by hand).")] = False,
    timing_correction: Annotated[bool, typer.Option(
        "--timing-correction", help="Move kept contacts by the lag learned per frame-rate "
        "band and kind (times footfalls at 40 fps and over better; the median error of all "
        "onsets was higher on validation and held-out clips, see "
        "models/rms_mapper_rounds.md, round 7).")] = False,
    recall_floor: Annotated[bool, typer.Option(
        "--recall-floor/--no-recall-floor", help="Only threshold pairs that find, out of "
        "fold, at least as many onsets as the tracker alone (every contact kept) in the "
        "band: the scorer removes false events without missing more.")] = True,
) -> None:
    """Fit a checkpoint's contact scorer on a calibration set, weights unchanged.

    The motion tracker proposes contacts; the scorer (`models/contact_scorer.py`, a small
    classifier over the onset head's response, the loudness curve's rise, the tracker's view of
    the contact — where it is, how the object moved before and after — and the frame rate)
    decides which of them sound and which of the onset head's own peaks to add (for those,
    also whether they fall in the rhythm of the contacts around them). It is fitted on every
    clip of DATA's train split. Its two thresholds are chosen per frame-rate band on
    out-of-fold scores (5 folds by clip) for the best onset F1 at ±50 ms among the pairs
    whose recall is at least the tracker's own (--no-recall-floor: among all pairs), or with
    --prefer-recall for the fewest misses among those within one standard error of it. It
    also measures how late true onsets fall after the tracker's contact times, in frames, per
    frame-rate band and tracker kind (a foot settling into a step looks stopped a little
    before it lands), and with --timing-correction moves kept contacts by it. Prints the fit:
    out-of-fold P / R / F1; per band, the pair chosen with its F1 and recall next to the best
    F1's; the lags and the onset error of the timed contacts before and after correcting
    them, out of fold. Build the set from seeds the
    model never saw, e.g. `foley dataset procedural CAL --clips 400 --split train --seed
    100000`, and for 40 fps material and over add clips at 60 fps (`--rates 60`).

    Refused: a set of fewer than 4 clips, or holding clips the checkpoint trained on (or the
    one it was fine-tuned from); and the checkpoint a training run writes at its best epoch
    before the run has ended (its training record says "complete": false): that run
    replaces it as it resumes, and fits the scorer itself when it ends — finish it first
    with the same `foley train envelope` command. Refused too while a training run or another
    calibration writes into the folder of --out (one at a time writes a folder, as with
    `foley train envelope`)."""
    import torch

    from flows.cli import _prefect_defaults
    from flows.train import TrainingError, calibrate_flow, prepare_calibration
    from flows.train import quiet_expected_stops_on_console

    if threads < 1:
        _fail(f"--threads {threads}: give 1 or more")
    try:  # before Prefect starts: a refusal is one line, not a failed flow run
        prepare_calibration(checkpoint, data, out or checkpoint)
    except TrainingError as exc:
        _fail(str(exc))
    torch.set_num_threads(threads)
    _prefect_defaults()
    run = calibrate_flow(log=lambda line: typer.echo(line, err=True))
    quiet_expected_stops_on_console()
    try:
        report = run(str(checkpoint), str(data), str(out or checkpoint), prefer_recall,
                     timing_correction, recall_floor)
    except TrainingError as exc:   # found as it runs: a damaged clip, clips it cannot fit on
        _fail(str(exc))
    typer.echo(json.dumps(report, indent=1))


@eval_app.command("envelope")
def eval_envelope(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (.safetensors).")] = SHIPPED
    / "rms_mapper_tiny.safetensors",
    split: Annotated[str, typer.Option(help="Split to evaluate on: heldout, real (`foley "
                                       "dataset videos`), or val (the validation clips of the "
                                       "train split, what training chooses on).")] = "heldout",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also draw the model − baseline "
                                              "differences with their intervals as a forest "
                                              "plot (PNG) here.")] = None,
) -> None:
    """Score the model and the motion baseline side by side: E-L1 (T-Foley and Video-Foley),
    acc@1/5/10, onset precision/recall/F1 at ±25/50/100 ms, onset error median and p90.

    Each metric also gets the model's difference from the baseline with its 95 % interval
    over 1,000 resamplings of the clips (the same clips for both) and a verdict: better,
    worse, or no clear difference — whether the clips are enough to tell the two apart.
    Then where the model's onset error comes from: its onsets at the tracker's contact times
    and those its onset head adds alone, each with its median, and both estimators' median on
    the onsets both find. Then the chance control (onset_chance): each estimator's F1 at
    ±50 ms against the true onsets moved by ¼, ½ and ¾ of each clip — what as many events
    score out of step with the picture, far from zero where the sound is dense with onsets
    (a film's full mix); only the F1 above it is read from the picture. Last, F1 at ±50 ms
    and recall at ±100 ms of both per frame-rate
    band (under 20, 20–40, 40 fps and over): the tracker alone resolves fewer contacts the
    lower the rate, so that is where the model can find more.

    Bad input is one line naming it, exit code 2: a checkpoint `foley run --envelope model`
    would refuse (damaged, of another kind, NaN weights, a contact scorer it cannot use), a
    split with no clips, a damaged clip (with the `foley dataset` command that makes it again)
    — all checked before any clip is scored, but for damage deep inside a clip's file, found
    when it is read."""
    from flows.evaluate import EvalInputError, evaluate

    if not checkpoint.is_file():
        _fail(f"no checkpoint at {checkpoint}: give an RMS-Mapper checkpoint (.safetensors) "
              "with --checkpoint, or train one with `foley train envelope`")
    _need_dataset(data)
    if plot is not None and not plot.parent.is_dir():
        _fail(f"--plot {plot}: folder {plot.parent} does not exist; create it or pick another")
    try:  # the checkpoint, the index and every clip's file are checked before any scoring
        result = evaluate(data, checkpoint, split=split,
                          log=(lambda _m: None) if as_json else typer.echo)
    except EvalInputError as exc:
        _fail(str(exc))
    if plot is not None:
        from tasks.plots import plot_comparison

        plot_comparison(result["model_minus_baseline"], plot,
                        title=f"{checkpoint.name} − motion baseline, {result['clips']} clips "
                        f"of {data.name} ({split})")
        if not as_json:
            typer.echo(f"forest plot: {plot}")
    if as_json:
        from models.envelope_metrics import json_safe

        typer.echo(json.dumps(json_safe(result), indent=1, allow_nan=False))
