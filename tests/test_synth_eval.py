"""`foley eval synth`: its metrics on cases whose answer is known, and the whole evaluation
(judge, both backends, table, JSON, errors) on small untrained networks and a subset of the
shared recordings."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from flows import eval_synth as es
from models import controlnet, diffusion, synth_ckpt, synth_pipeline, vocoder
from models.audio_repr import SR

torch.set_num_threads(1)
SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"
# two categories with three held-out recordings each (file-hash split) and training ones too;
# validation recordings: one footstep on sand, the metal hit
CAPTIONS = ("a footstep on sand", "a footstep on wood", "a tool hitting dirt",
            "a tool hitting stone", "a metal hit")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from flows.synth_data import load_corpus

    with open(SFX / "catalog.csv", newline="") as fh:
        paths = [r["path"] for r in csv.DictReader(fh) if r["caption"] in CAPTIONS]
    work = tmp_path_factory.mktemp("eval-synth")
    return work, paths, load_corpus(SFX, work, with_kit=False, paths=paths)


def clicks(times: list[float], dur: float = 3.0) -> np.ndarray:
    """Decaying noise bursts at `times` over a quiet noise floor."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(int(dur * SR)).astype(np.float32) * 1e-4
    burst = rng.standard_normal(4800).astype(np.float32) * np.exp(-np.arange(4800) / 600)
    for t in times:
        i = int(t * SR)
        x[i:i + 4800] += 0.5 * burst[:len(x) - i]
    return x


def test_a_scene_against_its_own_envelope_scores_perfectly(corpus):
    """The real scene is what its envelope was measured on: E-L1 0, every onset found."""
    _work, _paths, splits = corpus
    classes = es.eval_classes(splits["heldout"])
    assert classes == ["footsteps", "impacts"]
    scenes = es.make_scenes(splits["heldout"], classes, per_class=2, seed=0)
    assert [s.name for s in scenes] == ["footsteps-00", "footsteps-01", "impacts-00", "impacts-01"]
    assert all(s.envelope["events"] for s in scenes)
    feats, cats, _ = es.judge_segments(splits["heldout"], 4, seed=1)
    judge = es.train_judge(feats, cats, classes, seed=0)
    reference = {c: judge.embedding(feats[[k == c for k in cats]]) for c in classes}
    res = es.score_backend(scenes, [s.audio for s in scenes], judge, reference, seconds=1.0)
    assert res["e_l1"] == 0.0
    assert res["onset_f1@25ms"] == 1.0 and res["onset_error_median_ms"] == 0.0
    assert res["rtf"] == pytest.approx(1.0 / (4 * es.SCENE_S))
    lag = int(0.08 * SR)  # everything 80 ms late
    moved = [np.concatenate([np.zeros(lag, np.float32), s.audio[:-lag]]) for s in scenes]
    late = es.score_backend(scenes, moved, judge, reference, seconds=1.0)
    assert late["e_l1"] > 0.001 and late["onset_f1@25ms"] < 0.5


def test_the_judges_temporal_descriptors_tell_one_hit_from_a_shatter_and_a_long_ring():
    """temporal_features on signals whose answer is known: the onset count and the share of
    close onsets (a burst of debris), an event's length and its decay profile (a ring)."""
    one = clicks([1.0], dur=es.SCENE_S)
    shatter = clicks([1.0 + 0.06 * k for k in range(6)], dur=es.SCENE_S)
    ring = one.copy()
    n = int(1.5 * SR)
    ring[int(SR):int(SR) + n] += (0.3 * np.sin(2 * np.pi * 900 * np.arange(n) / SR)
                                  * np.exp(-np.arange(n) / (0.5 * SR))).astype(np.float32)
    f = {k: es.temporal_features(x) for k, x in (("one", one), ("shatter", shatter),
                                                   ("ring", ring))}
    assert all(v.shape == (37,) and np.isfinite(v).all() for v in f.values())
    n_prof = len(es.PROFILE_MS)
    count, close, length = 3 * n_prof + 4, 3 * n_prof + 5, 3 * n_prof  # timing block
    assert f["one"][count] == 1 and f["shatter"][count] == 6
    assert f["one"][close] == 0 and f["shatter"][close] == 1.0
    assert f["ring"][length] > 1.0 > 0.2 > f["one"][length]  # seconds within 25 dB of the peak
    assert f["ring"][n_prof - 1] > -25 > f["one"][n_prof - 1]  # level 640 ms after the peak
    assert es.judge_features(one).shape == (241 + 37,)


