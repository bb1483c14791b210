"""Bad input to the learned envelope model is one line naming the file, exit 2, before any work
— a checkpoint that is damaged, of another kind, or whose contact scorer or weights inference
cannot use; a damaged clip; a split with no clips — and a prediction that is not finite fails
its shot with the reason, never a NaN envelope written, approved and delivered as silence.
Real checkpoints and clips, deliberately damaged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tasks.envelope import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
VOCODER = REPO / "models" / "checkpoints" / "synth_vocoder_tiny.safetensors"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _save(path: Path, tensors: dict[str, Any], header: dict[str, Any] | str) -> Path:
    save_file(tensors, str(path), metadata={
        "format": "pt", "foleyflow": header if isinstance(header, str) else json.dumps(header)})
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped checkpoint, damaged every way a studio's file can be."""
    d = tmp_path_factory.mktemp("ckpts")
    raw = CHECKPOINT.read_bytes()
    with safe_open(str(CHECKPOINT), framework="pt") as fh:
        header = json.loads(fh.metadata()["foleyflow"])
    tensors = load_file(str(CHECKPOINT))

    def edited(change: Any) -> dict[str, Any]:
        h = json.loads(json.dumps(header))
        change(h)
        return h

    out = {"random": d / "random.safetensors", "empty": d / "empty.safetensors",
           "truncated": d / "truncated.safetensors", "vocoder": d / "vocoder.safetensors"}
    out["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(raw[: len(raw) // 2])
    shutil.copy(VOCODER, out["vocoder"])
    out["missing_tensor"] = _save(d / "missing_tensor.safetensors",
                                  {k: v for k, v in tensors.items() if k != "head.bias"}, header)
    out["bad_header"] = _save(d / "bad_header.safetensors", tensors, "{not json")
    out["bad_upsample"] = _save(d / "bad_upsample.safetensors", tensors, edited(
        lambda h: h["config"].update(upsample=[2, 2, 2])))
    out["no_thresholds"] = _save(d / "no_thresholds.safetensors", tensors, edited(
        lambda h: h["metadata"]["selection"].pop("thresholds")))
    out["five_features"] = _save(d / "five_features.safetensors", tensors, edited(
        lambda h: h["metadata"]["selection"].update(
            contact_features=h["metadata"]["selection"]["contact_features"][:5])))
    out["peak_features"] = _save(d / "peak_features.safetensors", tensors, edited(
        lambda h: h["metadata"]["selection"].update(
            peak_features=h["metadata"]["selection"]["peak_features"][:-1])))
    nan = {k: v.clone() for k, v in tensors.items()}
    nan["head.weight"][:] = float("nan")
    out["nan_weights"] = _save(d / "nan_weights.safetensors", nan, header)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, sfx_dir: Path) -> Path:
    """Two held-out procedural clips (the second with sounding events)."""
    from tasks.dataset import build_procedural

    out = tmp_path_factory.mktemp("v2a") / "data"
    build_procedural(out, n_clips=2, split="heldout", seed=0, workers=1, sfx_dir=sfx_dir)
    return out


def _copy(data: Path, dest: Path) -> Path:
    shutil.copytree(data, dest)
    return dest


