"""Envelope stage: predict a shot's envelope from its features and hold it for review.

The prediction is a cached stage (`envelope-predict`); it becomes a reviewable version through
`tasks.decisions.save_version`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import models.motion_baseline as motion_baseline
import models.v2a_envelope as v2a_envelope
from models import SHIPPED, contact_scorer, curve_events, rms_mapper, rms_targets, v2a_inputs
from tasks import features as features_mod
from tasks.decisions import load_envelope, save_version
from tasks.stage import StageOutput, one_line, run_stage
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
    model, _config, meta = load_checked(Path(path))  # a file changed since the pass checked
    return model, meta                                 # it fails the shot with the reason


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
    checkpoint, one whose network takes another input layout than `models.v2a_inputs`
    builds, one whose weights hold NaN or infinity, or one whose contact scorer (or onset
    thresholds) inference cannot use — before a pass, not in every shot of it."""
    ckpt = _checkpoint_file(path)
    load_checked(ckpt)
    return ckpt


def load_checked(ckpt: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, config, metadata) of the checkpoint file, read once: a ValueError naming it
    and what to do where `check_checkpoint` would refuse it (`foley eval envelope` and the
    shots of a pass read their checkpoint through it)."""
    try:
        model, config, meta = rms_mapper.load_checkpoint(ckpt)
    except Exception as exc:  # whatever stops it loading stops every shot
        if isinstance(exc, ValueError) and str(exc).startswith(f"{ckpt}: not an RMS-Mapper"):
            raise ValueError(one_line(exc)) from exc  # another kind: it says what to do
        raise ValueError(f"{ckpt} is not a readable RMS-Mapper checkpoint ({one_line(exc)}); "
                         "write one with `foley train envelope` or `foley train calibrate … "
                         "--out`") from exc
    built = v2a_inputs.input_dim(contacts=config.contact_inputs)
    if config.in_dim != built:
        raise ValueError(
            f"{ckpt} takes {config.in_dim} inputs per step, but this foleyflow builds {built} "
            f"(models/v2a_inputs.py{', with the tracker contacts' if config.contact_inputs else ''}"
            "): it was trained for another input layout. Retrain it on this version with "
            "`foley train envelope`, or leave out --envelope-checkpoint / "
            "FOLEY_ENVELOPE_CHECKPOINT to use the shipped one")
    _check_weights(ckpt, model)
    if not isinstance(meta, dict):
        raise ValueError(f"{ckpt}: its metadata is {type(meta).__name__}, not a mapping; "
                         f"{_redo(ckpt, 'its scorer')}")
    if config.onset_head and "selection" in meta:  # what v2a_envelope.estimate decides with
        _check_selection(ckpt, meta["selection"])
    else:
        try:
            v2a_envelope.head_params(meta)
            v2a_envelope.detection_params(meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{ckpt}: its onset thresholds are unusable ({one_line(exc)}); "
                             f"{_redo(ckpt, 'them')}") from exc
    return model, config, meta


def _redo(ckpt: Path, what: str) -> str:
    return (f"fit {what} again with `foley train calibrate {ckpt} CAL` (CAL: clips it never "
            "trained on; its weights are kept), or retrain it with `foley train envelope`")


def _check_weights(ckpt: Path, model: Any) -> None:
    """A ValueError naming the tensors of `model` holding NaN or infinity."""
    import torch

    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"{ckpt}: its weights hold NaN or infinity ({', '.join(bad[:3])}{more}): "
                         "every envelope it predicts would be NaN. Retrain it with `foley train "
                         "envelope` (from a checkpoint before it diverged) or use another")


def _check_selection(ckpt: Path, raw: Any) -> None:
    """A ValueError naming the file if the contact scorer stored with the checkpoint cannot
    decide a shot's events: it does not read (a field missing or mistyped), names features
    inference does not compute, or its scorers' widths differ from the features it names —
    checked the way `v2a_envelope.estimate` builds and runs it, on a candidate of every
    frame-rate band."""
    import numpy as np

    def refuse(why: str, exc: BaseException | None = None) -> ValueError:
        err = ValueError(f"{ckpt}: its contact scorer (metadata \"selection\") {why}; "
                         f"{_redo(ckpt, 'it')}")
        err.__cause__ = exc
        return err

    try:
        sel = contact_scorer.Selection.from_dict(raw)
    except KeyError as exc:
        raise refuse(f"lacks the field {exc}", exc) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise refuse(f"does not read ({one_line(exc)})", exc) from exc
    for what, names, known, scorer in (
            ("contact", sel.contact_features, contact_scorer.CONTACT_FEATURES, sel.contacts),
            ("peak", sel.peak_features, contact_scorer.PEAK_FEATURES, sel.peaks)):
        unknown = [str(n) for n in names if n not in known]
        if unknown:
            raise refuse(f"names {what} features this foleyflow does not compute: "
                         f"{', '.join(unknown)}")
        members = scorer.members if isinstance(scorer, contact_scorer.Bag) else (scorer,)
        if not members:
            raise refuse(f"has no {what} scorer")
        for m in members:
            reads = int(np.size(m.mean))
            if reads != len(names):
                raise refuse(f"names {len(names)} {what} features, but its {what} network "
                             f"reads {reads}: it was fitted on other features")
    n_bands = len(sel.band_edges) + 1
    if len(sel.thresholds) != n_bands:
        raise refuse(f"has {len(sel.thresholds)} threshold pairs for {n_bands} frame-rate bands")
    numbers = [sel.offset_s, *sel.band_edges, *(x for pair in sel.thresholds for x in pair)]
    if not all(math.isfinite(x) for x in numbers):
        raise refuse("holds NaN or infinity in its thresholds, band edges or offset")
    for fps in (1.0, *sel.band_edges):  # a candidate of each kind in every band, scored and
        c = contact_scorer.Candidates(   # decided as inference does
            [{"t": 0.5, "kind": "impact", "x": 0.5, "y": 0.5}],
            np.zeros((1, len(contact_scorer.CONTACT_FEATURES)), np.float32),
            [{"t": 1.0, "p": 0.5}], np.zeros((1, len(contact_scorer.PEAK_FEATURES)), np.float32),
            float(fps))
        try:
            contact_p, peak_p = sel.score(c)
            _kept, doubt = sel.decide(c)
        except Exception as exc:  # what fails here fails every shot
            raise refuse(f"cannot score a candidate ({one_line(exc)})", exc) from exc
        if not (np.isfinite(contact_p).all() and np.isfinite(peak_p).all()
                and math.isfinite(doubt)):
            raise refuse("scores NaN (its weights hold NaN or infinity)")


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
            try:
                env = v2a_envelope.estimate_envelope(model, meta, feats, shot=shot,
                                                     duration_s=duration_s)
            except v2a_envelope.NonFinite as exc:  # the shot fails, naming the checkpoint
                if not exc.model:
                    raise
                raise v2a_envelope.NonFinite(f"{exc}; checkpoint {ckpt_path}",
                                             model=True) from exc
        else:
            env = motion_baseline.estimate_envelope(feats, shot=shot, duration_s=duration_s)
        env["prompt"] = prompt
        try:  # strict JSON: a NaN is never written, approved and delivered as silence
            v2a_envelope.check_finite(env)
            text = json.dumps(env, allow_nan=False)
        except ValueError as exc:
            if isinstance(exc, v2a_envelope.NonFinite):
                raise
            raise v2a_envelope.NonFinite(f"shot {shot}: its {estimator} envelope holds NaN or "
                                         f"infinity ({exc}); not written") from exc
        out = work / "envelope.json"
        out.write_text(text)
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


