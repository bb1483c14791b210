"""An envelope (DESIGN.md contract) from the RMS-Mapper's prediction for one shot.

The model decides *whether* and *how loud*; the motion tracker of the baseline
(`models.motion_baseline`) says *where*, *what*, and — where it saw a contact the model
hears — *exactly when* (its sub-frame contact times are physics, sharper than a 125 Hz
prediction can be). Models with an onset head (`models.rms_mapper`) decide *whether* with it
through the contact scorer fitted with the checkpoint (`fuse_scored`, `models.contact_scorer`:
a small classifier over the head's response, the curve's rise, the tracker's view of the
contact and the frame rate decides which tracked contacts sound and which of the head's own
peaks — an occluded hit, an object the tracker lost — are real); checkpoints calibrated before
it threshold the head alone (`fuse_onset_head`): a tracked contact is kept where the head's
probability within ±50 ms reaches `track_threshold`, an untracked peak above `own_threshold`.
Older checkpoints decide from the loudness curve (`fuse_onsets`). Loudness always comes from
the curve (decoded from µ-law class probabilities); positions of untracked onsets from the
largest moving region; their kind is the walker's `step` when they fall on the rhythm of
the shot's tracked footfalls (`untracked_kind`), else `impact`. With a contact scorer the
envelope carries its `doubt`: the highest score among the candidates it dropped (the
auto-approval policy reads it, `tasks.decisions.auto_approve`). The curve is resampled to the
contract's 100 Hz, its last value held if the features end before the shot.

An envelope is finite or it is not made: features holding NaN or infinity, or a network whose
output is not finite (damaged weights), raise `NonFinite` naming the shot — never a curve of
NaN that `np.clip` would pass on and a delivery would play as silence.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models import contact_scorer, curve_events, motion_baseline, rms_targets, v2a_inputs
from models import rms_mapper as mapper

MATCH_S = 0.1
HEAR_S = 0.08        # the curve's rise is looked for this far either side of a contact
ONSET_HEAR_S = 0.05  # the onset head's peak, this far
RHYTHM_KIND_S = 0.1  # an untracked onset this near the walker's beat is a footfall


class NonFinite(ValueError):
    """A shot's envelope cannot be made: its features or the model's output hold NaN or
    infinity (the message names the shot and which; `model`: the network's output, from
    finite features — its checkpoint is at fault)."""

    def __init__(self, message: str, *, model: bool = False) -> None:
        super().__init__(message)
        self.model = model


def nonfinite_features(features: dict[str, Any]) -> list[str]:
    """The names of the feature arrays holding NaN or infinity."""
    out = []
    for k, v in features.items():
        a = np.asarray(v)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            out.append(k)
    return sorted(out)


def _count_nonfinite(*arrays: np.ndarray | None) -> tuple[int, int]:
    """(non-finite values, all values) of the arrays given (None skipped)."""
    bad = total = 0
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a)
        bad += int(a.size - np.count_nonzero(np.isfinite(a)))
        total += int(a.size)
    return bad, total


def check_finite(env: dict[str, Any]) -> None:
    """`NonFinite` naming the shot if the envelope holds NaN or infinity (its curve, an event's
    number, its doubt): what is written is strict JSON, every number a number."""
    where = []
    curve = np.asarray(env.get("curve", []), np.float64)
    if len(curve) and not np.isfinite(curve).all():
        where.append(f"{int(np.count_nonzero(~np.isfinite(curve)))} of its {len(curve)} curve "
                     "values")
    for i, e in enumerate(env.get("events", [])):
        bad = [k for k, v in e.items()
               if isinstance(v, (float, np.floating)) and not np.isfinite(v)]
        if bad:
            where.append(f"event {i + 1} ({', '.join(bad)})")
    doubt = env.get("doubt")
    if isinstance(doubt, (float, np.floating)) and not np.isfinite(doubt):
        where.append("its doubt")
    if where:
        raise NonFinite(f"shot {env.get('shot')}: the envelope holds NaN or infinity in "
                        f"{'; '.join(where)}; not written")


def detection_params(meta: dict[str, Any]) -> dict[str, float]:
    """The curve onset reading a checkpoint was calibrated for (flows/train.py `calibrate`)."""
    return {"offset_s": float(meta.get("onset_offset_s", 0.0)),
            "rise_db": float(meta.get("rise_db", 6.0)),
            "min_peak_db": float(meta.get("min_peak_db", -45.0))}


def head_params(meta: dict[str, Any]) -> dict[str, float]:
    """The onset-head thresholds a checkpoint was calibrated for (flows/train.py)."""
    return {"offset_s": float(meta.get("onset_offset_s", 0.0)),
            "track_threshold": float(meta.get("track_threshold", 0.5)),
            "own_threshold": float(meta.get("own_threshold", 0.8))}


def model_outputs(model: Any, features: dict[str, np.ndarray], contacts: list[dict[str, Any]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(class probabilities, 125 Hz curve, per-frame confidence, onset probability or None)
    for one clip, on the targets' frames; `contacts` are the tracker's events of the clip (an
    input of models trained with `contact_inputs`)."""
    duration = float(features["n_frames"]) / float(features["fps"])
    n_out = int(round(duration * rms_targets.SR)) // rms_targets.HOP + 1  # the targets' length
    inputs = v2a_inputs.model_inputs(features, contacts if model.config.contact_inputs else None)
    probs, onset = mapper.predict(model, inputs)
    probs = v2a_inputs.align(probs, n_out)
    onset = v2a_inputs.align(onset, n_out) if onset is not None else None
    curve, conf = rms_targets.decode_probs(probs)
    return probs, curve, conf, onset


