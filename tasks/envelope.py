"""Envelope stage: predict a shot's envelope from its features and hold it for review.

The prediction is a cached stage (`envelope-predict`); it becomes a reviewable version through
`tasks.decisions.save_version`.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import models.motion_baseline as motion_baseline
import models.v2a_envelope as v2a_envelope
from models import SHIPPED, contact_scorer, curve_events, rms_mapper, rms_targets, v2a_inputs
from tasks import features as features_mod
from tasks.decisions import load_envelope, save_version
from tasks.stage import StageOutput, run_stage
from tasks.store import ArtifactRef

ESTIMATORS = ("baseline", "model")
# The shipped RMS-Mapper (models/README.md has its card); a pass takes another from
# FOLEY_ENVELOPE_CHECKPOINT or `foley run --envelope-checkpoint` (flows.foley_pass).
CHECKPOINT = SHIPPED / "rms_mapper_tiny.safetensors"
# Every module each estimator runs (the stage's cache key hashes their source): the model
# estimator tracks with the baseline, builds inputs, runs the network, decodes its curve and
# scores the candidates (tests/test_rms_mapper.py checks this against sys.modules).
CODE = {"baseline": (motion_baseline,),
        "model": (motion_baseline, v2a_envelope, contact_scorer, rms_mapper, v2a_inputs,
                  curve_events, rms_targets)}


@functools.lru_cache(maxsize=4)
def _load_model(path: str, sha256: str) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)  # one shot per worker thread; the pass runs shots in parallel
    model, _config, meta = rms_mapper.load_checkpoint(Path(path))
    return model, meta


def _checkpoint_file(path: Path | str | None) -> Path:
    """`path`, or the shipped checkpoint; a ValueError naming it if there is no such file."""
    path = Path(path or CHECKPOINT)
    if not path.is_file():
        raise ValueError(f"no envelope model checkpoint at {path}: train one with "
                         "`foley train envelope` or use --envelope baseline")
    return path


def checkpoint_ref(path: Path | str | None = None) -> tuple[Path, str]:
    """(the checkpoint file, its sha256): `path`, or the shipped one."""
    path = _checkpoint_file(path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def check_checkpoint(path: Path | str | None = None) -> Path:
    """The checkpoint the model estimator will use, read once to prove it is one: a
    ValueError naming the file and what to do if it is missing or not an RMS-Mapper
    checkpoint, or one whose network takes another input layout than `models.v2a_inputs`
    builds — before a pass, not in every shot of it."""
    ckpt = _checkpoint_file(path)
    try:
        _model, config, _meta = rms_mapper.load_checkpoint(ckpt)
    except Exception as exc:  # whatever stops it loading stops every shot
        raise ValueError(f"{ckpt} is not a readable RMS-Mapper checkpoint ({exc}); write "
                         "one with `foley train envelope` or `foley train calibrate … --out`"
                         ) from exc
    built = v2a_inputs.input_dim(contacts=config.contact_inputs)
    if config.in_dim != built:
        raise ValueError(
            f"{ckpt} takes {config.in_dim} inputs per step, but this foleyflow builds {built} "
            f"(models/v2a_inputs.py{', with the tracker contacts' if config.contact_inputs else ''}"
            "): it was trained for another input layout. Retrain it on this version with "
            "`foley train envelope`, or leave out --envelope-checkpoint / "
            "FOLEY_ENVELOPE_CHECKPOINT to use the shipped one")
    return ckpt


@task(name="envelope", cache_policy=NO_CACHE, retries=0)
def predict_envelope(
    shot_id: int, features: ArtifactRef, *, shot: str, duration_s: float, prompt: str | None,
    estimator: str = "baseline", checkpoint: str | None = None,
) -> dict[str, Any]:
    """Predict the shot's envelope from its features and hold it for review as a new version
    (`decisions.save_version`; the pass reports one over a person's work)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown envelope estimator {estimator!r}; choose from {ESTIMATORS}")

    ckpt_path, ckpt_sha = checkpoint_ref(checkpoint) if estimator == "model" else (None, None)

    def compute(inputs: dict[str, Path], work: Path) -> StageOutput:
        feats = features_mod.load_features(inputs["features"])
        if estimator == "model":
            model, meta = _load_model(str(ckpt_path), ckpt_sha)
            env = v2a_envelope.estimate_envelope(model, meta, feats, shot=shot,
                                                 duration_s=duration_s)
        else:
            env = motion_baseline.estimate_envelope(feats, shot=shot, duration_s=duration_s)
        env["prompt"] = prompt
        out = work / "envelope.json"
        out.write_text(json.dumps(env))
        return StageOutput(files={"envelope": (out, "application/json")})

    res = run_stage(
        "envelope-predict",
        inputs={"features": features},
        params={"estimator": estimator, "shot": shot, "duration_s": duration_s, "prompt": prompt,
                **({"checkpoint": ckpt_sha} if ckpt_sha else {})},
        code=list(CODE[estimator]),
        compute=compute,
        shot_id=shot_id,
        agent=f"model:rms-mapper@{ckpt_sha[:12]}" if ckpt_sha else f"model:{estimator}",
        checkpoint_sha256=ckpt_sha,
    )
    env = load_envelope(res.outputs["envelope"])
    version, ref, created = save_version(  # a rerun adds nothing
        shot_id, env, source=env.get("source", estimator), derived_from=res.outputs["envelope"],
        prediction=True)
    return {"version": version, "ref": ref, "created": created, "cached": res.cached}


