"""Which tracked contacts sound, and which of the onset head's own peaks are real: a small
classifier over the RMS-Mapper's outputs around each candidate.

The motion tracker (`models.motion_baseline`) proposes contacts — every place an object's
motion stops or reverses — at sub-frame times; most of the sounding onsets of a scene are
among them, but so are turns in mid-air, bounces too soft to hear and contacts off the edge of
the picture. The RMS-Mapper's onset head hears most of the difference; a threshold on its
peak alone leaves information unused that decides the hard cases: how sharply its loudness
curve rises there, where in the frame the contact is, what the tracker says of it (kind,
confidence, speed, and how the object moved before and after: a bounce falls and rises, a
turn in mid-air keeps its speed, a footfall stops), how finely the frame rate lets the
tracker resolve it, and how the candidate compares with its neighbours (two proposals of one
bounce); for an untracked peak, also whether it falls in the rhythm of the tracked contacts
around it (a footfall the tracker lost between two it saw). This module turns each
candidate into those numbers (`contact_features`, `peak_features`) and scores them — contacts
with a bag of five one-hidden-layer networks (`Bag`, `Scorer`), untracked peaks with a
logistic — whose weights live in the checkpoint's metadata, fitted (`fit_selection`) on clips
the RMS-Mapper never trained on, so its outputs there are what the pass sees. Thresholds are
chosen per frame-rate band (`BAND_EDGES`): how many contacts the tracker resolves, and so
what an onset-head peak away from them means, depends on it. The same fit measures how late
true onsets fall after the tracker's contact times, per band and kind (`Timing`); on request
kept contacts move by it.

Labels (`labels`): a candidate is positive when it is the candidate nearest to a true onset
within ±`TOL_S` (the metric's ±50 ms), so a second proposal of the same sound is a negative,
as the onset metric counts it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import curve_events, motion_baseline, rms_targets

TOL_S = 0.05
HEAR_S = 0.05      # the onset head's response is read this far either side of a candidate
RISE_S = 0.08      # the loudness curve's rise, this far
NEIGHBOUR_S = 0.15
RHYTHM_S = (0.2, 1.2)  # intervals between tracked contacts that can be a walker's stride
KINDS = ("impact", "step", "scrape")
BASE_CONTACT_FEATURES = (
    "head_max_logit", "head_at_logit", "head_mean", "head_peak_offset", "rise_db", "post_db",
    "tracker_confidence", "tracker_strength", "y", "edge", "kind_impact", "kind_step",
    "kind_scrape", "frame_interval", "neighbour_gap", "neighbour_head_margin")
CONTACT_FEATURES = BASE_CONTACT_FEATURES + motion_baseline.MOTION_FIELDS
BASE_PEAK_FEATURES = ("peak_logit", "rise_db", "post_db", "frame_interval", "candidate_gap",
                      "candidate_head_logit")
PEAK_FEATURES = BASE_PEAK_FEATURES + ("rhythm_gap", "steps_in_shot")


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _rise(db: np.ndarray, k: int) -> tuple[float, float]:
    w = int(round(RISE_S * rms_targets.RATE_HZ))
    k = min(max(k, 0), len(db) - 1)
    pre, post = db[max(0, k - w):max(1, k)], db[k:k + w + 1]
    return float(post.max() - pre.min()) / 20, float(post.max()) / 40


def _head_max(onset: np.ndarray, t: float) -> float:
    rate, w = rms_targets.RATE_HZ, int(round(HEAR_S * rms_targets.RATE_HZ))
    k = int(round(t * rate))
    near = onset[max(0, k - w):k + w + 1]
    return float(near.max()) if len(near) else 0.0


def _motion_of(c: dict[str, Any]) -> list[float]:
    if "motion" not in c:
        raise ValueError(f"the tracked contact at {c['t']:.3f} s carries no motion descriptors: "
                         "track with motion_baseline.estimate_envelope(..., motion=True)")
    return [float(c["motion"][k]) for k in motion_baseline.MOTION_FIELDS]


def contact_features(onset: np.ndarray, curve: np.ndarray, contacts: Sequence[dict[str, Any]],
                     fps: float) -> np.ndarray:
    """One row of CONTACT_FEATURES per tracked contact (`motion_baseline` events tracked with
    `motion=True`)."""
    rate, w = rms_targets.RATE_HZ, int(round(HEAR_S * rms_targets.RATE_HZ))
    db = curve_events.level_db(curve)
    heads = [_head_max(onset, c["t"]) for c in contacts]
    # neighbours by time through the sorted order (a long shot has thousands of contacts): the
    # same pairs, and the same arithmetic on them, as comparing every contact with every other
    ts = np.array([float(c["t"]) for c in contacts])
    order = np.argsort(ts, kind="stable")
    ranked = ts[order]
    rank = np.empty(len(ts), int)
    rank[order] = np.arange(len(ts))
    rows = []
    for i, c in enumerate(contacts):
        k = int(round(c["t"] * rate))
        lo = max(0, min(k - w, len(onset) - 1))
        near = onset[lo:k + w + 1]
        if not len(near):
            near = np.zeros(1)
        at = float(onset[min(max(k, 0), len(onset) - 1)])
        peak_off = (lo + int(np.argmax(near)) - k) / rate / HEAR_S
        rise, post = _rise(db, k)
        r = rank[i]
        beside = [int(order[q]) for q in (r - 1, r + 1) if 0 <= q < len(ts)]
        gap = min((abs(contacts[j]["t"] - c["t"]) for j in beside), default=1.0)
        lo, hi = np.searchsorted(ranked, [ts[i] - 2 * NEIGHBOUR_S, ts[i] + 2 * NEIGHBOUR_S])
        close = [heads[j] for j in sorted(int(j) for j in order[lo:hi]) if j != i
                 and abs(contacts[j]["t"] - c["t"]) <= NEIGHBOUR_S]
        margin = _logit(heads[i]) - (max(_logit(h) for h in close) if close else -10.0)
        x, y = float(c.get("x", 0.5)), float(c.get("y", 0.5))
        rows.append([
            _logit(heads[i]), _logit(at), float(near.mean()), peak_off, rise, post,
            float(c.get("confidence", 0.0)), float(c.get("strength", 0.0)), y,
            min(x, 1 - x, y, 1 - y), *(float(c.get("kind") == q) for q in KINDS),
            24.0 / fps, min(gap, 1.0), float(np.clip(margin, -10, 10)) / 10, *_motion_of(c)])
    return np.asarray(rows, np.float32).reshape(-1, len(CONTACT_FEATURES))


def rhythm_gap(t: float, times: Sequence[float]) -> float:
    """How far (s, at most 0.5) time t is from where the rhythm of `times` puts a beat: one
    stride on from two contacts (2a − b) or midway between two a stride apart each way (a
    footfall the tracker lost between two it saw)."""
    lo, hi = RHYTHM_S
    near = [u for u in times if abs(u - t) <= 2 * hi + 0.1]
    best = 0.5
    for a in near:
        for b in near:
            if lo < abs(a - b) < hi:
                best = min(best, abs(t - (2 * a - b)))
            if 2 * lo < b - a < 2 * hi:
                best = min(best, abs(t - (a + b) / 2))
    return best


def peak_features(onset: np.ndarray, curve: np.ndarray, peaks: Sequence[dict[str, float]],
                  contacts: Sequence[dict[str, Any]], fps: float) -> np.ndarray:
    """One row of PEAK_FEATURES per onset-head peak (`curve_events.onset_peaks`)."""
    db = curve_events.level_db(curve)
    times = [c["t"] for c in contacts]
    steps = min(sum(c.get("kind") == "step" for c in contacts), 6) / 6
    rows = []
    for m in peaks:
        rise, post = _rise(db, int(round(m["t"] * rms_targets.RATE_HZ)))
        gaps = [abs(c["t"] - m["t"]) for c in contacts]
        j = int(np.argmin(gaps)) if gaps else -1
        rows.append([_logit(m["p"]), rise, post, 24.0 / fps, min(gaps[j], 1.0) if gaps else 1.0,
                     _logit(_head_max(onset, contacts[j]["t"])) if gaps else -10.0,
                     rhythm_gap(m["t"], times) * 10, steps])
    return np.asarray(rows, np.float32).reshape(-1, len(PEAK_FEATURES))


def labels(times: Sequence[float], truth: Sequence[float], tol: float = TOL_S) -> np.ndarray:
    """1 for the candidate nearest to each true onset within ±tol, else 0."""
    y = np.zeros(len(times), np.float32)
    if not len(times):
        return y
    t = np.asarray(times, np.float64)
    for u in truth:
        d = np.abs(t - u)
        j = int(np.argmin(d))
        if d[j] <= tol:
            y[j] = 1.0
    return y


@dataclass(frozen=True)
class Scorer:
    """Standardize, one hidden tanh layer (or none: logistic), sigmoid."""
    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray | None
    b1: np.ndarray | None
    w2: np.ndarray
    b2: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        h = (np.asarray(x, np.float64) - self.mean) / self.std
        if self.w1 is not None:
            h = np.tanh(h @ self.w1 + self.b1)
        return 1 / (1 + np.exp(-(h @ self.w2 + self.b2)))

    def to_dict(self) -> dict[str, Any]:
        def lst(a: np.ndarray | None) -> Any:
            return None if a is None else np.round(np.asarray(a, np.float64), 6).tolist()
        return {"mean": lst(self.mean), "std": lst(self.std), "w1": lst(self.w1),
                "b1": lst(self.b1), "w2": lst(self.w2), "b2": round(float(self.b2), 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scorer:
        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.asarray(v, np.float64)
        return cls(arr(d["mean"]), arr(d["std"]), arr(d["w1"]), arr(d["b1"]), arr(d["w2"]),
                   float(d["b2"]))


@dataclass(frozen=True)
class Bag:
    """The mean probability of scorers fitted from different initial weights (a bag)."""
    members: tuple[Scorer, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m(x) for m in self.members], axis=0) if len(x) else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        return {"members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bag | Scorer:
        if "members" not in d:
            return Scorer.from_dict(d)
        return cls(tuple(Scorer.from_dict(m) for m in d["members"]))


def fit_bag(x: np.ndarray, y: np.ndarray, *, members: int = 5, hidden: int = 8,
            l2: float = 1e-3, seed: int = 0) -> Bag:
    """`members` scorers of `hidden` units from seeds seed, seed + 1, …"""
    return Bag(tuple(fit(x, y, hidden=hidden, l2=l2, seed=seed + k) for k in range(members)))


def fit(x: np.ndarray, y: np.ndarray, *, hidden: int = 8, l2: float = 1e-2, seed: int = 0,
        steps: int = 300) -> Scorer:
    """Fit a Scorer by full-batch L-BFGS on binary cross-entropy (+ l2 on the weights)."""
    import torch

    x = np.asarray(x, np.float64)
    if not len(x) or np.all(y == y[0]):  # nothing to learn from: a constant score
        prior = float(np.mean(y)) if len(x) else 0.0
        return Scorer(np.zeros(x.shape[1]), np.ones(x.shape[1]), None, None,
                      np.zeros(x.shape[1]), _logit(prior))
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = torch.tensor((x - mean) / std, dtype=torch.float64)
    ys = torch.tensor(np.asarray(y, np.float64))
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    if hidden:
        w1 = (torch.randn(d, hidden, generator=g, dtype=torch.float64) / math.sqrt(d)).requires_grad_()
        b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
        w2 = (torch.randn(hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)).requires_grad_()
        weights = [w1, w2]
    else:
        w1 = b1 = None
        w2 = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        weights = [w2]
    b2 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    params = weights + [b2] + ([b1] if b1 is not None else [])
    opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

    def logits() -> Any:
        h = torch.tanh(xs @ w1 + b1) if w1 is not None else xs
        return h @ w2 + b2

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(), ys)
        loss = loss + l2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)

    def np_(t: Any) -> np.ndarray | None:
        return None if t is None else t.detach().numpy().copy()
    return Scorer(mean, std, np_(w1), np_(b1), np_(w2), float(b2.item()))


PEAK_FLOOR = 0.2     # onset-head peaks under this are not candidates
UNTRACKED_S = 0.05   # a peak this close to a tracked contact is that contact's business
MATCH_S = 0.1        # a kept peak this close to a kept event is the same sound


BAND_EDGES = (20.0, 40.0)  # fps: under 20 the tracker misses steps between frames; 40 and
                           # over it resolves nearly every contact (thresholds differ)


def band_of(fps: float, edges: Sequence[float] = BAND_EDGES) -> int:
    return int(sum(fps >= e for e in edges))


def band_names(edges: Sequence[float] = BAND_EDGES) -> list[str]:
    """What a reader calls each band of `band_of`: "under 20 fps", "20–40 fps", …"""
    return ([f"under {edges[0]:g} fps"] + [f"{a:g}–{b:g} fps" for a, b in zip(edges, edges[1:])]
            + [f"{edges[-1]:g} fps and over"])


BOOTSTRAP = 200         # resamplings for standard errors (thresholds, lags)
TIMING_TOL_S = 0.025    # a tracked contact this close to a true onset times it
MIN_TIMING_ROWS = 10    # a (band, kind) cell with fewer timed contacts is not corrected
MAX_LAG_FRAMES = 0.5    # a correction is never more than half a frame
LAG_Z = 2.0             # a cell's lag is used when this many standard errors from 0


@dataclass(frozen=True)
class Timing:
    """How late the true onsets fall after the tracker's contact times, in frames, per
    frame-rate band (`band_of`) and tracker kind: the typical (true − tracked) · fps of the
    calibration clips' timed contacts (`fit_timing`). The tracker times a contact as the
    instant the velocity switches from its trend before to its trend after; where the picture
    eases into a contact (a foot settling, the flow grid smoothing a small region), the switch
    it sees comes early by a steady fraction of a frame, which this measures and `moved`
    removes."""
    lags: tuple[tuple[int, str, float], ...] = ()      # (band, kind, frames)
    band_edges: tuple[float, ...] = BAND_EDGES

    def lag(self, band: int, kind: str) -> float:
        """Frames to add to a tracked contact of `kind` in frame-rate band `band`."""
        return next((lag for b, k, lag in self.lags if b == band and k == kind), 0.0)

    def shift_s(self, kind: str, fps: float) -> float:
        """Seconds to add to a tracked contact of `kind` at `fps`."""
        return self.lag(band_of(fps, self.band_edges), kind) / fps

    def moved(self, c: Candidates) -> Candidates:
        """One clip's candidates with the tracked contacts moved by their lag."""
        contacts = [{**b, "t": b["t"] + self.shift_s(str(b.get("kind", "impact")), c.fps)}
                    for b in c.contacts]
        return Candidates(contacts, c.contact_x, c.peaks, c.peak_x, c.fps)

    def to_dict(self) -> dict[str, Any]:
        return {"lags_frames": [[b, k, lag] for b, k, lag in self.lags],
                "band_edges": list(self.band_edges)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(tuple((int(b), str(k), float(lag)) for b, k, lag in d["lags_frames"]),
                   tuple(float(e) for e in d["band_edges"]))


def timed_contacts(c: Candidates, truth: Sequence[float], tol: float = TIMING_TOL_S
                   ) -> list[tuple[int, str, float]]:
    """(band, kind, (true − tracked) · fps) of each tracked contact that is the contact nearest
    to a true onset within ±tol."""
    rows = []
    times = np.asarray([b["t"] for b in c.contacts], np.float64)
    for u in truth:
        if not len(times):
            break
        j = int(np.argmin(np.abs(times - u)))
        if abs(times[j] - u) <= tol:
            rows.append((band_of(c.fps), str(c.contacts[j].get("kind", "impact")),
                         (u - times[j]) * c.fps))
    return rows


def shorth(x: np.ndarray) -> float:
    """The midpoint of the shortest interval holding half of `x`: the shift that leaves the
    smallest median |x − shift| (a median would follow a one-sided tail of badly timed
    contacts away from the well-timed bulk)."""
    x = np.sort(np.asarray(x, np.float64))
    h = (len(x) + 1) // 2
    i = int(np.argmin(x[h - 1:] - x[:len(x) - h + 1]))
    return float(0.5 * (x[i] + x[i + h - 1]))


def fit_timing(clips: Sequence[Sequence[tuple[int, str, float]]], seed: int = 0) -> Timing:
    """The lag (`shorth`) of each (band, kind) cell of timed contacts (`timed_contacts`, one
    list per clip) that holds at least MIN_TIMING_ROWS of them and whose lag is at least LAG_Z
    standard errors from zero — a lag the clips agree on, not their noise; the error is
    bootstrapped over clips, as one clip's contacts share its walker, its object, its
    noise — clipped to ±MAX_LAG_FRAMES, in 1e-5 frames (as stored)."""
    cells: dict[tuple[int, str], list[np.ndarray]] = {}
    for rows in clips:
        mine: dict[tuple[int, str], list[float]] = {}
        for b, k, r in rows:
            mine.setdefault((b, k), []).append(r)
        for key, v in mine.items():
            cells.setdefault(key, []).append(np.asarray(v, np.float64))
    rng = np.random.default_rng(seed)
    lags = []
    for (b, k), per_clip in sorted(cells.items()):
        x = np.concatenate(per_clip)
        if len(x) < MIN_TIMING_ROWS:
            continue
        lag = shorth(x)
        draws = rng.integers(0, len(per_clip), (BOOTSTRAP, len(per_clip)))
        se = float(np.std([shorth(np.concatenate([per_clip[i] for i in d])) for d in draws]))
        if abs(lag) >= LAG_Z * se:
            lags.append((b, k, round(float(np.clip(lag, -MAX_LAG_FRAMES, MAX_LAG_FRAMES)), 5)))
    return Timing(tuple(lags))


@dataclass(frozen=True)
class Selection:
    """How a checkpoint's outputs become events: both scorers, a (contact, peak) threshold
    pair per frame-rate band (`band_of`) and the correction of the tracker's contact times
    (`timing`; none in a selection fitted before it). The scorers read the features named in
    `contact_features` / `peak_features` (a selection fitted before the motion and rhythm
    features reads the BASE_ ones)."""
    contacts: Bag | Scorer
    peaks: Bag | Scorer
    thresholds: tuple[tuple[float, float], ...]
    offset_s: float
    band_edges: tuple[float, ...] = BAND_EDGES
    contact_features: tuple[str, ...] = CONTACT_FEATURES
    peak_features: tuple[str, ...] = PEAK_FEATURES
    timing: Timing | None = None

    def thresholds_for(self, fps: float) -> tuple[float, float]:
        return self.thresholds[band_of(fps, self.band_edges)]

    def score(self, c: Candidates) -> tuple[np.ndarray, np.ndarray]:
        """(contact probabilities, peak probabilities) of one clip's candidates."""
        cols = [CONTACT_FEATURES.index(n) for n in self.contact_features]
        pcols = [PEAK_FEATURES.index(n) for n in self.peak_features]
        return self.contacts(c.contact_x[:, cols]), self.peaks(c.peak_x[:, pcols])

    def events(self, c: Candidates) -> list[dict[str, Any]]:
        """The kept events of one clip (`select` at the thresholds of its frame rate), tracked
        contacts at their times corrected by `timing` (if the selection has one)."""
        return self.decide(c)[0]

    def decide(self, c: Candidates) -> tuple[list[dict[str, Any]], float]:
        """(`events`, doubt): the doubt is the highest probability of a candidate scored under
        its threshold (0.0 if none was) — how near the scorer came to keeping a sound it
        dropped. A peak kept by its score but within MATCH_S of a kept event is the same
        sound, not a doubt."""
        moved = self.timing.moved(c) if self.timing is not None else c
        contact_p, peak_p = self.score(c)
        tc, tp = self.thresholds_for(c.fps)
        dropped = [float(p) for p in contact_p if p < tc] + (
            [float(p) for p in peak_p if p < tp] if tp <= 1.0 else [])  # > 1: peaks never kept
        return select(moved, contact_p, peak_p, tc, tp), max(dropped, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"contacts": self.contacts.to_dict(), "peaks": self.peaks.to_dict(),
                "thresholds": [list(t) for t in self.thresholds],
                "band_edges": list(self.band_edges), "offset_s": self.offset_s,
                "contact_features": list(self.contact_features),
                "peak_features": list(self.peak_features)} | (
                    {"timing": self.timing.to_dict()} if self.timing is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(Bag.from_dict(d["contacts"]), Bag.from_dict(d["peaks"]),
                   tuple((float(a), float(b)) for a, b in d["thresholds"]),
                   float(d["offset_s"]), tuple(float(e) for e in d["band_edges"]),
                   tuple(d.get("contact_features", BASE_CONTACT_FEATURES)),
                   tuple(d.get("peak_features", BASE_PEAK_FEATURES)),
                   Timing.from_dict(d["timing"]) if "timing" in d else None)


@dataclass
class Candidates:
    """One clip's candidates and their features (what `select` decides over)."""
    contacts: list[dict[str, Any]]
    contact_x: np.ndarray
    peaks: list[dict[str, float]]
    peak_x: np.ndarray
    fps: float


def candidates(onset: np.ndarray, curve: np.ndarray, contacts: Sequence[dict[str, Any]],
               fps: float, offset_s: float) -> Candidates:
    """The tracked contacts and the onset head's untracked peaks of one clip, with features."""
    contacts = list(contacts)
    peaks = [m for m in curve_events.onset_peaks(onset, rms_targets.RATE_HZ, PEAK_FLOOR,
                                                 offset_s=offset_s)
             if all(abs(m["t"] - c["t"]) > UNTRACKED_S for c in contacts)]
    return Candidates(contacts, contact_features(onset, curve, contacts, fps), peaks,
                      peak_features(onset, curve, peaks, contacts, fps), float(fps))


def candidate_labels(c: Candidates, truth: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Training labels of one clip's candidates: contacts by `labels`; a peak is positive
    when it is the nearest peak to a true onset that no tracked contact is within TOL_S of."""
    untracked = [u for u in truth if all(abs(b["t"] - u) > TOL_S for b in c.contacts)]
    return (labels([b["t"] for b in c.contacts], truth),
            labels([m["t"] for m in c.peaks], untracked))


def select(c: Candidates, contact_p: np.ndarray, peak_p: np.ndarray, contact_threshold: float,
           peak_threshold: float) -> list[dict[str, Any]]:
    """The kept events: contacts scoring at least `contact_threshold` (tracker time, the
    score as confidence), then untracked peaks scoring at least `peak_threshold` with no kept
    event within MATCH_S, strongest first."""
    out = [{**b, "confidence": float(p)} for b, p in zip(c.contacts, contact_p)
           if p >= contact_threshold]
    for j in np.argsort(-np.asarray(peak_p)):
        m, p = c.peaks[int(j)], float(peak_p[int(j)])
        if p >= peak_threshold and all(abs(m["t"] - e["t"]) > MATCH_S for e in out):
            out.append({"t": m["t"], "confidence": p})
    return sorted(out, key=lambda e: e["t"])


# 0.02–0.08 for material where sounding contacts are rare and scored low (a film's mix,
# models/rms_mapper_rounds.md, round 8), then every 0.05 from 0.1 to 0.9
THRESHOLDS = (0.02, 0.04, 0.06, 0.08) + tuple(round(0.05 * i, 2) for i in range(2, 19))
PEAK_THRESHOLDS = THRESHOLDS + (1.01,)   # 1.01: never add an untracked peak
MIN_BAND_CLIPS = 30


def _stack(parts: Sequence[np.ndarray], width: int) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)


def _f1(sums: np.ndarray) -> np.ndarray:
    """Onset F1 of (matched, predicted, true) rows."""
    m, p, t = sums[..., 0], sums[..., 1], sums[..., 2]
    return np.where(p + t > 0, 2 * m / np.maximum(p + t, 1), 0.0)


def _f1_standard_error(rows: np.ndarray, seed: int) -> float:
    """The bootstrap standard error (BOOTSTRAP resamplings of the clips) of the F1 of
    per-clip (matched, predicted, true) rows."""
    if len(rows) < 2:
        return 0.0
    draws = np.random.default_rng(seed).integers(0, len(rows), (BOOTSTRAP, len(rows)))
    return float(np.std(_f1(rows[draws].sum(1))))


def fit_selection(clips: Sequence[tuple[Candidates, Sequence[float]]], offset_s: float, *,
                  members: int = 5, hidden: int = 8, l2: float = 1e-3, folds: int = 5,
                  seed: int = 0, prefer_recall: bool = False, correct_timing: bool = False,
                  recall_floor: bool = True,
                  contact_features: Sequence[str] = CONTACT_FEATURES,
                  peak_features: Sequence[str] = PEAK_FEATURES, log: Any = None
                  ) -> tuple[Selection, dict[str, Any]]:
    """Fit both scorers on `clips` ((candidates, true onsets) of clips the network never
    trained on) and choose both thresholds, per frame-rate band, on the *out-of-fold* scores
    (each clip scored by scorers fitted without it, `folds` folds by clip), so the thresholds
    are not chosen on the scorers' own training data; a band with fewer than MIN_BAND_CLIPS
    clips takes the pair chosen on all clips. With `recall_floor` (the default) only pairs
    whose out-of-fold recall is at least the tracker's own on the same clips — every contact
    it proposes kept, what the motion baseline sounds — are candidates (if none is, the pair
    with the best recall): the scorer removes false events, never at the cost of finding
    fewer onsets than the tracker alone (models/rms_mapper_rounds.md, round 8: at 40 fps and
    over it lowers both thresholds, for 0.005 of out-of-fold F1). Of those, the pair chosen
    has the best onset F1 at ±50 ms; with `prefer_recall`, of the pairs whose F1 is within one
    standard error (bootstrap over clips) of the best, the one that misses fewest onsets —
    for a studio that would rather delete false events in review than place missed ones by
    hand (pairs that close are the same on this many clips; measured in
    models/rms_mapper_rounds.md, round 6: it trades about 0.015 of F1 for 0.025 of recall).
    The scorers read the features named (a subset of CONTACT_FEATURES / PEAK_FEATURES, for
    studies). The contact-time lags (`fit_timing`) are fitted per fold too and their
    out-of-fold effect reported (`timing_report`); with `correct_timing` the selection applies
    them and thresholds are chosen with them in place (not the default: it times footfalls at
    40 fps and over better, yet leaves the median error of all onsets higher on the
    validation and held-out clips; models/rms_mapper_rounds.md, round 7). Returns the
    selection (scorers, and lags if applied, refitted on every clip) and its
    out-of-fold onset P / R / F1 with each band's choice and the lags' report."""
    from models.envelope_metrics import OnsetCounts, onset_scores

    if not clips:
        raise ValueError("no clips to fit the contact scorer on")
    folds = max(1, min(folds, len(clips)))
    lab = [candidate_labels(c, truth) for c, truth in clips]
    order = np.random.default_rng(seed).permutation(len(clips))
    fold_of = np.empty(len(clips), int)
    fold_of[order] = np.arange(len(clips)) % folds
    ccols = [CONTACT_FEATURES.index(n) for n in contact_features]
    pcols = [PEAK_FEATURES.index(n) for n in peak_features]
    xs = [(c.contact_x[:, ccols], c.peak_x[:, pcols]) for c, _ in clips]
    nc, npk = len(ccols), len(pcols)

    def fit_pair(idx: Sequence[int]) -> tuple[Bag, Scorer]:
        sc = fit_bag(_stack([xs[i][0] for i in idx], nc),
                     np.concatenate([lab[i][0] for i in idx] + [np.zeros(0, np.float32)]),
                     members=members, hidden=hidden, l2=l2, seed=seed)
        sp = fit(_stack([xs[i][1] for i in idx], npk),
                 np.concatenate([lab[i][1] for i in idx] + [np.zeros(0, np.float32)]),
                 hidden=0, l2=1e-2, seed=seed)  # few positives: a regularized logistic
        return sc, sp

    timed = [timed_contacts(c, truth) for c, truth in clips]
    oof: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * len(clips)
    oof_timing: list[Timing] = [Timing()] * len(clips)
    for f in range(folds):
        rest = [i for i in range(len(clips)) if fold_of[i] != f] or list(range(len(clips)))
        sc, sp = fit_pair(rest)
        tm = fit_timing([timed[i] for i in rest], seed)
        for i in np.flatnonzero(fold_of == f):
            oof[i], oof_timing[i] = (sc(xs[i][0]), sp(xs[i][1])), tm
        if log:
            log(f"scorer fold {f + 1}/{folds} fitted")
    chosen_on = [tm.moved(c) if correct_timing else c for (c, _), tm in zip(clips, oof_timing)]
    # what the tracker alone finds, every contact kept: the recall floor
    tracker_alone = [OnsetCounts.of([b["t"] for b in c.contacts], truth, (TOL_S,))
                     for c, truth in clips]

    def clip_counts(i: int, tc: float, tp: float) -> Any:
        (_c, truth), (pc, pp) = clips[i], oof[i]
        return OnsetCounts.of([e["t"] for e in select(chosen_on[i], pc, pp, tc, tp)], truth)

    def best_pair(which: Sequence[int]) -> dict[str, Any]:
        pairs = [(tc, tp) for tc in THRESHOLDS for tp in PEAK_THRESHOLDS]
        # (pair, clip, (matched at ±TOL_S, predicted, true))
        rows = np.array([[(k.matched[TOL_S], k.predicted, k.true)
                          for k in (clip_counts(i, tc, tp) for i in which)] for tc, tp in pairs],
                        np.float64).reshape(len(pairs), len(which), 3)
        sums = rows.sum(1)
        f1 = _f1(sums)
        recall = sums[:, 0] / np.maximum(sums[:, 2], 1)
        n_true = sum(tracker_alone[i].true for i in which)
        floor = sum(tracker_alone[i].matched[TOL_S] for i in which) / n_true if n_true else 0.0
        allowed = np.flatnonzero(recall >= floor - 1e-12) if recall_floor else np.arange(len(f1))
        if not len(allowed):
            allowed = np.flatnonzero(recall == recall.max())
        best = int(allowed[np.argmax(f1[allowed])])
        se = _f1_standard_error(rows[best], seed) if prefer_recall else 0.0
        near = allowed[f1[allowed] >= f1[best] - se]
        k = int(near[np.lexsort((-f1[near], -recall[near]))[0]])
        return {"thresholds": list(pairs[k]), "f1": round(float(f1[k]), 4),
                "recall": round(float(recall[k]), 4), "best_f1": round(float(f1[best]), 4),
                "best_f1_recall": round(float(recall[best]), 4), "f1_se": round(se, 4),
                "tracker_recall": round(float(floor), 4),
                "unconstrained_f1": round(float(f1.max()), 4)}

    everyone = list(range(len(clips)))
    pooled = best_pair(everyone)
    choices: list[dict[str, Any]] = []
    band = [band_of(c.fps) for c, _ in clips]
    for b in range(len(BAND_EDGES) + 1):
        in_band = [i for i in everyone if band[i] == b]
        # a band with few clips to choose on takes the pooled pair
        choices.append(best_pair(in_band) if len(in_band) >= MIN_BAND_CLIPS else pooled)
    bands = [(float(c["thresholds"][0]), float(c["thresholds"][1])) for c in choices]
    total = None
    for i in everyone:
        k = clip_counts(i, *bands[band[i]])
        total = k if total is None else total + k
    s = onset_scores(total)
    sc, sp = fit_pair(everyone)
    timing = fit_timing(timed, seed)
    report = {"clips": len(clips), "oof_onset_f1": round(s["onset_f1@50ms"], 4),
              "oof_onset_precision": round(s["onset_precision@50ms"], 4),
              "oof_onset_recall": round(s["onset_recall@50ms"], 4),
              "band_clips": [sum(1 for x in band if x == b) for b in range(len(bands))],
              "band_choices": choices,
              "members": members, "hidden": hidden, "l2": l2, "folds": folds,
              "threshold_rule": ("fewest misses within one standard error of the best F1"
                                 if prefer_recall else "best F1")
              + (", recall at least the tracker's" if recall_floor else ""),
              "timing": {**timing_report(timed, [c.fps for c, _ in clips], oof_timing, timing),
                         "applied": correct_timing}}
    return Selection(sc, sp, tuple(bands), offset_s, contact_features=tuple(contact_features),
                     peak_features=tuple(peak_features),
                     timing=timing if correct_timing else None), report


def timing_report(timed: Sequence[Sequence[tuple[int, str, float]]], fps: Sequence[float],
                  oof: Sequence[Timing], timing: Timing) -> dict[str, Any]:
    """The fitted lags, and per band the median / 90th-percentile |onset error| (ms) of the
    timed contacts at the tracker's times and corrected out of fold (each clip by the lags
    fitted without it)."""
    bands = []
    for band in range(len(timing.band_edges) + 1):
        # (lag in frames, its correction out of fold, fps) of the band's timed contacts
        rows = np.array([(r, oof[i].lag(b, k), fps[i]) for i, clip in enumerate(timed)
                         for b, k, r in clip if b == band], np.float64).reshape(-1, 3)
        if not len(rows):
            bands.append({"contacts": 0})
            continue
        raw = np.abs(rows[:, 0]) / rows[:, 2] * 1000
        fixed = np.abs(rows[:, 0] - rows[:, 1]) / rows[:, 2] * 1000
        bands.append({"contacts": len(rows),
                      "median_ms": round(float(np.median(raw)), 3),
                      "p90_ms": round(float(np.percentile(raw, 90)), 3),
                      "oof_median_ms": round(float(np.median(fixed)), 3),
                      "oof_p90_ms": round(float(np.percentile(fixed, 90)), 3)})
    return {"lags_frames": timing.to_dict()["lags_frames"], "bands": bands}