def _nan_features(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(feats)
    sharp = np.array(out["sharpness"], np.float32)
    sharp[::7] = np.nan
    out["sharpness"] = sharp
    return out


def _eval(*args: str) -> Any:
    from flows.cli import app

    return CliRunner().invoke(app, ["eval", "envelope", *args])


def _one_line_exit_2(res: Any, *names: str) -> str:
    """The refusal: exit 2, one line on stderr naming each of `names`, nothing on stdout."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), res.stderr
    assert "Traceback" not in res.output and not res.stdout.strip(), res.output
    for n in names:
        assert n in err, err
    return err


def test_a_checkpoint_whose_scorer_or_weights_inference_cannot_use_is_refused_before_the_pass(
        bad: dict[str, Path], tmp_path: Path) -> None:
    """A contact scorer with a field missing, or fitted on other features than it names, and
    weights holding NaN: refused by the check the CLI and the nightly make before a pass (it
    used to accept them; every shot then failed after minutes, or was delivered silent)."""
    from flows.cli import app
    from tasks.envelope import check_checkpoint

    assert check_checkpoint(CHECKPOINT) == CHECKPOINT
    for name, says in (
            ("no_thresholds", r"contact scorer .* lacks the field 'thresholds'"),
            ("five_features", r"names 5 contact features, but its contact network reads 23"),
            ("peak_features", r"names 7 peak features, but its peak network reads 8"),
            ("nan_weights", r"weights hold NaN or infinity \(head\.weight\)")):
        with pytest.raises(ValueError, match=says) as caught:
            check_checkpoint(bad[name])
        message = str(caught.value)
        assert message.startswith(str(bad[name])) and "\n" not in message, message
        assert "`foley train" in message, message  # what to do
    # `foley run`: one line naming the file, exit 2, nothing written (before the edit is read)
    res = CliRunner().invoke(app, [
        "run", str(tmp_path / "reel.otio"), "--out", str(tmp_path / "never"), "--envelope",
        "model", "--envelope-checkpoint", str(bad["five_features"])])
    _one_line_exit_2(res, "five_features.safetensors", "contact scorer")
    assert not (tmp_path / "never").exists()


def test_eval_refuses_a_bad_checkpoint_in_one_line_with_exit_2(
        bad: dict[str, Path], data: Path) -> None:
    """`foley eval envelope DATA --checkpoint X` with X damaged, of another kind, or unusable:
    one line naming X and exit 2 — bad input, never the 44–63-line traceback and exit 1 a
    scheduler would retry."""
    for name, path in bad.items():
        res = _eval(str(data), "--checkpoint", str(path), "--json")
        err = _one_line_exit_2(res, path.name)
        assert ("foley train" in err or "pick another" in err), (name, err)
    res = _eval(str(data), "--checkpoint", str(data / "none.safetensors"))
    _one_line_exit_2(res, "none.safetensors")


def test_eval_refuses_damaged_data_in_one_line_naming_the_clip(data: Path,
                                                                tmp_path: Path) -> None:
    """A clip cut short, one damaged inside, one whose features hold NaN, an index that does
    not read, a split without clips: one line naming the clip (and the `foley dataset`
    command that makes it again) or the folder, exit 2."""
    from tasks.dataset import read_clip, write_clip

    clip = "clip_heldout_00001"
    cut = _copy(data, tmp_path / "cut")
    raw = (cut / f"{clip}.npz").read_bytes()
    (cut / f"{clip}.npz").write_bytes(raw[:20000])
    err = _one_line_exit_2(_eval(str(cut), "--json"), f"clip {clip}", f"{clip}.npz",
                           f"foley dataset procedural {cut} --split heldout")
    assert "not a readable dataset clip" in err

    flipped = _copy(data, tmp_path / "flipped")  # its zip directory intact: found when read
    b = bytearray(raw)
    b[len(b) // 2] ^= 0xFF
    (flipped / f"{clip}.npz").write_bytes(bytes(b))
    _one_line_exit_2(_eval(str(flipped), "--json"), f"clip {clip}", "foley dataset procedural")

    nan = _copy(data, tmp_path / "nan")
    c = read_clip(nan / f"{clip}.npz")
    write_clip(c.path, _nan_features(c.features), c.audio16k, events=c.events,
               sustained=c.sustained, onsets=c.onsets, meta=c.meta)
    _one_line_exit_2(_eval(str(nan), "--json"), f"clip {clip}", "NaN", "sharpness",
                     "foley dataset procedural")

    torn = _copy(data, tmp_path / "torn")
    (torn / "index.json").write_text('{"clips": [')
    _one_line_exit_2(_eval(str(torn)), "index.json", "not a readable dataset index")

    err = _one_line_exit_2(_eval(str(data), "--split", "train"), str(data),
                           "no clips of split 'train'", "heldout (2 clips)")
    assert "foley dataset procedural" in err
    _one_line_exit_2(_eval(str(data), "--split", "val"), "no validation clips")


def test_a_prediction_that_is_not_finite_fails_its_shot_and_is_never_written(
        bad: dict[str, Path], data: Path, foley_home: Path, tmp_path: Path) -> None:
    """NaN weights (a file that changed after the pass checked it) or NaN features: the shot's
    envelope stage fails with a reason naming the shot, nothing is saved for it — it used to
    write a curve of NaN that the policy approved and the delivery played as silence."""
    from db import api
    from models import rms_mapper, v2a_envelope
    from tasks import runtime
    from tasks.dataset import read_clip
    from tasks.envelope import predict_envelope
    from tasks.features import save_features

    clip = read_clip(data / "clip_heldout_00001.npz")
    feats = clip.features
    duration = float(feats["n_frames"]) / float(feats["fps"])

    model, _config, meta = rms_mapper.load_checkpoint(bad["nan_weights"])  # unchecked
    with pytest.raises(ValueError, match=r"shot SH010: the envelope model's output is not "
                       r"finite .* from finite features") as caught:
        v2a_envelope.estimate_envelope(model, meta, feats, shot="SH010", duration_s=duration)
    assert getattr(caught.value, "model", False)  # the checkpoint's fault, not the shot's
    shipped, _config, meta = rms_mapper.load_checkpoint(CHECKPOINT)
    with pytest.raises(ValueError,
                       match=r"shot SH020: its features hold NaN or infinity in sharpness") \
            as caught:
        v2a_envelope.estimate_envelope(shipped, meta, _nan_features(feats), shot="SH020",
                                       duration_s=duration)
    assert not getattr(caught.value, "model", True)

    # the pass's stage: the reason it fails the shot with (flows.foley_pass: "envelope: …")
    with runtime.db().session() as s:
        reel = api.upsert_reel(s, name="R1", timeline_path="/x.otio", rate_num=25, rate_den=1,
                               drop_frame=False, start_frame=90000,
                               start_timecode="01:00:00:00")
        ids = [sh.id for sh in api.upsert_shots(s, reel, [dict(
            name=name, index=i, clip_name="c", record_in_frame=100 * i,
            duration_frames=round(duration * 25), record_in_s=4.0 * i, duration_s=duration,
            source_path=None, source_in_s=0.0, source_rate=25.0, foley_hint=None,
            skipped_reason=None) for i, name in enumerate(("SH010", "SH020"))])]
    refs = []
    for name, f in (("good", feats), ("nan", _nan_features(feats))):
        save_features(f, tmp_path / f"{name}.npz")
        refs.append(runtime.store().put_file(tmp_path / f"{name}.npz"))
    args = {"duration_s": duration, "prompt": None, "estimator": "model"}
    with pytest.raises(ValueError, match=r"shot SH020: its features hold NaN or infinity"):
        predict_envelope.fn(ids[1], refs[1], shot="SH020", checkpoint=str(CHECKPOINT), **args)
    with pytest.raises(ValueError, match=r"nan_weights.safetensors: its weights hold NaN"):
        predict_envelope.fn(ids[0], refs[0], shot="SH010", checkpoint=str(bad["nan_weights"]),
                            **args)
    with runtime.db().session() as s:
        assert api.latest_envelope(s, ids[0]) is None and api.latest_envelope(s, ids[1]) is None
        failed = [a.error for a in s.query(api.Activity).filter_by(task="envelope-predict")]
        assert any("shot SH020: its features hold NaN" in (e or "") for e in failed), failed
    done = predict_envelope.fn(ids[0], refs[0], shot="SH010", checkpoint=str(CHECKPOINT), **args)
    with runtime.db().session() as s:  # the same shot, a sound checkpoint: strict JSON
        text = runtime.store().local_path(api.latest_envelope(s, ids[0]).artifact.ref()
                                          ).read_text()
    assert done["version"] == 1
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the envelope"))


def test_the_table_says_an_undefined_difference_instead_of_crashing() -> None:
    """A model whose curve is NaN on every clip (a diverged run evaluated as it was) has no
    difference from the fitted baseline: the table prints "—" and "undefined" where it used to
    raise formatting None."""
    from flows.evaluate import curve_references, format_table
    from models import envelope_metrics as em
    from models import rms_targets

    t = np.linspace(0, 4, 500)
    model, base, curves = [], [], []
    for k in range(3):
        rms = 0.05 + 0.04 * np.abs(np.sin((k + 1) * t))
        cls = rms_targets.mu_encode(rms)
        guess = 0.5 * rms
        onsets = em.OnsetCounts.of([1.0], [1.0 + 0.01 * k])
        model.append(em.ClipScores(em.curve_means(np.full_like(rms, np.nan), np.zeros_like(cls),
                                                  rms, cls), onsets))
        base.append(em.ClipScores(em.curve_means(guess, rms_targets.mu_encode(guess), rms, cls),
                                  onsets))
        curves.append((rms, cls, guess))
    result = {"split": "heldout", "clips": 3, "audio_s": 12.0,
              "model": em.pooled_scores(model), "baseline": em.pooled_scores(base),
              "model_inference_x_realtime": 10.0,
              "model_minus_baseline": em.paired_bootstrap(model, base),
              "curve_references": curve_references(model, curves)}
    assert result["curve_references"]["model_minus_level_fitted_baseline"][
        "e_l1_tfoley"]["difference"] is None
    table = format_table(result)
    assert "model − it: e_l1_tfoley — undefined" in table, table


def test_no_envelope_with_a_non_finite_number_is_hashed_or_saved() -> None:
    """The last guard under the pass's and the app's own checks: content_sha256, which every
    save computes first, refuses NaN and infinity anywhere — a NaN confidence or doubt too."""
    from tasks.decisions import content_sha256

    env = {"shot": "SH010", "rate_hz": 100, "duration_s": 0.02, "curve": [0.0, 0.1],
           "events": [{"t": 0.01, "strength": 0.5, "x": 0.5, "y": 0.5, "kind": "impact",
                       "confidence": 0.9}], "prompt": None}
    content_sha256(env)
    for bad in ({**env, "curve": [0.0, float("nan")]}, {**env, "doubt": float("inf")},
                {**env, "events": [{**env["events"][0], "confidence": float("nan")}]}):
        with pytest.raises(ValueError):
            content_sha256(bad)
