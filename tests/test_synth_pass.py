"""`foley run --backend diffusion`: a two-shot reel synthesized by the shipped diffusion model,
the model's hash, steps, guidance, envelope-follow settings, prompt and seed in the synth
stage's cache key and provenance; an unknown backend is refused before anything is written."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flows.demo import DEMO_SHOTS, make_demo_reel
from models import synth_pipeline
from models.envelope_follow import Follow
from tasks.synth import DIFFUSION_CHECKPOINTS, DIFFUSION_GUIDANCE, DIFFUSION_PRESET, DIFFUSION_STEPS

pytestmark = pytest.mark.slow


def foley(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FOLEY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def synth_rows(home: Path) -> list[tuple[dict, str]]:
    db = sqlite3.connect(home / "foley.db")
    return [(json.loads(p), c) for p, c in db.execute(
        "SELECT parameters, checkpoint_sha256 FROM activities WHERE task = 'synth' "
        "AND status = 'completed' ORDER BY id")]


def test_the_pass_synthesizes_with_the_diffusion_backend(tmp_path: Path) -> None:
    synth = synth_pipeline.load(DIFFUSION_CHECKPOINTS, DIFFUSION_PRESET,
                                need=("vocoder", "base", "control"))
    timeline = make_demo_reel(tmp_path / "edit", name="R2", shots=DEMO_SHOTS[:2])
    home, out = tmp_path / "home", tmp_path / "out"
    proc = foley("run", str(timeline), "--out", str(out), "--backend", "diffusion", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in manifest["shots"]] == ["delivered", "delivered"]
    for shot in manifest["shots"]:
        audio, sr = sf.read(out / shot["stems"]["mono"])
        assert sr == 48000 and np.sqrt(np.mean(audio ** 2)) > 1e-4, shot["name"]

    rows = synth_rows(home)
    assert len(rows) == 2
    for params, checkpoint in rows:
        assert params["backend"] == "diffusion" and params["model"] == synth.version
        assert (params["steps"], params["guidance"]) == (DIFFUSION_STEPS, DIFFUSION_GUIDANCE)
        assert params["follow"] == Follow().params()
        assert checkpoint == synth.version
    assert sorted(p["prompt"] for p, _c in rows) == sorted(s.foley for s in DEMO_SHOTS[:2])

    bad = foley("run", str(timeline), "--out", str(tmp_path / "x"), "--backend", "granular",
                home=home)
    assert bad.returncode == 2 and "--backend must be sampler or diffusion" in bad.stderr
    assert not (tmp_path / "x").exists()
