"""Metrics, onsets read off curves, and the train → evaluate → pass path of the RMS-Mapper on
real (small) procedural data: rendered pictures, real recordings, the pass's own features."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import curve_events, envelope_metrics as em, motion_baseline, rms_targets
from models import v2a_envelope

REPO = Path(__file__).resolve().parents[1]


def clicks(times: list[float], sr: int = 48000, dur: float = 4.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1e-3, int(dur * sr))
    for t in times:
        i, n = int(t * sr), int(0.15 * sr)
        a[i:i + n] += rng.normal(0, 0.3, n)[: len(a) - i] * np.exp(-np.arange(n) / (0.03 * sr))[
            : len(a) - i]
    return a


def test_onsets_read_off_a_target_curve_are_sub_frame_after_calibration() -> None:
    times = [0.5, 1.13, 1.904, 2.4, 3.31]
    curve = rms_targets.rms_target(clicks(times), 48000)
    found = [e["t"] for e in curve_events.events_from_curve(curve, rms_targets.RATE_HZ)]
    assert len(found) == len(times)
    offset = curve_events.calibrate_offset([found], [times])
    assert -0.06 < offset < -0.02  # the centred smoothing leads the half-way crossing
    again = curve_events.events_from_curve(curve, rms_targets.RATE_HZ, offset_s=offset)
    errors = [abs(e["t"] - t) for e, t in zip(again, times)]
    assert max(errors) < 0.004, errors  # within half an 8 ms hop
    other = rms_targets.rms_target(clicks([0.7, 2.05], seed=3), 48000)
    again = curve_events.events_from_curve(other, rms_targets.RATE_HZ, offset_s=offset)
    assert [round(e["t"], 2) for e in again] == [0.7, 2.05]  # the offset carries over


def test_onset_peaks_are_sub_frame_and_kept_apart() -> None:
    times = [0.3, 0.5123, 0.59, 1.0]
    prob = np.maximum(rms_targets.onset_target(times, 200) * 0.9, 0.01)
    prob[int(1.0 * 125) - 3:int(1.0 * 125) + 4] *= 0.3   # a weak one under the threshold
    peaks = curve_events.onset_peaks(prob, rms_targets.RATE_HZ, 0.5)
    assert [round(p["t"], 3) for p in peaks] == [0.3, 0.512, 0.59]
    assert abs(peaks[1]["t"] - 0.5123) < 0.001              # parabolic vertex, sub-frame
    apart = curve_events.onset_peaks(prob, 125.0, 0.5, min_gap_s=0.1)
    assert len(apart) == 2 and apart[1]["t"] in (peaks[1]["t"], peaks[2]["t"])  # one stays
    late = curve_events.onset_peaks(prob, 125.0, 0.5, offset_s=0.01)
    assert late[0]["t"] == pytest.approx(peaks[0]["t"] - 0.01)


def test_the_onset_head_decides_which_tracked_contacts_sound() -> None:
    """Tracked contacts keep their time where the head fires; a silent one is dropped; a hit the
    tracker missed is added from the head alone if it is sure."""
    onset = np.full(500, 0.02)
    onset[:] = np.maximum(onset, rms_targets.onset_target([1.0, 3.0], 500) * 0.9)
    onset = np.maximum(onset, rms_targets.onset_target([2.0], 500) * 0.45)
    curve = rms_targets.rms_target(clicks([1.0, 2.0, 3.0]), 48000)[:500]
    base = [{"t": 1.0031, "x": 0.2, "y": 0.8, "kind": "impact"},
            {"t": 2.5, "x": 0.5, "y": 0.5, "kind": "impact"}]        # the tracker's contacts
    params = {"offset_s": 0.0, "track_threshold": 0.4, "own_threshold": 0.8}
    events = v2a_envelope.fuse_onset_head(onset, curve, base, params)
    assert [(round(e["t"], 4), e.get("kind")) for e in events] == [(1.0031, "impact"), (3.0, None)]
    assert events[0]["x"] == 0.2 and events[0]["confidence"] == pytest.approx(0.9, abs=0.01)
    assert events[1]["strength"] > 0.3  # from the curve: the room tone alone would be 0
    lower = v2a_envelope.fuse_onset_head(onset, curve, base, {**params, "own_threshold": 0.4})
    assert [round(e["t"], 2) for e in lower] == [1.0, 2.0, 3.0]       # the weaker hit too


def test_contact_labels_count_one_candidate_per_true_onset() -> None:
    """The candidate nearest to a true onset (within ±50 ms) is its positive; a second proposal
    of the same sound is a negative, as the onset metric counts it."""
    from models import contact_scorer as cs

    assert cs.labels([1.0, 1.02, 1.5, 2.2], [1.015, 2.0]).tolist() == [0, 1, 0, 0]
    assert cs.labels([], [1.0]).tolist() == []


def test_scorer_learns_an_interaction_and_survives_its_json() -> None:
    """The hidden layer learns what a logistic cannot (a sound only where two cues agree in
    sign: XOR), and the scorer round-trips through the checkpoint's JSON metadata."""
    from models import contact_scorer as cs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = ((x[:, 0] > 0) == (x[:, 1] > 0)).astype(np.float32)
    mlp, lin = cs.fit(x, y, hidden=8, l2=1e-3), cs.fit(x, y, hidden=0, l2=1e-3)
    acc = lambda s: float(np.mean((s(x) >= 0.5) == (y == 1)))  # noqa: E731
    assert acc(mlp) > 0.9 and acc(lin) < 0.7
    back = cs.Scorer.from_dict(json.loads(json.dumps(mlp.to_dict())))
    assert np.allclose(back(x), mlp(x), atol=1e-4)
    assert cs.fit(x[:0], y[:0])(x[:0]).shape == (0,)               # nothing to fit: no crash
    assert np.allclose(cs.fit(x, np.ones(400))(x), 1.0, atol=1e-3)  # one class: its prior


