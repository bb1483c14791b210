"""`foley train envelope` / `foley train calibrate` as a person runs them: refusals before
anything is written, resuming only the run that is in --out, stopping, one run or
calibration per folder, the training record in every checkpoint, each epoch in the flow run's
Prefect log, errors met as it runs as one line. Real (tiny) datasets written as `foley dataset`
writes them, from the bouncing-ball features and click sounds of the other model tests; real
runs of a few epochs of the tiny preset on CPU."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.train import (
    STATE, TrainingError, artifact_key, calibrate_checkpoint, checkpoint_name, is_validation,
    out_lock, train, train_envelope_flow,
)
from flows.train_checks import check_calibration_data
from models import rms_mapper
from tasks.dataset import DATASET_VERSION, clip_name, write_clip, write_index
from tasks.envelope import CHECKPOINT as SHIPPED_CHECKPOINT
from tests.test_envelope_eval import clicks
from tests.test_rms_mapper import _features

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def write_dataset(folder: Path, numbers: Iterable[int], split: str = "train") -> Path:
    """Clips of a ball that bounces once (`_features`, 2 s at 12–60 fps) with a click where it
    bounces, written as `foley dataset` writes them (npz per clip, index.json)."""
    for n in numbers:
        fps = (12.0, 24.0, 30.0, 60.0)[n % 4]
        contact = float(np.random.default_rng(n).uniform(0.6, 1.4))
        audio = clicks([contact], sr=16000, dur=2.0, seed=n)
        name = clip_name(n, split)
        meta = {"version": DATASET_VERSION, "source": "procedural", "name": name, "clip": n,
                "split": split, "kind": "bounce", "material": "wood", "fps": fps,
                "n_frames": int(round(2.0 * fps)), "duration_s": 2.0, "n_audio": len(audio),
                "audio_sr": 16000, "seed": n}
        write_clip(folder / f"{name}.npz", _features(fps, 2.0, contact), audio,
                   events=[{"t": contact, "kind": "impact"}], sustained=[],
                   onsets=[{"t": contact}], meta=meta)
    write_index(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve training clips, clip_00000 and clip_00001 the validation ones (by name hash)."""
    folder = write_dataset(tmp_path_factory.mktemp("data"), range(12))
    assert [n for n in range(12) if is_validation(clip_name(n, "train"))] == [0, 1]
    return folder