def _strength_at(db: np.ndarray, k: int) -> float:
    """Strength of the hit at frame k: the curve's peak in the HEAR_S after it."""
    post = db[k:k + int(round(HEAR_S * rms_targets.RATE_HZ)) + 1]
    peak_db = float(post.max()) if len(post) else float(db[-1])
    return float(np.clip(1 + peak_db / curve_events.STRENGTH_RANGE_DB, 0, 1))


def fuse_onset_head(onset: np.ndarray, curve: np.ndarray, base_events: list[dict[str, Any]],
                    params: dict[str, float]) -> list[dict[str, Any]]:
    """The events of the shot by the onset head: tracked contacts whose head probability
    within ±ONSET_HEAR_S reaches `track_threshold` (tracker time, head's probability as
    confidence), plus the head's own peaks of at least `own_threshold` with no kept contact
    within MATCH_S (peak time minus the calibrated offset)."""
    rate = rms_targets.RATE_HZ
    db = curve_events.level_db(curve)
    w = int(round(ONSET_HEAR_S * rate))
    out: list[dict[str, Any]] = []
    for b in base_events:
        k = int(round(b["t"] * rate))
        near = onset[max(0, k - w):k + w + 1]
        if not len(near) or near.max() < params["track_threshold"]:
            continue
        out.append({**b, "strength": _strength_at(db, min(k, len(db) - 1)),
                    "confidence": float(near.max())})
    for m in curve_events.onset_peaks(onset, rate, params["own_threshold"],
                                      offset_s=params["offset_s"]):
        if all(abs(m["t"] - e["t"]) > MATCH_S for e in out):
            k = min(int(round(m["t"] * rate)), len(db) - 1)
            out.append({"t": m["t"], "strength": _strength_at(db, k), "confidence": m["p"]})
    return sorted(out, key=lambda e: e["t"])


def fuse_scored(onset: np.ndarray, curve: np.ndarray, base_events: list[dict[str, Any]],
                fps: float, selection: contact_scorer.Selection) -> list[dict[str, Any]]:
    """The events of the shot by the checkpoint's contact scorer (`models.contact_scorer`):
    tracked contacts it scores as sounding (tracker time, its probability as confidence) and
    the onset head's untracked peaks it scores as real, with strength from the curve."""
    return scored_events(onset, curve, base_events, fps, selection)[0]


def scored_events(onset: np.ndarray, curve: np.ndarray, base_events: list[dict[str, Any]],
                  fps: float, selection: contact_scorer.Selection
                  ) -> tuple[list[dict[str, Any]], float]:
    """(`fuse_scored`'s events, the scorer's doubt: `contact_scorer.Selection.decide`)."""
    kept, doubt = selection.decide(contact_scorer.candidates(onset, curve, base_events, fps,
                                                             selection.offset_s))
    db = curve_events.level_db(curve)
    return [{**e, "strength": _strength_at(db, min(int(round(e["t"] * rms_targets.RATE_HZ)),
                                                    len(db) - 1))} for e in kept], doubt


def untracked_kind(t: float, contacts: list[dict[str, Any]]) -> str:
    """The kind of an onset the tracker did not see at `t`: `step` when the shot has at least
    two tracked footfalls and `t` falls on their rhythm (`contact_scorer.rhythm_gap` within
    RHYTHM_KIND_S: a footfall the tracker lost), else `impact`."""
    steps = [c["t"] for c in contacts if c.get("kind") == "step"]
    if len(steps) >= 2 and contact_scorer.rhythm_gap(t, steps) <= RHYTHM_KIND_S:
        return "step"
    return "impact"


def _region_at(features: dict[str, np.ndarray], t: float) -> tuple[float, float] | None:
    regions = features["regions"]
    if not len(regions):
        return None
    k = int(np.clip(round(t * float(features["fps"])), 0, len(regions) - 1))
    valid = regions[k][regions[k][:, 0] > 0]
    if not len(valid):
        return None
    r = valid[int(np.argmax(valid[:, 3]))]  # largest area
    return float(r[1]), float(r[2])


