"""Pictures people would rather look at than read: envelope plots and stage timing charts."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KIND_COLOURS = {"impact": "#d62728", "step": "#1f77b4", "scrape": "#2ca02c", "whoosh": "#9467bd"}


PLOT_FLOOR_DB = -72.0  # the curve's axis: dBFS RMS, from here to 0


def curve_db(curve: np.ndarray, floor_db: float = PLOT_FLOOR_DB) -> np.ndarray:
    """Linear RMS as dBFS, floored (silence reads as the floor)."""
    return 20 * np.log10(np.maximum(np.asarray(curve, dtype=float), 10 ** (floor_db / 20)))


def plot_envelope(
    env: Mapping[str, Any], out: Path, *, label_time: Callable[[float], str], title: str
) -> Path:
    """The curve in dBFS RMS (left axis, as a meter reads it) with its events as stems at their
    strength (right axis, 0–1), x axis labelled in record timecode."""
    curve = np.asarray(env["curve"], dtype=float)
    t = np.arange(len(curve)) / env["rate_hz"]
    fig, ax = plt.subplots(figsize=(10, 2.8), dpi=100)
    level = curve_db(curve)
    ax.fill_between(t, level, PLOT_FLOOR_DB, color="#444444", alpha=0.35, lw=0)
    ax.plot(t, level, color="#222222", lw=1)
    ax.set_ylim(PLOT_FLOOR_DB, 0)
    ax.set_yticks(np.arange(PLOT_FLOOR_DB, 1, 12))
    ax.set_ylabel("RMS (dBFS)")
    strength = ax.twinx()
    for ev in env["events"]:
        c = KIND_COLOURS.get(ev["kind"], "#ff7f0e")
        strength.vlines(ev["t"], 0, ev["strength"], color=c, lw=1.5)
        strength.plot([ev["t"]], [ev["strength"]], "o", color=c, ms=5)
    strength.set_ylim(0, 1.05)
    strength.set_ylabel("event strength")
    ticks = np.linspace(0, env["duration_s"], 6)
    ax.set_xticks(ticks, [label_time(x) for x in ticks], fontsize=8)
    ax.set_xlim(0, env["duration_s"])
    kinds = sorted({e["kind"] for e in env["events"]})
    ax.set_title(f"{title} — {len(env['events'])} events {', '.join(kinds)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


def plot_stage_times(times: Mapping[str, float], out: Path, *, title: str) -> Path:
    """Horizontal bars: seconds spent per stage."""
    names = list(times)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2), dpi=100)
    ax.barh(names, [times[n] for n in names], color="#4c72b0")
    for i, n in enumerate(names):
        ax.text(times[n], i, f" {times[n]:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


VERDICT_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "no clear difference": "#7f7f7f"}


def plot_comparison(diff: Mapping[str, Mapping[str, Any]], out: Path, *, title: str) -> Path:
    """A forest plot of one estimator against another (`envelope_metrics.paired_bootstrap`):
    per metric the difference as a dot with its 95 % interval as a bar, coloured by verdict,
    in three panels of comparable units — onset precision / recall / F1, the loudness
    metrics (E-L1, acc@k), onset error in ms. Right of zero is better in every panel (the
    lower-is-better metrics are drawn negated and labelled so)."""
    from models.envelope_metrics import lower_is_better

    groups = [("onsets: precision / recall / F1", lambda k: k.startswith("onset_")
               and not k.startswith("onset_error")),
              ("loudness: E-L1, acc@k", lambda k: k.startswith(("e_l1", "acc@"))),
              ("onset error (ms)", lambda k: k.startswith("onset_error"))]
    panels = [(name, [k for k in diff if pick(k)]) for name, pick in groups]
    panels = [(name, keys) for name, keys in panels if keys]
    heights = [len(keys) + 1.2 for _, keys in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.28 * sum(heights) + 1.0), dpi=100,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, keys) in zip(axes[:, 0], panels):
        for i, k in enumerate(keys):
            if diff[k]["ci95"] is None:                 # undefined: the row stays empty
                continue
            s = -1.0 if lower_is_better(k) else 1.0
            d, (lo, hi) = s * float(diff[k]["difference"]), sorted(
                s * float(v) for v in diff[k]["ci95"])
            c = VERDICT_COLOURS.get(str(diff[k]["verdict"]), "#7f7f7f")
            ax.plot([lo, hi], [i, i], color=c, lw=2)
            ax.plot([d], [i], "o", color=c, ms=5)
        ax.axvline(0.0, color="#444444", lw=0.8)
        ax.set_yticks(range(len(keys)),
                      [f"−{k}" if lower_is_better(k) else k for k in keys], fontsize=8)
        ax.set_ylim(len(keys) - 0.4, -0.6)
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("difference (right of 0: the first estimator is better); "
                           "green better, grey no clear difference, red worse", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out
