"""`foley train synth` stages at toy scale on real recordings (losses fall, resume works, the
held-out split stays out) and `foley generate` on the checkpoints they write."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from flows.synth_data import load_corpus, split_of
from flows.train_synth import make_stage, train_stage
from models import synth_pipeline
from models.text_embed import TextEmbedder
from tasks.bwf import read_bwf_info

torch.set_num_threads(1)
SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"
CAPTIONS = ("a footstep on snow", "glass breaking", "a door close", "a tool hitting dirt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with open(SFX / "catalog.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["caption"] in CAPTIONS]
    work = tmp_path_factory.mktemp("synth")
    splits = load_corpus(SFX, work, with_kit=False, paths=[r["path"] for r in rows])
    return work, splits, TextEmbedder(work / "text_cache")


def _train(corpus, stage: str, steps: int, **kw):
    work, splits, embedder = corpus
    return train_stage(make_stage(stage, "tiny", work, debug_sizes=True), splits["train"],
                       splits["val"], work, preset="tiny", embedder=embedder, steps=steps,
                       batch_size=4, log=lambda _m: None, **kw)


def test_splits_by_hash_keep_heldout_out(corpus):
    work, splits, _ = corpus
    assert splits["heldout"] and splits["train"]
    names = {k: {c.name for c in v} for k, v in splits.items()}
    assert not names["heldout"] & (names["train"] | names["val"])
    doc = json.loads((work / "split.json").read_text())
    assert {c["name"] for c in doc["heldout"]} == names["heldout"]
    clip = splits["heldout"][0]
    assert split_of(clip, own=False) == "heldout" and split_of(clip, own=True) != "heldout"


def test_vocoder_loss_falls(corpus):
    summary = _train(corpus, "vocoder", 24, eval_every=12, lr=3e-3)
    val = [h["val_loss"] for h in summary["history"]]
    assert val[-1] < val[0] - 0.05, val


def test_denoiser_then_controlnet_train_and_the_base_stays_frozen(corpus):
    work = corpus[0]
    base = _train(corpus, "base", 60, eval_every=20, lr=2e-3)
    val = [h["val_loss"] for h in base["history"]]
    assert val[-1] < val[0] - 0.02, val
    base_file = synth_pipeline.checkpoint_path(work, "base", "tiny")
    base_bytes = base_file.read_bytes()
    control = _train(corpus, "control", 10, eval_every=5)
    assert base_file.read_bytes() == base_bytes
    assert control["built_on"]["base"] == hashlib.sha256(base_bytes).hexdigest()


def test_encoder_stage_and_resume(corpus):
    work = corpus[0]
    first = _train(corpus, "encoder", 6, eval_every=3, max_minutes=0.0)  # budget spent at once
    assert first["steps_run"] == 1 and (work / "state_encoder.pt").is_file()
    second = _train(corpus, "encoder", 6, eval_every=3)
    assert [h["step"] for h in second["history"]] == [1, 3, 6]
    assert (work / "curves_encoder.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="resume with the same .or a larger. --steps"):
        _train(corpus, "encoder", 5)
    longer = _train(corpus, "encoder", 8, eval_every=1)  # a finished stage, extended
    assert [h["step"] for h in longer["history"]] == [1, 3, 6, 7, 8]
    # the learning rate rises again from the end of the short cosine onto the longer one
    assert longer["history"][3]["lr"] > 2 * second["history"][-1]["lr"]


def test_generate_cli(corpus, tmp_path):
    from flows.cli import app

    work = corpus[0]
    for stage in synth_pipeline.STAGES:  # the other tests trained these (any order)
        if not synth_pipeline.checkpoint_path(work, stage, "tiny").is_file():
            _train(corpus, stage, 2, eval_every=1)
    env = {"version": 1, "shot": "SH010", "rate_hz": 100, "duration_s": 3.0,
           "curve": [0.3 if 100 <= i < 130 else 0.001 for i in range(300)],
           "events": [{"t": 1.0, "strength": 0.9, "x": 0.5, "y": 0.5, "kind": "impact"}]}
    (tmp_path / "env.json").write_text(json.dumps(env))
    runner = CliRunner()
    common = ["--checkpoints", str(work), "--steps", "2", "--threads", "1"]
    outs = []
    for name in ("a.wav", "b.wav"):
        res = runner.invoke(app, ["generate", "a door close", "--envelope",
                                  str(tmp_path / "env.json"), "--out", str(tmp_path / name),
                                  *common])
        assert res.exit_code == 0, res.output
        info = read_bwf_info(tmp_path / name)
        outs.append((sf.read(tmp_path / name)[0].tobytes(), info["description"]))
    assert outs[0] == outs[1]  # same seed: the same samples and description (not the same
    # bytes: the bext origination time is the time of writing)
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.subtype) == (48000, 1, "PCM_24")
    assert info.frames == 3 * 48000
    like = sorted((SFX / "doors").rglob("*.ogg"))[0]
    res = runner.invoke(app, ["generate", "--like", str(like), "--duration", "1.5",
                              "--out", str(tmp_path / "c.wav"), *common])
    assert res.exit_code == 0, res.output
    audio, _ = sf.read(tmp_path / "c.wav")
    assert len(audio) == 72000 and np.isfinite(audio).all()

    res = runner.invoke(app, ["generate", "x", "--out", str(tmp_path / "d.wav"),
                              "--checkpoints", str(tmp_path / "none")])
    assert res.exit_code == 2 and "foley train synth --stage vocoder" in res.output
    env["curve"] = env["curve"][:10]
    (tmp_path / "bad.json").write_text(json.dumps(env))
    res = runner.invoke(app, ["generate", "x", "--envelope", str(tmp_path / "bad.json"),
                              "--out", str(tmp_path / "e.wav"), *common])
    assert res.exit_code == 2 and "curve has 10 samples" in res.output
    assert not (tmp_path / "d.wav").exists() and not (tmp_path / "e.wav").exists()