def test_the_sampler_rendering_of_an_envelope_reproduces_its_onsets():
    from models.sampler import Sample, render_shot

    truth = clicks([0.4, 1.1, 2.2])
    env = es.scene_envelope(truth, "clicks", "impact", "t")
    assert [round(e["t"], 3) for e in env["events"]] == [0.4, 1.1, 2.2]
    shot = render_shot(env, [Sample(clicks([0.0], dur=0.2), "click")], [], sr=SR, seed=0)
    counts = es.OnsetCounts.of(es.detect_onsets(shot, SR).tolist(), [0.4, 1.1, 2.2])
    assert es.onset_scores(counts)["onset_f1@25ms"] == 1.0


def test_frechet_distance_by_its_definition():
    a = np.random.default_rng(0).standard_normal((200, 4))
    assert es.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert es.frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)
    assert es.frechet_distance(a, 2 * a) > 1.0  # a wider spread counts too


def test_cross_validation_keeps_recordings_apart():
    """Two recordings per class, features that only identify the recording: a judge that
    memorizes recordings is right on its training data and at chance on unseen ones."""
    rng = np.random.default_rng(0)
    names = [f"r{i}" for i in range(4) for _ in range(10)]
    cats = ["a" if int(n[1]) < 2 else "b" for n in names]
    codes = {f"r{i}": rng.standard_normal(8) * 5 for i in range(4)}
    feats = np.stack([codes[n] + rng.standard_normal(8) * 0.1 for n in names]).astype(np.float32)
    judge = es.train_judge(feats, cats, ["a", "b"], seed=0)
    assert np.mean([p == c for p, c in zip(judge.predict(feats), cats)]) == 1.0
    cv = es.cross_validate(feats, cats, names, ["a", "b"], seed=0, folds=2)
    assert cv["recordings"] == 4 and cv["segments"] == 40 and cv["accuracy"] < 0.9
    assert cv["recordings_per_class"] == {"a": 2, "b": 2}
    assert set(cv["per_class_accuracy"]) == {"a", "b"}
    assert cv["balanced_accuracy"] == pytest.approx(np.mean(list(cv["per_class_accuracy"].values())))


def test_balanced_accuracy_weighs_classes_not_segments():
    """A class of one recording among many: features tell the large classes apart, so the
    segment accuracy is high while the small class (never learnable from zero other
    recordings) pulls the balanced figure down."""
    rng = np.random.default_rng(1)
    names, cats = [], []
    for cat, recs in (("a", 4), ("b", 4), ("c", 1)):
        for r in range(recs):
            names += [f"{cat}{r}"] * 10
            cats += [cat] * 10
    centre = {"a": np.full(6, -3.0), "b": np.full(6, 3.0), "c": np.zeros(6)}
    feats = np.stack([centre[c] + rng.standard_normal(6) for c in cats]).astype(np.float32)
    cv = es.cross_validate(feats, cats, names, ["a", "b", "c"], seed=0, folds=4)
    assert cv["per_class_accuracy"]["a"] > 0.9 and cv["per_class_accuracy"]["b"] > 0.9
    assert cv["per_class_accuracy"]["c"] == 0.0  # its only recording is never in training
    assert cv["accuracy"] > 0.8 and cv["balanced_accuracy"] < 0.7


def _untrained_checkpoints(folder: Path) -> None:
    """Debug-size networks with their initial weights, named like the tiny preset."""
    torch.manual_seed(0)
    den = diffusion.build(diffusion.get_config("debug"))
    nets = {"vocoder": (vocoder.build(vocoder.get_config("debug")), vocoder.CHECKPOINT_KIND),
            "base": (den, diffusion.CHECKPOINT_KIND),
            "control": (controlnet.ControlNet.from_base(den), controlnet.CHECKPOINT_KIND)}
    folder.mkdir(parents=True, exist_ok=True)
    for stage, (net, kind) in nets.items():
        synth_ckpt.save(net, net.config, synth_pipeline.checkpoint_path(folder, stage, "tiny"),
                        kind, {})