def fuse_onsets(onsets: list[dict[str, float]], curve: np.ndarray, conf: np.ndarray,
                base_events: list[dict[str, Any]], rise_db: float) -> list[dict[str, Any]]:
    """The events of the shot: the tracker's contacts that the model *hears* (its curve rises
    by `rise_db` across the contact, ±HEAR_S), at the tracker's sub-frame time with the
    model's loudness and confidence; plus the model's own onsets where the tracker saw no
    contact (an occluded hit, an object the tracker lost). Contacts the model does not hear
    (a silent mover, a tracking glitch) are dropped."""
    db = curve_events.level_db(curve)
    w = int(round(HEAR_S * rms_targets.RATE_HZ))
    out: list[dict[str, Any]] = []
    for b in base_events:
        k = int(round(b["t"] * rms_targets.RATE_HZ))
        pre, post = db[max(0, k - w):max(1, k)], db[k:k + w + 1]
        if not len(post) or post.max() - pre.min() < rise_db:
            continue
        out.append({**b, "strength": _strength_at(db, k),
                    "confidence": float(np.mean(conf[max(0, k - w):k + w + 1]))})
    for m in onsets:
        if all(abs(m["t"] - e["t"]) > MATCH_S for e in out):
            out.append(dict(m))
    return sorted(out, key=lambda e: e["t"])


def estimate(model: Any, meta: dict[str, Any], features: dict[str, np.ndarray], *,
             shot: str, duration_s: float, rate_hz: int = 100,
             base: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(envelope, the 125 Hz curve, class probabilities) — the envelope is what the pass
    stores; the curve and probabilities are what the evaluation scores. `base` is the motion
    baseline's envelope of the same features tracked with `motion=True`, if the caller has it
    already (without the motion descriptors it is tracked again)."""
    bad = nonfinite_features(features)
    if bad:
        raise NonFinite(f"shot {shot}: its features hold NaN or infinity in {', '.join(bad)}; "
                        "no envelope is predicted from them")
    if base is None or any("motion" not in e for e in base["events"]):
        base = motion_baseline.estimate_envelope(features, shot=shot, duration_s=duration_s,
                                                 rate_hz=rate_hz, motion=True)
    probs, curve, conf, onset = model_outputs(model, features, base["events"])
    n_bad, n_all = _count_nonfinite(probs, onset)
    if n_bad:  # finite features in: the network itself (NaN or overflowing weights)
        raise NonFinite(f"shot {shot}: the envelope model's output is not finite ({n_bad} of "
                        f"{n_all} values NaN or infinite, from finite features): its "
                        "checkpoint's weights are damaged (retrain it, or use another)",
                        model=True)
    doubt = None  # only a contact scorer weighs the candidates it drops
    if onset is not None and "selection" in meta:
        fused, doubt = scored_events(onset, curve, base["events"], float(features["fps"]),
                                     contact_scorer.Selection.from_dict(meta["selection"]))
    elif onset is not None:
        fused = fuse_onset_head(onset, curve, base["events"], head_params(meta))
    else:
        reading = detection_params(meta)
        onsets = curve_events.events_from_curve(curve, rms_targets.RATE_HZ, conf, **reading)
        fused = fuse_onsets(onsets, curve, conf, base["events"], reading["rise_db"])
    events = []
    for ev in fused:
        if not 0.0 <= ev["t"] < duration_s:  # e.g. a contact the timing moved before the shot
            continue
        if "kind" in ev:  # a tracked contact: position and kind from the tracker
            x, y, kind = ev["x"], ev["y"], ev["kind"]
        else:
            x, y = _region_at(features, ev["t"]) or (0.5, 0.5)
            kind = untracked_kind(ev["t"], base["events"])
        events.append({"t": round(ev["t"], 4), "strength": round(ev["strength"], 3),
                       "x": round(float(np.clip(x, 0, 1)), 3),
                       "y": round(float(np.clip(y, 0, 1)), 3), "kind": kind,
                       "confidence": round(ev["confidence"], 3)})
    n = int(round(duration_s * rate_hz))
    out_curve = rms_targets.resample_curve(curve, rms_targets.RATE_HZ, rate_hz)
    # features a frame short of the shot: hold the last level (a pad with 0 drops the sound)
    out_curve = np.clip(np.pad(out_curve, (0, max(0, n - len(out_curve))), mode="edge")[:n],
                        0.0, 1.0)
    env = {"version": 1, "parent": None, "shot": shot, "rate_hz": rate_hz,
           "duration_s": duration_s, "curve": [round(float(v), 5) for v in out_curve],
           "events": events, "source": f"rms-mapper:{meta.get('preset', 'tiny')}"}
    if doubt is not None:
        env["doubt"] = round(doubt, 3)
    check_finite(env)
    return env, curve, probs


def estimate_envelope(model: Any, meta: dict[str, Any], features: dict[str, np.ndarray], *,
                      shot: str, duration_s: float, rate_hz: int = 100) -> dict[str, Any]:
    return estimate(model, meta, features, shot=shot, duration_s=duration_s,
                    rate_hz=rate_hz)[0]