def _motion(bounce: bool, rng: np.random.Generator) -> dict[str, float]:
    """The tracker's motion descriptors of a floor bounce (falls, then rises) or of a turn in
    mid-air (keeps falling, slower)."""
    vy = float(rng.uniform(1.0, 3.0))
    return dict(zip(motion_baseline.MOTION_FIELDS, (
        vy, float(rng.uniform(0, 0.5)), -0.6 * vy if bounce else 0.3 * vy,
        float(rng.uniform(0, 0.5)), 0.0, 0.5, 0.1)))


def _hits_and_turns(rng: np.random.Generator, seed: int, hit_p: tuple[float, float],
                    turn_p: tuple[float, float], honest_motion: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, list[dict], list[float]]:
    """A 4 s clip of three hits, each with a silent turn 0.25–0.4 s away that the tracker
    also proposes: (onset head, curve, tracked contacts, hits). The head's response scales by
    a draw from `hit_p` at hits and `turn_p` at turns; the contacts' motion tells a bounce
    from a turn when `honest_motion`, else it is drawn at random."""
    hits = sorted(rng.uniform(0.3, 3.6, 3))
    turns = [t + rng.choice([-1, 1]) * rng.uniform(0.25, 0.4) for t in hits]
    onset = np.maximum(0.02, rms_targets.onset_target(hits, 500) * rng.uniform(*hit_p))
    onset = np.maximum(onset, rms_targets.onset_target(turns, 500) * rng.uniform(*turn_p))
    curve = rms_targets.rms_target(clicks(hits, seed=seed), 48000)[:500]
    base = [{"t": t + rng.normal(0, 0.002), "x": 0.5, "y": 0.8, "kind": "impact",
             "confidence": 0.7, "strength": 0.5,
             "motion": _motion(t in hits if honest_motion else bool(rng.random() < 0.5), rng)}
            for t in sorted(hits + turns)]
    return onset, curve, base, hits


def _uninformative_motion_clips(hit_p: tuple[float, float], turn_p: tuple[float, float],
                                n: int = 40) -> list[tuple[Any, list[float]]]:
    """n clips of `_hits_and_turns` at 24 fps whose motion tells nothing, as candidates."""
    from models import contact_scorer as cs

    rng = np.random.default_rng(3)
    clips = []
    for i in range(n):
        onset, curve, base, hits = _hits_and_turns(rng, i, hit_p, turn_p, honest_motion=False)
        clips.append((cs.candidates(onset, curve, base, 24.0, 0.0), hits))
    return clips


def test_fitted_selection_keeps_the_contacts_that_sound() -> None:
    """On clips where the tracker proposes every hit and as many silent turns, the fitted
    selection keeps the hits (out-of-fold, thresholds never chosen on the scorers' own data)
    and the pass's fusion reads it from the checkpoint metadata."""
    from models import contact_scorer as cs

    rng = np.random.default_rng(1)
    clips, raw = [], []
    for i in range(32):
        onset, curve, base, hits = _hits_and_turns(rng, i, (0.5, 0.95), (0.05, 0.5))
        c = cs.candidates(onset, curve, base, 24.0, 0.0)
        clips.append((c, hits))
        raw.append((onset, curve, base, hits))
    selection, report = cs.fit_selection(clips[:24], 0.0, folds=4)
    assert report["oof_onset_f1"] > 0.95 and report["clips"] == 24
    restored = cs.Selection.from_dict(json.loads(json.dumps(selection.to_dict())))
    total = None
    for onset, curve, base, hits in raw[24:]:          # clips the scorer never saw
        events = v2a_envelope.fuse_scored(onset, curve, base, 24.0, restored)
        assert all(0 <= e["confidence"] <= 1 and 0 <= e["strength"] <= 1 for e in events)
        counts = em.OnsetCounts.of([e["t"] for e in events], hits)
        total = counts if total is None else total + counts
    assert em.onset_scores(total)["onset_f1@50ms"] > 0.95


def test_thresholds_never_find_fewer_onsets_than_the_tracker_alone() -> None:
    """Where some hits sound as faint to the head as the turns, the best-F1 pair drops them
    though the tracker proposed them; by default the thresholds are chosen only among pairs
    whose out-of-fold recall is at least the tracker's (every contact kept), and the report
    says what that cost."""
    from models import contact_scorer as cs

    clips = _uninformative_motion_clips((0.02, 0.9), (0.05, 0.4), n=28)  # one pooled band
    _free, free = cs.fit_selection(clips, 0.0, folds=4, members=2, recall_floor=False)
    floored, report = cs.fit_selection(clips, 0.0, folds=4, members=2)
    before, after = free["band_choices"][0], report["band_choices"][0]
    assert after["tracker_recall"] == 1.0                   # it proposes every hit
    assert before["recall"] < after["tracker_recall"] <= after["recall"]
    assert after["f1"] <= after["unconstrained_f1"] == before["f1"]
    assert report["threshold_rule"] == "best F1, recall at least the tracker's"
    assert free["threshold_rule"] == "best F1"
    assert floored.thresholds_for(24.0) == tuple(after["thresholds"])