def test_evaluate_both_backends_table_and_json(corpus, tmp_path):
    work, paths, _splits = corpus
    _untrained_checkpoints(tmp_path / "ckpt")
    seen = []
    report = es.evaluate(SFX, tmp_path / "ckpt", work, steps=2, per_class=2, paths=paths,
                         progress=lambda stage, total: seen.append((stage, total)),
                         keep_audio=tmp_path / "audio")
    assert seen.count(("diffusion", 4)) == 4 and seen.count(("sampler", 4)) == 4
    assert seen.count(("vocoder", 4)) == 4
    assert report["classes"] == ["footsteps", "impacts"] and len(report["scenes"]) == 4
    assert 0.0 <= report["judge"]["accuracy"] <= 1.0 and report["judge"]["recordings"] == 12
    assert set(report["backends"]) == {"diffusion", "diffusion_controlnet", "sampler",
                                       "sampler_follow", "vocoder"}
    for b in report["backends"].values():
        assert b["audio_s"] == pytest.approx(4 * es.SCENE_S) and b["rtf"] > 0
        assert 0 <= b["onset_f1@25ms"] <= 1 and 0 <= b["semantic_accuracy"] <= 1
        assert np.isfinite(b["e_l1"]) and np.isfinite(b["frechet_distance"])
    assert len(list((tmp_path / "audio").glob("*.wav"))) == 4 * 6  # the real scene + 5 columns
    assert report["e_l1_silence"] > 0
    domain = report["judge"]["generator_domain"]  # real scenes of the training recordings
    assert domain["scenes"] == 4 * es.DOMAIN_SCENES_FACTOR and set(domain["per_class_accuracy"]) == {"footsteps", "impacts"}
    text = es.table(report)
    assert "| onset F1 @ ±25 ms |" in text and "cross-validated accuracy" in text
    assert f"real scenes of the generator's training recordings (the judge never saw them) " \
           f"it reads {domain['accuracy']:.3f}" in text
    json.dumps(report)  # the --json output is plain JSON


def test_validation_scenes_come_from_validation_recordings_only(corpus, tmp_path):
    """--split val: scenes of the validation recordings (the held-out ones are untouched), the
    sampler plays training recordings only, the judge still learns from held-out ones."""
    work, paths, splits = corpus
    assert es.scene_classes(splits, "val") == ["footsteps", "impacts"]
    val_names = {c.name for c in splits["val"]}
    _untrained_checkpoints(tmp_path / "ckpt")
    report = es.evaluate(SFX, tmp_path / "ckpt", work, steps=1, per_class=2, paths=paths,
                         split="val", keep_audio=tmp_path / "audio")
    assert report["split"] == "val" and report["classes"] == ["footsteps", "impacts"]
    assert report["judge"]["recordings"] == 12
    scenes = es.make_scenes(splits["val"], report["classes"], per_class=2, seed=0)
    for scene in scenes:
        real, _sr = sf.read(tmp_path / "audio" / f"{scene.name}_real.wav", dtype="float32")
        assert np.array_equal(real, scene.audio)
    library = es.sampler_library(splits, "val")
    assert library and val_names.isdisjoint(c.name for c in library)
    assert val_names <= {c.name for c in es.sampler_library(splits, "heldout")}
    assert "envelopes of the val split" in es.table(report)
    with pytest.raises(ValueError, match="split must be"):
        es.evaluate(SFX, tmp_path / "ckpt", work, split="train", paths=paths)


def test_the_judge_also_learns_from_a_judge_corpus(corpus, tmp_path):
    """--judge-corpus: its recordings of the judge's classes train the judge too (two other
    recordings here); one byte-identical to a training recording of the generator is not
    used, nor one of a class the judge does not have; a folder without a catalog is refused."""
    work, paths, splits = corpus
    folder = tmp_path / "judge"
    rows = []
    for i, (clip, cat) in enumerate([(splits["heldout"][0], "footsteps"),
                                     (splits["heldout"][-1], "impacts")]):
        rel = f"{cat}/x/other_{i}.wav"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / rel, clip.audio * 0.5, SR)  # another recording (other bytes)
        rows.append((rel, cat))
    trained = next(c for c in splits["train"] if c.category == "footsteps")
    (folder / "footsteps/y").mkdir(parents=True)
    (folder / "footsteps/y/copy.ogg").write_bytes((SFX / trained.name).read_bytes())
    rows.append(("footsteps/y/copy.ogg", "footsteps"))
    sf.write(folder / "whoosh.wav", splits["heldout"][0].audio, SR)
    rows.append(("whoosh.wav", "whooshes"))
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "category", "material", "action", "caption"])
        w.writerows([(rel, cat, "", "", cat) for rel, cat in rows])
    _untrained_checkpoints(tmp_path / "ckpt")
    report = es.evaluate(SFX, tmp_path / "ckpt", work, steps=1, per_class=2, paths=paths,
                         split="val", judge_corpus=folder)
    assert report["judge"]["corpus_recordings"] == 2
    assert report["judge"]["recordings"] == 12 + 2
    assert "2 of the judge corpus" in es.table(report)
    with pytest.raises(ValueError, match="foley dataset judge"):
        es.evaluate(SFX, tmp_path / "ckpt", work, steps=1, per_class=2, paths=paths,
                    split="val", judge_corpus=tmp_path)


