"""An envelope (DESIGN.md contract) from the RMS-Mapper's prediction for one shot.

The model decides *when* and *how loud* (its 125 Hz curve, decoded from µ-law class
probabilities, and the onsets read off that curve with sub-frame times, `models.curve_events`);
the motion tracker of the baseline says *where* and *what*: each onset takes the picture
position (x, y) and kind (impact / step / scrape) of the tracker's nearest contact within
`MATCH_S`, else the position of the largest moving region at that moment and kind "impact".
Confidence is the model's own. The curve is resampled to the contract's 100 Hz.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models import curve_events, motion_baseline, rms_targets, v2a_inputs
from models import rms_mapper as mapper

MATCH_S = 0.1


def model_curve(model: Any, features: dict[str, np.ndarray], offset_s: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, float]]]:
    """(class probabilities, 125 Hz curve, per-frame confidence, onsets) for one clip."""
    duration = float(features["n_frames"]) / float(features["fps"])
    n_out = int(round(duration * rms_targets.SR)) // rms_targets.HOP + 1  # the targets' length
    probs = v2a_inputs.align(mapper.predict(model, v2a_inputs.frame_inputs(features)), n_out)
    curve, conf = rms_targets.decode_probs(probs)
    events = curve_events.events_from_curve(curve, rms_targets.RATE_HZ, conf, offset_s=offset_s)
    return probs, curve, conf, events


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


def estimate_envelope(model: Any, meta: dict[str, Any], features: dict[str, np.ndarray], *,
                      shot: str, duration_s: float, rate_hz: int = 100) -> dict[str, Any]:
    _probs, curve, _conf, onsets = model_curve(model, features,
                                               float(meta.get("onset_offset_s", 0.0)))
    base = motion_baseline.estimate_envelope(features, shot=shot, duration_s=duration_s,
                                             rate_hz=rate_hz)
    events = []
    for ev in onsets:
        if ev["t"] >= duration_s:
            continue
        near = min(base["events"], key=lambda b: abs(b["t"] - ev["t"]), default=None)
        if near is not None and abs(near["t"] - ev["t"]) <= MATCH_S:
            x, y, kind = near["x"], near["y"], near["kind"]
        else:
            x, y = _region_at(features, ev["t"]) or (0.5, 0.5)
            kind = "impact"
        events.append({"t": round(ev["t"], 4), "strength": round(ev["strength"], 3),
                       "x": round(float(np.clip(x, 0, 1)), 3),
                       "y": round(float(np.clip(y, 0, 1)), 3), "kind": kind,
                       "confidence": round(ev["confidence"], 3)})
    n = int(round(duration_s * rate_hz))
    out_curve = rms_targets.resample_curve(curve, rms_targets.RATE_HZ, rate_hz)
    out_curve = np.clip(np.pad(out_curve, (0, max(0, n - len(out_curve))))[:n], 0.0, 1.0)
    return {"version": 1, "parent": None, "shot": shot, "rate_hz": rate_hz,
            "duration_s": duration_s, "curve": [round(float(v), 5) for v in out_curve],
            "events": events, "source": f"rms-mapper:{meta.get('preset', 'tiny')}"}