def test_thresholds_reach_below_a_tenth_where_sounding_contacts_are_rare() -> None:
    """A film's mix: one proposal in twenty sounds and nothing tells which. Keeping every
    contact is then the best F1 there is, and the scorer's probability is the share that
    sounds, 0.05, so the threshold grid must reach below it for a calibration on such
    material to keep any (with 0.1 the lowest, it kept none: F1 0)."""
    from models import contact_scorer as cs

    rng = np.random.default_rng(5)
    clips = []
    for _ in range(24):  # under MIN_BAND_CLIPS: one pooled choice, half the work
        times = [0.2 + 0.15 * k for k in range(20)]
        contacts = [{"t": t, "kind": "impact"} for t in times]
        x = np.zeros((20, len(cs.CONTACT_FEATURES)), np.float32)  # no cue at all
        c = cs.Candidates(contacts, x, [], np.zeros((0, len(cs.PEAK_FEATURES)), np.float32),
                          24.0)
        clips.append((c, [times[int(rng.integers(20))]]))
    selection, report = cs.fit_selection(clips, 0.0, folds=4, members=2)
    assert selection.thresholds_for(24.0)[0] < 0.1
    assert report["oof_onset_recall"] > 0.9 and report["oof_onset_f1"] > 0.08


def test_contact_times_move_by_the_lag_learned_per_band_and_kind() -> None:
    """Where the tracker sees footfalls a steady fraction of a frame early, the selection
    learns that lag for steps in their frame-rate band (impacts, timed as noisily but without
    a lag: none), reports the onset error before and after out of fold, and — asked to —
    moves kept steps by it; by default, and in a selection written before the correction,
    there is none."""
    from models import contact_scorer as cs

    rng = np.random.default_rng(5)
    fps, lag = 60.0, 0.2                              # steps seen 0.2 frame early
    clips = []
    for i in range(30):
        onset, curve, base, hits = _hits_and_turns(rng, i, (0.5, 0.95), (0.05, 0.5))
        if i % 2 == 0:
            for b in base:
                if min(abs(b["t"] - h) for h in hits) < 0.01:
                    b["kind"], b["t"] = "step", b["t"] - lag / fps
        clips.append((cs.candidates(onset, curve, base, fps, 0.0), hits))
    selection, report = cs.fit_selection(clips, 0.0, folds=2, members=1, hidden=4,
                                         correct_timing=True)
    assert report["timing"]["applied"]
    lags = {(b, k): v for b, k, v in report["timing"]["lags_frames"]}
    high = cs.band_of(fps)
    assert lags[(high, "step")] == pytest.approx(lag, abs=0.06)
    assert (high, "impact") not in lags               # their timing noise is no lag
    timed = report["timing"]["bands"][high]
    assert timed["contacts"] >= 80 and timed["oof_median_ms"] < 0.75 * timed["median_ms"]

    restored = cs.Selection.from_dict(json.loads(json.dumps(selection.to_dict())))
    stored = selection.to_dict()
    del stored["timing"]                     # as written before the correction, or without it
    old = cs.Selection.from_dict(json.loads(json.dumps(stored)))
    assert restored.timing == selection.timing and old.timing is None
    plain, plain_report = cs.fit_selection(clips, 0.0, folds=2, members=1, hidden=4)
    assert plain.timing is None and "timing" not in plain.to_dict()   # measured, not applied
    assert plain_report["timing"]["lags_frames"] == report["timing"]["lags_frames"]
    assert not plain_report["timing"]["applied"]

    def step_error(sel: cs.Selection) -> float:
        errors = [min(abs(e["t"] - h) for h in hits) for c, hits in clips[::2]
                  for e in sel.events(c) if e.get("kind") == "step"]
        assert len(errors) >= 30
        return float(np.median(errors))
    assert step_error(restored) < 0.5 * step_error(old)
    moved, kept = restored.events(clips[0][0]), old.events(clips[0][0])  # the same choice
    assert [e["confidence"] for e in moved] == [e["confidence"] for e in kept]
    assert [e["t"] - k["t"] for e, k in zip(moved, kept)] == pytest.approx(
        [restored.timing.shift_s(e.get("kind", ""), fps) for e in moved])


def test_silence_has_no_onsets_and_strength_follows_level() -> None:
    assert curve_events.events_from_curve(np.full(500, 1e-4), 125.0) == []
    loud = rms_targets.rms_target(clicks([1.0]), 48000)
    soft = rms_targets.rms_target(clicks([1.0]) * 0.2, 48000)
    s_loud = curve_events.events_from_curve(loud, 125.0)[0]["strength"]
    s_soft = curve_events.events_from_curve(soft, 125.0)[0]["strength"]
    assert s_loud - s_soft == pytest.approx(14 / 48, abs=0.03)  # 14 dB apart, 48 dB range