def test_eval_cli_errors(tmp_path):
    from flows.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["eval", "synth", "--sfx", str(tmp_path)])
    assert res.exit_code == 2 and "catalog.csv" in res.output
    res = runner.invoke(app, ["eval", "synth", "--split", "train"])
    assert res.exit_code == 2 and "--split must be heldout or val" in res.output
    res = runner.invoke(app, ["eval", "synth", "--checkpoints", str(tmp_path / "none"),
                              "--work", str(tmp_path / "w"), "--scenes", "2"])
    assert res.exit_code == 2 and "foley train synth --stage" in res.output


def test_generate_uses_the_shipped_model(tmp_path):
    """`foley generate` without --checkpoints finds models/checkpoints/synth_*_tiny, which git
    tracks (not ignored)."""
    import subprocess

    from flows.cli import app
    from flows.cli_synth import SHIPPED

    files = [synth_pipeline.checkpoint_path(SHIPPED, s, "tiny") for s in synth_pipeline.STAGES]
    assert all(f.is_file() for f in files), files
    ignored = subprocess.run(["git", "check-ignore", *map(str, files)], cwd=SHIPPED,
                             capture_output=True, text=True)
    assert ignored.returncode == 1 and not ignored.stdout, ignored.stdout
    res = CliRunner().invoke(app, ["generate", "a door close", "--duration", "1", "--steps", "2",
                                   "--threads", "1", "--out", str(tmp_path / "door.wav")])
    assert res.exit_code == 0, res.output
    audio, sr = sf.read(tmp_path / "door.wav")
    assert sr == SR and len(audio) == SR and np.isfinite(audio).all()
    # refused before any work: a folder or a path under a file as --out, an unknown preset
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    (tmp_path / "takes.wav").mkdir()
    for args, says in (([str(tmp_path / "takes.wav")], "is a folder: name the .wav file"),
                       ([str(notes / "door.wav")], "is a file, so the WAV cannot be written"),
                       ([str(tmp_path / "x.wav"), "--preset", "huge"], "choose tiny")):
        res = CliRunner().invoke(app, ["generate", "a door", "--out", *args])
        assert res.exit_code == 2 and says in res.output, res.output
    assert notes.read_text() == "keep" and not (tmp_path / "x.wav").exists()


def test_shipping_in_float16_halves_the_file_and_keeps_the_output(tmp_path):
    _untrained_checkpoints(tmp_path / "run")
    src = synth_pipeline.checkpoint_path(tmp_path / "run", "vocoder", "tiny")
    dst = synth_pipeline.checkpoint_path(tmp_path / "ship", "vocoder", "tiny")
    dst.parent.mkdir()
    synth_ckpt.save_half(src, dst)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    full, _c, _m = synth_pipeline.load_stage(tmp_path / "run", "vocoder", "tiny")
    half, _c, meta = synth_pipeline.load_stage(tmp_path / "ship", "vocoder", "tiny")
    assert meta["stored"] == "float16" and next(half.parameters()).dtype == torch.float32
    mel = torch.randn(1, 80, 20, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        a, b = full(mel), half(mel)
    assert float((a - b).norm() / a.norm()) < 1e-2


def test_generate_with_an_envelope_hits_its_events(tmp_path):
    """`foley generate --envelope`: the rendering follows the envelope (models.envelope_follow),
    so its attacks are the envelope's events, each within 2 ms, and no others; --no-follow
    leaves the ControlNet's rendering as it is (on this envelope it puts one event 16 ms late
    and adds nine attacks)."""
    from flows.cli import app
    from models.audio_env import detect_onsets

    events = [0.30, 0.95, 1.60]
    t = np.arange(200) / 100.0
    curve = np.full(200, 10 ** (-60 / 20))
    for e in events:
        curve = np.maximum(curve, np.where(t >= e, 0.1 * np.exp(-(t - e) / 0.12), 0))
    env = {"version": 1, "shot": "g", "rate_hz": 100.0, "duration_s": 2.0,
           "curve": curve.tolist(), "prompt": "a door close",
           "events": [{"t": e, "strength": 1.0, "x": 0.5, "y": 0.5, "kind": "impact",
                       "confidence": 1.0} for e in events]}
    (tmp_path / "env.json").write_text(json.dumps(env))
    outs = {}
    for flag in ("--follow", "--no-follow"):
        out = tmp_path / f"{flag}.wav"
        res = CliRunner().invoke(app, ["generate", "--envelope", str(tmp_path / "env.json"),
                                       "--steps", "4", "--threads", "1", flag,
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
        outs[flag], sr = sf.read(out)
        assert sr == SR and len(outs[flag]) == 2 * SR
    got = detect_onsets(outs["--follow"], SR)
    assert len(got) == len(events) and np.max(np.abs(got - events)) < 0.002, got
    assert not np.allclose(outs["--follow"], outs["--no-follow"])