@pytest.fixture(scope="module")
def cal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibration set: six clips no run here (nor the shipped checkpoint) trains on."""
    return write_dataset(tmp_path_factory.mktemp("cal"), range(1000, 1006))


def envelope(data: Path, out: Path, *extra: str, **options: str) -> list[str]:
    """`foley train envelope` arguments: a 3-epoch run, batches of 4, `options` replacing."""
    chosen = {"--epochs": "3", "--batch-size": "4", "--threads": "1", **options}
    return ["train", "envelope", str(data), "--out", str(out),
            *[a for kv in chosen.items() for a in kv], *extra]


def refused(args: list[str]) -> str:
    """The one error line of a refused command (exit 2)."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_a_rerun_that_differs_from_the_run_in_out_is_refused_before_it_writes(
        tmp_path: Path, data: Path) -> None:
    """Another batch size, learning rate, seed or number of epochs, the data moved or clips
    added: each is one error naming the option or data with its old and new value (before,
    some of them left a run whose schedule crashed on every resume); the state is untouched
    and the same command then resumes the run to its end."""
    out = tmp_path / "run"
    first = train(data, out, epochs=3, batch_size=4, threads=1, max_minutes=0)
    assert first["epochs_run"] == 1
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    moved = shutil.copytree(data, tmp_path / "moved")
    more = write_dataset(shutil.copytree(data, tmp_path / "more"), (12, 13))
    for args, says in (
            (envelope(data, out, **{"--batch-size": "2"}), "--batch-size 4 then, 2 now"),
            (envelope(data, out, **{"--lr": "0.001"}), "--lr 0.002 then, 0.001 now"),
            (envelope(data, out, **{"--seed": "7"}), "--seed 0 then, 7 now"),
            (envelope(data, out, **{"--epochs": "5"}), "resume it with the same --epochs"),
            (envelope(moved, out), f"the data folder: {data} then, {moved} now"),
            (envelope(more, out), "the training clips: 12 then, 14 now (2 added: clip_00012, "
                                  "clip_00013)")):
        line = refused(args)
        assert says in line and "another --out" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = runner.invoke(app, envelope(data, out))
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 1" in res.output
    summary = json.loads((out / "training.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert summary["history"][:1] == first["history"]
    assert not list(out.glob(".*.partial"))   # every write went through a rename


def test_a_stopped_run_says_where_and_its_checkpoint_what_it_trained_on(
        tmp_path: Path, data: Path, cal: Path) -> None:
    """SIGTERM after an epoch: one line naming the epoch and how to resume, exit 143, no
    Prefect crash report. The best epoch's checkpoint already carries the training record the
    leakage guard reads, says the run has not ended, and `foley train calibrate` refuses it;
    the same command resumes the run."""
    out = tmp_path / "run"
    args = envelope(data, out, **{"--epochs": "6"})
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                            env={**os.environ, "FOLEY_HOME": str(tmp_path / "home")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / STATE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    done = torch.load(out / STATE, weights_only=False)["epoch"] + 1
    assert stderr.strip().splitlines()[-1] == (
        f"stopped after epoch {done} of 6: run the same command again to resume"), stderr
    assert "epoch 1/6: train" in stderr                        # the run's progress
    assert "Crash detected" not in stderr and "Traceback" not in stderr, stderr

    ckpt = out / checkpoint_name("tiny")
    _model, _config, meta = rms_mapper.load_checkpoint(ckpt)
    record = meta["training"]
    assert record["complete"] is False and record["epochs"] == 6
    assert record["clips_seen"] == [clip_name(n, "train") for n in range(12)]
    assert record["data"] == str(data.resolve())
    with pytest.raises(TrainingError, match="12 of its clips"):
        check_calibration_data(meta, shutil.copytree(data, tmp_path / "copy"), ckpt)
    line = refused(["train", "calibrate", str(ckpt), str(cal), "--out",
                    str(tmp_path / "cal.safetensors")])
    assert "training run that has not ended" in line and "foley train envelope" in line

    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"resuming after epoch {done}" in res.output
    _model, _config, meta = rms_mapper.load_checkpoint(ckpt)
    assert meta["training"]["complete"] is True and meta["training"]["epochs_run"] == 6
    res = runner.invoke(app, ["train", "calibrate", str(ckpt), str(cal), "--out",
                              str(tmp_path / "cal.safetensors")])
    assert res.exit_code == 0, res.output


def test_a_clip_found_damaged_as_the_run_reads_is_one_line_without_a_traceback(
        tmp_path: Path, data: Path) -> None:
    """An error only the flow finds (a clip cut short on disk) is the CLI's one line naming
    the file, exit 2, not Prefect's traceback; nothing is written to --out."""
    damaged = shutil.copytree(data, tmp_path / "damaged")
    clip = damaged / "clip_00005.npz"
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert cli_errors(envelope(damaged, tmp_path / "run"), tmp_path / "home") == [
        f"error: {clip}: not a readable foleyflow dataset clip (File is not a zip file); "
        "delete it and rerun the build to remake it"]
    assert not (tmp_path / "run").exists()


def cli_errors(args: list[str], home: Path) -> list[str]:
    """The error lines of `foley ARGS` run as a person runs it, which must exit 2 without a
    traceback."""
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                          env={**os.environ, "FOLEY_HOME": str(home)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if "error" in line.lower()]


def _poison(folder: Path, clip: Path) -> str:
    """Copy the dataset `folder` to `clip`'s folder with a NaN in one of `clip`'s picture
    feature arrays; the array's name."""
    shutil.copytree(folder, clip.parent)
    with np.load(clip, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    name = next(k for k in sorted(arrays) if k.startswith("feat_") and arrays[k].ndim >= 2
                and arrays[k].dtype.kind == "f")
    arrays[name] = arrays[name].copy()
    arrays[name].flat[arrays[name].size // 2] = np.nan
    np.savez(clip, **arrays)
    return name.removeprefix("feat_")


def test_a_clip_holding_nan_is_one_line_naming_it(tmp_path: Path, data: Path, cal: Path
                                                  ) -> None:
    """A clip whose picture features hold NaN (written by another tool, or a bit flip the zip
    CRC did not catch) is named as the run or the calibration reads it (exit 2): before, a
    run stopped with Prefect's traceback ("input statistics must be finite") and a calibration
    fitted on it without a word."""
    train_clip = tmp_path / "data" / "clip_00005.npz"
    cal_clip = tmp_path / "cal" / f"{clip_name(1003, 'train')}.npz"
    (tmp_path / "out").mkdir()
    for clip, folder, args in (
            (train_clip, data, envelope(train_clip.parent, tmp_path / "run")),
            (cal_clip, cal, ["train", "calibrate", str(SHIPPED_CHECKPOINT), str(cal_clip.parent),
                             "--out", str(tmp_path / "out" / "c.safetensors")])):
        array = _poison(folder, clip)
        assert cli_errors(args, tmp_path / "home") == [
            f"error: {clip}: {array} hold NaN or infinity; delete it and rerun the build to "
            "remake it"]
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "out" / "c.safetensors").exists()


def test_bad_input_is_one_line_before_anything_is_written(tmp_path: Path, data: Path,
                                                          cal: Path) -> None:
    """Each is refused before the flow starts, as one line naming what is wrong and what to
    do (exit 2), and --out is not created."""
    heldout = write_dataset(tmp_path / "heldout", range(4), split="heldout")
    garbled = shutil.copytree(data, tmp_path / "garbled")
    (garbled / "index.json").write_text("{not json")
    few = write_dataset(tmp_path / "few", (2000, 2001))
    seen = write_dataset(tmp_path / "seen", range(100, 104))  # the shipped model's seeds
    not_ckpt = tmp_path / "not.safetensors"
    not_ckpt.write_bytes(b"\x00" * 64)
    out = tmp_path / "never"
    for args, says in (
            (envelope(heldout, out), "has no train-split clips (its 4 clips are heldout)"),
            (envelope(heldout, out), f"foley dataset procedural {heldout} --split train"),
            (envelope(garbled, out), "index.json is not a readable dataset index"),
            (envelope(data, out, **{"--epochs": "0"}), "--epochs 0"),
            (envelope(data, out, **{"--batch-size": "0"}), "--batch-size 0"),
            (envelope(data, out, "--init", str(not_ckpt)),
             f"--init {not_ckpt} is not a readable RMS-Mapper checkpoint"),
            (envelope(data, out, "--init", str(tmp_path / "none.safetensors")),
             "or leave --init out to train from scratch"),
            (envelope(data, out, "--calibration", str(few)), "needs at least 4"),
            (envelope(data, out, "--calibration", str(heldout)), "only 0 train-split clips"),
            (envelope(data, out, "--init", str(SHIPPED_CHECKPOINT), "--calibration", str(seen)),
             f"4 of its clips (clip_00100, clip_00101, clip_00102, …) are what this run (the "
             f"training set {data}, and {SHIPPED_CHECKPOINT}, which it starts from)"),
            (["train", "calibrate", str(not_ckpt), str(cal)],
             "is not a readable RMS-Mapper checkpoint"),
            (["train", "calibrate", str(SHIPPED_CHECKPOINT), str(cal), "--out",
              str(out / "x.safetensors")], f"folder {out} does not exist"),
            (["train", "calibrate", str(SHIPPED_CHECKPOINT), str(few), "--out",
              str(tmp_path / "x.safetensors")], "needs at least 4")):
        line = refused(args)
        assert says in line, line
        assert "--envelope baseline" not in line
    assert not out.exists() and not (tmp_path / "x.safetensors").exists()


def test_one_run_at_a_time_trains_into_a_folder(tmp_path: Path, data: Path) -> None:
    """While a run holds --out, a second is refused saying so, before it reads the data; the
    folder is free again once the first ends."""
    out = tmp_path / "run"
    with out_lock(out):
        line = refused(envelope(data, out))
        assert f"{out}: another run is training into it (process {os.getpid()} on" in line
        with pytest.raises(TrainingError, match="another run is training into it"):
            train(data, out, epochs=1, batch_size=4, threads=1)
    assert train(data, out, epochs=1, batch_size=4, threads=1)["epochs_run"] == 1


def test_a_run_that_diverges_stops_with_one_error(tmp_path: Path, data: Path) -> None:
    """A learning rate that turns the weights to NaN: the run stops at that epoch saying to
    lower --lr (before, it trained on and failed at the end on a missing checkpoint)."""
    with pytest.raises(TrainingError, match=r"diverged at epoch 1 .* lower --lr \(this run's "
                       r"is 1e\+30\)"):
        train(data, tmp_path / "run", epochs=3, batch_size=4, lr=1e30, threads=1)
    assert not (tmp_path / "run" / checkpoint_name("tiny")).exists()


def test_the_summary_holds_absolute_paths_and_each_out_its_own_artifacts(
        tmp_path: Path, data: Path, cal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given relative paths, the summary (checkpoint and training.json) names the data, the
    calibration set and the checkpoint fine-tuned absolutely; the Prefect artifacts of a run
    are keyed by its --out, so two runs of a preset do not overwrite each other's."""
    from prefect.artifacts import Artifact

    monkeypatch.chdir(tmp_path)
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
    summary = train_envelope_flow()(rel(data), "run", epochs=1, batch_size=4, threads=1,
                                    calibration=rel(cal), init=rel(SHIPPED_CHECKPOINT))
    assert summary["data"] == str(data.resolve())
    assert summary["selection"]["data"] == str(cal.resolve())
    assert summary["init"]["checkpoint"] == str(SHIPPED_CHECKPOINT.resolve())
    written = json.loads((tmp_path / "run" / "training.json").read_text())
    assert {k: v for k, v in written.items() if k != "history"} == summary
    key = artifact_key("tiny", Path("run"), "curves")
    assert key != artifact_key("tiny", Path("other/run"), "curves")
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    table = Artifact.get(key)
    assert table is not None and len(json.loads(table.data)) == 1


def test_each_epoch_is_a_line_of_the_flow_runs_log_and_printed_once(tmp_path: Path,
                                                                    data: Path) -> None:
    """A studio watching a run in the Prefect UI sees each epoch as it ends: one INFO record
    of the flow run's log (its losses, validation and best epoch), read back here from the
    Prefect API the command logged to, though the CLI keeps Prefect's own logging at WARNING
    (before, the epochs reached only the console bar). The console prints each once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId,
    )

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_LEVEL"}  # the CLI's
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *envelope(data, out)], cwd=REPO,
                          env={**env, "FOLEY_HOME": str(tmp_path / "home"),
                               "COLUMNS": "200"},   # the console's lines unwrapped
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["train-envelope"])))
        [run] = [r for r in runs if r.parameters.get("out") == str(out)]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    epochs = [log for log in logs if log.message.startswith("epoch ")]
    assert [(log.level, log.message.split(":")[0]) for log in epochs] == [
        (logging.INFO, f"epoch {n}/3") for n in (1, 2, 3)], [log.message for log in logs]
    assert all(" · val " in log.message and " · best epoch " in log.message for log in epochs)
    for log in epochs:
        assert proc.stderr.count(log.message) == 1, proc.stderr


def test_a_calibration_holds_the_folder_it_writes_into_as_a_run_does(
        tmp_path: Path, data: Path, cal: Path) -> None:
    """`foley train calibrate` takes the lock `foley train envelope` takes, on the folder of
    its --out (before, the two could write into one folder at once): while a run trains
    there it is refused, one line naming the run; while it calibrates, a run or another
    calibration into that folder is refused, naming it."""
    out = tmp_path / "run"
    target = out / "calibrated.safetensors"
    calibrate = ["train", "calibrate", str(SHIPPED_CHECKPOINT), str(cal), "--out"]
    with out_lock(out):
        line = refused([*calibrate, str(target)])
        assert f"{out}: another run is training into it (process {os.getpid()} on" in line
        assert line.endswith("let it finish or stop it, or give --out a file in another folder")
        with pytest.raises(TrainingError, match="another run is training into it"):
            calibrate_checkpoint(SHIPPED_CHECKPOINT, cal, target)
    assert not target.exists()

    refusals: list[str] = []

    def meanwhile(_line: str) -> None:   # the calibration's lines, printed as it holds out
        if not refusals:
            refusals.extend([refused(envelope(data, out)),
                             refused([*calibrate, str(out / "other.safetensors")])])

    calibrate_checkpoint(SHIPPED_CHECKPOINT, cal, target, log=meanwhile)
    assert target.is_file()
    held = f"{out}: a calibration (`foley train calibrate`) is writing into it (process "
    assert refusals[0].startswith(f"error: {held}{os.getpid()} on"), refusals[0]
    assert refusals[0].endswith("or train into another --out"), refusals[0]
    assert refusals[1].startswith(f"error: {held}"), refusals[1]
    assert not (out / "other.safetensors").exists() and not (out / STATE).exists()


def test_a_set_the_scorer_cannot_be_fitted_on_is_one_line_without_a_traceback(
        tmp_path: Path, cal: Path) -> None:
    """A ValueError the contact scorer's fit meets is the CLI's one line naming the set and
    what to do, exit 2 — not Prefect's traceback before it. No set written here makes the fit
    fail (it guards the cases it knows), so the command runs with the fit failing as an
    unforeseen case would."""
    target = tmp_path / "calibrated.safetensors"
    failing = ("from models import contact_scorer\n"
               "def fit_selection(*args, **kwargs):\n"
               "    raise ValueError('the scorer saw no contact to learn from')\n"
               "contact_scorer.fit_selection = fit_selection\n"
               "from flows.cli import main\n"
               "main()\n")
    proc = subprocess.run([sys.executable, "-c", failing, "train", "calibrate",
                           str(SHIPPED_CHECKPOINT), str(cal), "--out", str(target)], cwd=REPO,
                          env={**os.environ, "FOLEY_HOME": str(tmp_path / "home")},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: calibration set {cal}: the contact scorer of {SHIPPED_CHECKPOINT} "
                      "cannot be fitted on its clips (the scorer saw no contact to learn "
                      "from); calibrate on another set (`foley dataset procedural CAL --clips "
                      "400 --seed 100000`)"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"calibrating on 6 clips of {cal}" in proc.stderr   # its lines still show
    assert not target.exists()
