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


def plot_envelope(
    env: Mapping[str, Any], out: Path, *, label_time: Callable[[float], str], title: str
) -> Path:
    """The curve with its events as stems, x axis labelled in record timecode."""
    curve = np.asarray(env["curve"], dtype=float)
    t = np.arange(len(curve)) / env["rate_hz"]
    fig, ax = plt.subplots(figsize=(10, 2.8), dpi=100)
    ax.fill_between(t, curve, color="#444444", alpha=0.35, lw=0)
    ax.plot(t, curve, color="#222222", lw=1)
    for ev in env["events"]:
        c = KIND_COLOURS.get(ev["kind"], "#ff7f0e")
        ax.vlines(ev["t"], 0, ev["strength"], color=c, lw=1.5)
        ax.plot([ev["t"]], [ev["strength"]], "o", color=c, ms=5)
    ticks = np.linspace(0, env["duration_s"], 6)
    ax.set_xticks(ticks, [label_time(x) for x in ticks], fontsize=8)
    ax.set_xlim(0, env["duration_s"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("RMS (linear)")
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