def test_metrics_by_their_definitions() -> None:
    true = np.array([0.0, 0.1, 0.5, 0.1])
    assert em.e_l1_tfoley(true * 2, true) == pytest.approx(np.mean(true))
    assert em.e_l1_videofoley(true * 2, true) == pytest.approx(0.0)  # gain does not count
    assert em.acc_at_k(np.array([3, 5, 9]), np.array([3, 6, 1]), 1) == pytest.approx(1 / 3)
    assert em.acc_at_k(np.array([3, 5, 9]), np.array([3, 6, 1]), 5) == pytest.approx(2 / 3)
    counts = em.OnsetCounts.of([0.10, 0.52, 0.90], [0.11, 0.50, 1.30])
    scores = em.onset_scores(counts)
    assert scores["onset_f1@25ms"] == pytest.approx(2 / 3)  # 0.10↔0.11 and 0.52↔0.50
    assert scores["onset_f1@50ms"] == pytest.approx(2 / 3)
    assert scores["onset_error_median_ms"] == pytest.approx(15.0)
    # one prediction cannot match two truths; a silent clip predicted silent is perfect
    assert em.match_onsets([0.5], [0.49, 0.51], 0.05) == [(0.5, 0.49)] or \
        em.match_onsets([0.5], [0.49, 0.51], 0.05) == [(0.5, 0.51)]
    # madmom's combine_events: each onset within 30 ms of the one before, as combined so far,
    # into their mean (0.50 and 0.52 → 0.51, then 0.525 → 0.5175); a gap of exactly 30 ms
    # combines at any magnitude
    assert em.combine_onsets([0.52, 0.10, 0.50, 0.525, 0.90]) == pytest.approx(
        [0.10, 0.5175, 0.90])
    assert em.combine_onsets([0.0, 0.02, 0.04]) == pytest.approx([0.025])
    assert em.combine_onsets([1000.0, 1000.03]) == pytest.approx([1000.015])
    # as many pairs as there can be (mir_eval's maximum matching; nearest-first pairs 0.09
    # with 0.05 and leaves the rest unmatched), then the least total error among them
    assert em.match_onsets([0.0, 0.09], [0.05, 0.14], 0.05) == [(0.0, 0.05), (0.09, 0.14)]
    assert em.match_onsets([0.10, 0.16], [0.12, 0.15], 0.05) == [(0.10, 0.12), (0.16, 0.15)]
    lagging = [0.065 + 0.12 * k for k in range(17)]                 # a walker heard 65 ms late
    steps = [0.12 * k for k in range(17)]
    assert len(em.match_onsets(lagging, steps, 0.1)) == 17
    # madmom's conventions for empty lists: nothing predicted is nothing wrong, no onset to
    # find is nothing missed — so a false event on a silent clip costs precision, not recall
    silent_fp = em.onset_scores(em.OnsetCounts.of([0.3], []))
    assert (silent_fp["onset_precision@50ms"], silent_fp["onset_recall@50ms"],
            silent_fp["onset_f1@50ms"]) == (0.0, 1.0, 0.0)
    missed = em.onset_scores(em.OnsetCounts.of([], [0.3]))
    assert (missed["onset_precision@50ms"], missed["onset_recall@50ms"],
            missed["onset_f1@50ms"]) == (1.0, 0.0, 0.0)
    # Video-Foley E-L1: a curve flatter than −60 dBFS is silence, not a shape to stretch
    rng = np.random.default_rng(0)
    room_tone = 2e-4 + 1e-4 * rng.random(200)
    assert em.e_l1_videofoley(np.zeros(200), room_tone) == 0.0
    assert em.e_l1_videofoley(room_tone, np.zeros(200)) == 0.0
    assert em.e_l1_videofoley(np.r_[np.zeros(100), np.full(100, 0.3)], room_tone) == 0.5
    two_feet = em.OnsetCounts.of([0.505], [0.50, 0.52])  # 20 ms apart: one onset, found
    assert two_feet.true == 1 and two_feet.matched[0.025] == 1
    assert em.OnsetCounts.of([0.50], [0.50, 0.54]).true == 2  # 40 ms apart: two onsets
    assert em.onset_scores(em.OnsetCounts.of([], []))["onset_f1@50ms"] == 1.0
    assert math.isnan(em.onset_scores(em.OnsetCounts.of([], []))["onset_error_median_ms"])


def test_chance_moves_the_true_onsets_out_of_step_and_keeps_their_number() -> None:
    """Worked by hand: a 4 s clip with onsets at 0.5 and 2.1 s, moved by ¼ (1 s), ½ and ¾."""
    assert em.shifted_onsets([0.5, 2.1], 4.0, 0.25) == pytest.approx([1.5, 3.1])
    assert em.shifted_onsets([0.5, 2.1], 4.0, 0.75) == pytest.approx([1.1, 3.5])  # 5.1 wraps
    # events on the true onsets: in sync F1 1, out of sync 0 (no moved onset within 50 ms)
    sync = em.chance_scores([[0.5, 2.1]], [[0.5, 2.1]], [4.0])
    assert sync["onset_f1@50ms"] == 0.0
    # a grid of events every 0.1 s finds a moved onset anywhere: chance recall 1 at any shift,
    # precision 2 of 40 — what density alone scores
    grid = [round(0.1 * k, 2) for k in range(40)]
    dense = em.chance_scores([grid], [[0.5, 2.1]], [4.0])
    assert dense["onset_recall@50ms"] == 1.0
    assert dense["onset_precision@50ms"] == pytest.approx(2 / 40)
    # shifts averaged: one shift of three lands the single onset on the single event
    one = em.chance_scores([[1.5]], [[0.5]], [4.0])
    assert one["onset_f1@50ms"] == pytest.approx(1 / 3)


