"""Envelope stage: predict a shot's envelope from its features and hold it for review.

The prediction is a cached stage (`envelope-predict`); it becomes a reviewable version through
`tasks.decisions.save_version`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import models.motion_baseline as motion_baseline
from tasks import features as features_mod
from tasks.decisions import load_envelope, save_version
from tasks.stage import StageOutput, run_stage
from tasks.store import ArtifactRef

ESTIMATORS = ("baseline",)


@task(name="envelope", cache_policy=NO_CACHE, retries=0)
def predict_envelope(
    shot_id: int, features: ArtifactRef, *, shot: str, duration_s: float, prompt: str | None,
    estimator: str = "baseline",
) -> dict[str, Any]:
    """Predict the shot's envelope from its features and hold it for review as a new version."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown envelope estimator {estimator!r}; choose from {ESTIMATORS}")

    def compute(inputs: dict[str, Path], work: Path) -> StageOutput:
        feats = features_mod.load_features(inputs["features"])
        env = motion_baseline.estimate_envelope(feats, shot=shot, duration_s=duration_s)
        env["prompt"] = prompt
        out = work / "envelope.json"
        out.write_text(json.dumps(env))
        return StageOutput(files={"envelope": (out, "application/json")})

    res = run_stage(
        "envelope-predict",
        inputs={"features": features},
        params={"estimator": estimator, "shot": shot, "duration_s": duration_s, "prompt": prompt},
        code=[motion_baseline],
        compute=compute,
        shot_id=shot_id,
        agent=f"model:{estimator}",
    )
    env = load_envelope(res.outputs["envelope"])
    version, ref, created = save_version(
        shot_id, env, source=env.get("source", estimator), derived_from=res.outputs["envelope"],
        once=True,  # a rerun never buries a person's edit under the same prediction again
    )
    return {"version": version, "ref": ref, "created": created, "cached": res.cached}