def test_onset_figures_by_frame_rate_pool_each_band_on_its_own() -> None:
    from flows.evaluate import by_frame_rate

    def clip(pred: list[float], true: list[float]) -> em.ClipScores:
        return em.ClipScores({}, em.OnsetCounts.of(pred, true))

    # two clips at 12 and 15 fps, one at 60; the 20–40 fps band holds none and is left out
    per_clip = {"model": [clip([0.5, 1.0], [0.5, 1.0]), clip([2.0], [2.0, 3.0]),
                          clip([0.2, 0.9], [0.2])],
                "baseline": [clip([0.5], [0.5, 1.0]), clip([], [2.0, 3.0]),
                             clip([0.25], [0.2])]}
    rows = by_frame_rate(per_clip, [0, 0, 2], (20.0, 40.0))
    assert [(r["frame_rate"], r["clips"], r["true_onsets"]) for r in rows] == [
        ("under 20 fps", 2, 4), ("40 fps and over", 1, 1)]
    low, high = rows
    assert low["model"]["onset_recall@100ms"] == pytest.approx(3 / 4)
    assert low["model"]["onset_f1@50ms"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert low["baseline"]["onset_recall@100ms"] == pytest.approx(1 / 4)
    assert high["model"]["onset_f1@50ms"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert high["baseline"]["onset_error_median_ms"] == pytest.approx(50.0)


def test_onset_timing_splits_the_error_by_where_the_time_comes_from() -> None:
    tracker = [0.100, 0.700, 1.300]           # the reference's times, one of them false
    model = [0.100, 0.400, 1.012]             # keeps one contact, adds two of its own
    true = [0.101, 0.410, 1.000, 1.600]
    timing = em.OnsetTiming.of(model, tracker, true)
    assert timing.tracked == pytest.approx([0.001])
    assert sorted(timing.untracked) == pytest.approx([0.010, 0.012])
    # only 0.101 is found by both (alike): the tracker's 0.700 and 1.300 are more than
    # ±100 ms from every true onset; 1.600 nobody finds
    assert timing.shared == [pytest.approx((0.001, 0.001))]
    both = (timing + em.OnsetTiming.of([2.0], [2.05], [2.02])).summary()
    assert both["tracked"] == {"onsets": 1, "median_ms": pytest.approx(1.0)}
    assert both["untracked"]["onsets"] == 3 and both["untracked"]["median_ms"] == \
        pytest.approx(12.0)
    assert both["found_by_both"] == {"onsets": 2, "median_ms": pytest.approx(10.5),
                                     "reference_median_ms": pytest.approx(15.5),
                                     "timed_alike": 1}
    empty = em.OnsetTiming.of([], [], [0.5]).summary()
    assert empty["tracked"] == {"onsets": 0, "median_ms": None}


def _clip(t_true: list[float], t_pred: list[float], l1: float) -> em.ClipScores:
    return em.ClipScores({"e_l1_tfoley": l1}, em.OnsetCounts.of(t_pred, t_true))


def test_paired_bootstrap_tells_a_real_difference_from_a_clip_or_two(tmp_path: Path) -> None:
    """The same clips scored by two estimators: one that is better on every clip is 'better'
    with an interval that excludes zero; one onset apart on a single clip of forty is 'no
    clear difference', though the point estimates differ; the pooled scores are the ones the
    evaluation reports."""
    rng = np.random.default_rng(0)
    truths = [sorted(rng.uniform(0.2, 3.8, 3).tolist()) for _ in range(40)]
    good = [_clip(t, [u + 0.001 for u in t], 0.01) for t in truths]
    noisy = [_clip(t, [u + 0.004 for u in t] + [0.1], 0.05 + 0.01 * i % 3)
             for i, t in enumerate(truths)]
    cmp = em.paired_bootstrap(good, noisy, draws=300)
    assert cmp["e_l1_tfoley"]["verdict"] == "better"
    assert cmp["e_l1_tfoley"]["ci95"][1] < 0
    assert cmp["onset_precision@50ms"]["verdict"] == "better"
    assert cmp["onset_error_median_ms"]["verdict"] == "better"  # 1 ms against 4 ms
    assert cmp["onset_recall@50ms"]["verdict"] == "no clear difference"  # both find all
    assert cmp["onset_recall@50ms"]["difference"] == 0.0
    back = em.paired_bootstrap(noisy, good, draws=300)
    assert back["e_l1_tfoley"]["verdict"] == "worse"
    from tasks.plots import plot_comparison  # the forest plot of `foley eval envelope --plot`

    png = plot_comparison(back, tmp_path / "forest.png", title="noisy − good")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    one_less = [_clip(t, t[:-1] if i == 0 else t, 0.01) for i, t in enumerate(truths)]
    cmp = em.paired_bootstrap(one_less, good, draws=300)
    assert cmp["onset_recall@50ms"]["difference"] < 0
    assert cmp["onset_recall@50ms"]["verdict"] == "no clear difference"
    pooled = em.pooled_scores(one_less)
    onsets = sum(c.onsets.true for c in good)  # 120 drawn, a few closer than 30 ms merge
    assert pooled["onset_recall@50ms"] == pytest.approx((onsets - 1) / onsets)
    assert pooled["e_l1_tfoley"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="same clips"):
        em.paired_bootstrap(good, good[:-1])
    # silent clips: no onset matched, so no onset error to compare — said, not NaN in JSON
    silent = [_clip([], [], 0.01) for _ in range(6)]
    hushed = em.paired_bootstrap(silent, silent, draws=50)
    assert hushed["onset_error_median_ms"] == {"difference": None, "ci95": None,
                                               "verdict": "undefined", "draws": 0}
    assert hushed["onset_recall@50ms"]["verdict"] == "no clear difference"
    assert json.loads(json.dumps(em.json_safe(hushed), allow_nan=False)) == em.json_safe(hushed)
    assert plot_comparison(hushed, tmp_path / "hushed.png", title="silent").is_file()


def test_a_curve_on_its_own_scale_is_fitted_to_the_true_level() -> None:
    """`fit_level`: the gain and floor that put a strength curve on the RMS scale, as the
    oracle reference of `foley eval envelope` does for the motion baseline."""
    rng = np.random.default_rng(1)
    strengths = [np.clip(rng.normal(0.2, 0.3, 300), 0, 1) for _ in range(5)]
    truths = [0.05 * s + 0.002 for s in strengths]
    g, f = em.fit_level(strengths, truths)
    assert g == pytest.approx(0.05, rel=0.02) and f == pytest.approx(0.002, abs=2e-4)
    fitted = np.mean([em.e_l1_tfoley(g * s + f, t) for s, t in zip(strengths, truths)])
    assert fitted < 1e-4 < np.mean([em.e_l1_tfoley(s, t) for s, t in zip(strengths, truths)])
    assert em.fit_level([np.zeros(10)], [np.full(10, 0.01)])[1] == pytest.approx(0.01)

@pytest.mark.slow
def test_train_then_evaluate_then_predict_in_the_pass(tmp_path: Path, sfx_dir: Path) -> None:
    """A few procedural clips, a few epochs: the flow writes a loadable checkpoint with its
    card data, resumes where it stopped, and the evaluation scores both estimators."""
    import torch

    from flows.evaluate import evaluate, format_table
    from flows.train import checkpoint_name, train
    from models import rms_mapper
    from tasks.dataset import build_procedural

    torch.set_num_threads(1)
    data = tmp_path / "data"
    build_procedural(data, n_clips=10, split="train", seed=0, workers=2, sfx_dir=sfx_dir)
    build_procedural(data, n_clips=3, split="heldout", seed=0, workers=2, sfx_dir=sfx_dir)
    cal = tmp_path / "cal"  # clips it never trains on, for the contact scorer
    build_procedural(cal, n_clips=4, split="train", seed=1000, workers=2, sfx_dir=sfx_dir)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="10 of its clips .* this run"):  # before training
        train(data, tmp_path / "never", epochs=1, threads=1, calibration=data)
    assert not (tmp_path / "never").exists()
    first = train(data, out, epochs=3, batch_size=4, threads=1, max_minutes=0)  # interrupted
    assert first["epochs_run"] == 1
    resumed = train(data, out, epochs=3, batch_size=4, threads=1,  # continues at epoch 2
                    calibration=cal)
    assert resumed["selection"]["clips"] == 4 and resumed["selection"]["data"] == str(cal)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:1] == first["history"]
    with pytest.raises(ValueError, match="resume it with the same --epochs"):
        train(data, out, epochs=5, batch_size=4, threads=1)
    ckpt = out / checkpoint_name("tiny")
    model, config, meta = rms_mapper.load_checkpoint(ckpt)
    assert config.preset == "tiny" and "onset_offset_s" in meta and meta["training"]["seed"] == 0
    assert set(meta["selection"]) >= {"contacts", "peaks", "thresholds", "band_edges"}
    assert meta["training"]["clips_seen"] == [f"clip_{i:05d}" for i in range(10)]
    assert (out / "curves.png").stat().st_size > 1000
    # recalibrating a trained checkpoint: never on its own training data; weights unchanged
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "calibrate", str(ckpt), str(data)])
    assert res.exit_code == 2 and "was trained on" in res.output, res.output
    res = runner.invoke(app, ["train", "envelope", str(data), "--out", str(tmp_path / "never"),
                              "--calibration", str(data)])
    assert res.exit_code == 2 and "this run" in res.output, res.output
    assert not (tmp_path / "never").exists()
    import shutil  # the same clips in another folder are still the clips it trained on

    shutil.copytree(data, tmp_path / "copy")
    res = runner.invoke(app, ["train", "calibrate", str(ckpt), str(tmp_path / "copy")])
    assert res.exit_code == 2 and "10 of its clips" in res.output, res.output
    recal = tmp_path / "recalibrated.safetensors"
    res = runner.invoke(app, ["train", "calibrate", str(ckpt), str(cal), "--out", str(recal),
                              "--prefer-recall"])
    assert res.exit_code == 0, res.output
    again, _cfg, meta2 = rms_mapper.load_checkpoint(recal)
    assert meta2["selection_report"]["clips"] == 4 and meta2["training"] == meta["training"]
    assert meta2["selection_report"]["threshold_rule"].startswith("fewest misses")
    assert meta["selection_report"]["threshold_rule"] == "best F1, recall at least the tracker's"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))
    # fine-tuning starts from the checkpoint (weights, input statistics) on a studio's clips:
    # six of the ten here, in their own folder; it has seen all ten, and says what it started from
    sub = tmp_path / "studio"
    sub.mkdir()
    index = json.loads((data / "index.json").read_text())
    index["clips"] = [c for c in index["clips"] if c["split"] == "train"][:6]
    for c in index["clips"]:
        os.link(data / c["file"], sub / c["file"])
    (sub / "index.json").write_text(json.dumps(index))
    tuned_dir = tmp_path / "tuned"
    with pytest.raises(ValueError, match="is a 'tiny' RMS-Mapper; fine-tune it with --preset tiny"):
        train(sub, tuned_dir, preset="base", epochs=1, threads=1, init=ckpt)
    tuned = train(sub, tuned_dir, epochs=1, lr=1e-9, batch_size=4, threads=1, init=ckpt,
                  calibration=cal)
    assert tuned["init"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert tuned["clips_seen"] == meta["training"]["clips_seen"]
    start, _cfg, _meta = rms_mapper.load_checkpoint(tuned_dir / checkpoint_name("tiny"))
    assert torch.equal(start.in_mean, model.in_mean) and torch.equal(start.in_std, model.in_std)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(start.parameters(),
                                                                 model.parameters()))
    with pytest.raises(ValueError, match="started from the checkpoint .* same --init"):
        train(sub, tuned_dir, epochs=1, threads=1)
    res = runner.invoke(app, ["train", "envelope", str(sub), "--init", str(tmp_path / "x.st")])
    assert res.exit_code == 2 and "x.st" in res.output, res.output
    with pytest.raises(ValueError, match="no validation clip"):  # clip_01000–03: none is
        train(cal, tmp_path / "never", epochs=1, threads=1)
    with pytest.raises(ValueError, match="is where this run writes"):
        train(sub, tuned_dir, epochs=1, threads=1, init=tuned_dir / checkpoint_name("tiny"))
    assert not (tmp_path / "never").exists()
    result = evaluate(data, ckpt, split="heldout")
    assert result["clips"] == 3
    for name in ("model", "baseline"):
        assert set(result[name]) >= {"e_l1_tfoley", "e_l1_videofoley", "acc@1", "acc@5",
                                     "acc@10", "onset_f1@25ms", "onset_f1@50ms",
                                     "onset_f1@100ms", "onset_error_median_ms",
                                     "onset_error_p90_ms"}
        assert 0.0 <= result[name]["e_l1_tfoley"] < 1.0
    assert result["model_inference_x_realtime"] > 1.0
    assert set(result["model_minus_baseline"]) == set(result["model"])
    for k, d in result["model_minus_baseline"].items():  # a paired interval around the gap
        assert d["difference"] == pytest.approx(result["model"][k] - result["baseline"][k],
                                                nan_ok=True)
        assert d["verdict"] in ("better", "worse", "no clear difference")
    # the model's matched onsets, split by where their time comes from, are all of them
    from tasks.dataset import iter_clips

    timing = result["onset_timing"]
    n_true = sum(len(em.combine_onsets([e["t"] for e in c.onsets]))
                 for c in iter_clips(data, split="heldout"))
    matched = result["model"]["onset_recall@100ms"] * n_true
    assert timing["tracked"]["onsets"] + timing["untracked"]["onsets"] == round(matched)
    assert timing["found_by_both"]["timed_alike"] <= timing["found_by_both"]["onsets"]
    # the frame-rate bands share out the clips, their onsets and the onsets each finds
    rows = result["by_frame_rate"]
    assert sum(r["clips"] for r in rows) == 3 and sum(r["true_onsets"] for r in rows) == n_true
    for name in ("model", "baseline"):
        assert sum(r[name]["onset_recall@100ms"] * r["true_onsets"] for r in rows) == \
            pytest.approx(result[name]["onset_recall@100ms"] * n_true)
    assert "by frame rate" in format_table(result)
    chance = result["onset_chance"]  # out of sync, the tracker's events score far lower
    assert chance["baseline"]["onset_f1@50ms"] < 0.5 * result["baseline"]["onset_f1@50ms"]
    assert "out of sync" in format_table(result)
    refs = result["curve_references"]       # what level alone scores, beside the model
    assert set(refs["silence"]) == set(em.CURVE_METRICS)
    assert refs["level_fitted_baseline"]["e_l1_tfoley"] <= result["baseline"]["e_l1_tfoley"]
    assert set(refs["model_minus_level_fitted_baseline"]) == set(em.CURVE_METRICS)
    assert "an oracle" in format_table(result)
    json.dumps(em.json_safe(result), allow_nan=False)  # the CLI prints it as strict JSON
    # the pass's estimator: an envelope of the contract, events with confidence, from the model
    from models import v2a_envelope
    from tasks.decisions import validate_envelope

    clip = next(iter_clips(data, split="heldout"))
    duration = float(clip.features["n_frames"]) / float(clip.features["fps"])
    env = v2a_envelope.estimate_envelope(model, meta, clip.features, shot="SH010",
                                         duration_s=duration)
    validate_envelope(env, where="model envelope")
    assert env["rate_hz"] == 100 and env["source"] == "rms-mapper:tiny"
    assert all(0.0 <= e["confidence"] <= 1.0 for e in env["events"])


@pytest.mark.slow
def test_the_pass_predicts_with_the_shipped_model(tmp_path: Path) -> None:
    """`foley run --envelope model` on the demo reel: every shot gets an envelope from the
    shipped checkpoint, recorded with its hash in provenance."""
    import subprocess
    import sys

    from tasks.envelope import CHECKPOINT

    assert CHECKPOINT.is_file(), f"the shipped checkpoint {CHECKPOINT} is missing"
    env = {**__import__("os").environ, "FOLEY_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-m", "flows.cli", "demo", "make", str(tmp_path / "demo")],
                   check=True, env=env, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run",
                           str(tmp_path / "demo" / "demo_reel.otio"), "--out",
                           str(tmp_path / "out"), "--envelope", "model"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for shot in manifest["shots"]:
        doc = json.loads((tmp_path / "out" / shot["envelope"]["uri"]).read_text())
        assert doc["source"] == "rms-mapper:tiny", shot["name"]
    import sqlite3

    rows = sqlite3.connect(tmp_path / "home" / "foley.db").execute(
        "SELECT DISTINCT checkpoint_sha256 FROM activities WHERE task = 'envelope-predict'"
    ).fetchall()
    import hashlib

    assert rows == [(hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest(),)]

    # a studio's own calibration: another checkpoint, by option or FOLEY_ENVELOPE_CHECKPOINT
    from models import rms_mapper

    model, config, meta = rms_mapper.load_checkpoint(CHECKPOINT)
    strict = json.loads(json.dumps(meta["selection"]))
    strict["thresholds"] = [[1.0, 1.01]] * len(strict["thresholds"])  # keeps next to nothing
    mine = tmp_path / "mine.safetensors"
    rms_mapper.save_checkpoint(model, config, mine, {**meta, "selection": strict})
    reel = str(tmp_path / "demo" / "demo_reel.otio")

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", "run", reel, *args],
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=900)

    bad = tmp_path / "not_a_checkpoint.safetensors"
    bad.write_bytes(b"\x00" * 64)
    for args, extra, says in (
            (["--envelope-checkpoint", str(mine)], {}, "add --envelope model"),
            (["--envelope", "model", "--envelope-checkpoint", str(tmp_path / "none.st")], {},
             "no envelope model checkpoint at"),
            (["--envelope", "model"], {"FOLEY_ENVELOPE_CHECKPOINT": str(bad)},
             "not a readable RMS-Mapper checkpoint")):
        proc = run("--out", str(tmp_path / "never"), *args, **extra)
        assert proc.returncode == 2 and says in proc.stderr, proc.stdout + proc.stderr
        assert not (tmp_path / "never").exists()
    proc = run("--out", str(tmp_path / "mine"), "--envelope", "model",
               FOLEY_ENVELOPE_CHECKPOINT=str(mine))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shas = {r[0] for r in sqlite3.connect(tmp_path / "home" / "foley.db").execute(
        "SELECT DISTINCT checkpoint_sha256 FROM activities WHERE task = 'envelope-predict'")}
    assert hashlib.sha256(mine.read_bytes()).hexdigest() in shas and len(shas) == 2
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    events = [len(json.loads((tmp_path / "mine" / s["envelope"]["uri"]).read_text())["events"])
              for s in manifest["shots"] if s.get("envelope")]
    assert events and max(events) == 0  # its thresholds, not the shipped ones


def test_rhythm_gap_finds_the_footfall_between_two_the_tracker_saw() -> None:
    """An onset-head peak where a walker's lost footfall belongs is on the rhythm (gap 0);
    one far from any stride is not (capped at 0.5 s), nor is any peak in a shot without
    contacts."""
    from models import contact_scorer as cs

    steps = [1.0, 1.5, 2.0, 3.0]                     # the footfall at 2.5 s was lost
    assert cs.rhythm_gap(2.5, steps) == pytest.approx(0.0, abs=1e-9)
    assert cs.rhythm_gap(9.0, steps) == 0.5
    assert cs.rhythm_gap(2.5, []) == 0.5


def test_thresholds_prefer_recall_among_ties_and_old_selections_still_read() -> None:
    """Per band, the thresholds chosen with prefer_recall are within one standard error of the
    best out-of-fold F1 and recall at least as much as the best F1's pair (the default takes
    that pair); a selection fitted before the motion features (no feature names in its JSON)
    scores on the columns it was fitted on."""
    from models import contact_scorer as cs

    # overlapping cues and uninformative motion: the choice of threshold matters
    clips = _uninformative_motion_clips((0.2, 0.9), (0.05, 0.6))
    selection, report = cs.fit_selection(clips, 0.0, folds=4, members=2, prefer_recall=True)
    chosen = report["band_choices"][cs.band_of(24.0)]
    assert chosen["f1"] >= chosen["best_f1"] - chosen["f1_se"] - 1e-9
    assert chosen["recall"] >= chosen["best_f1_recall"]
    assert 0 < chosen["f1_se"] < 0.2
    assert selection.thresholds_for(24.0) == tuple(chosen["thresholds"])
    assert selection.to_dict()["contact_features"] == list(cs.CONTACT_FEATURES)

    best, best_report = cs.fit_selection(clips, 0.0, folds=4, members=2)
    assert best_report["band_choices"][0]["f1"] == best_report["band_choices"][0]["best_f1"]

    legacy, _ = cs.fit_selection(clips, 0.0, folds=4, members=2,
                                 contact_features=cs.BASE_CONTACT_FEATURES,
                                 peak_features=cs.BASE_PEAK_FEATURES)
    stored = legacy.to_dict()
    del stored["contact_features"], stored["peak_features"]   # as written before them
    old = cs.Selection.from_dict(json.loads(json.dumps(stored)))
    assert old.contact_features == cs.BASE_CONTACT_FEATURES
    for c, _ in clips[:5]:
        assert [e["t"] for e in old.events(c)] == [e["t"] for e in legacy.events(c)]
