"""Peak memory and time of the sampler on a dense shot (docs/BENCHMARKS.md, "The sampler's
memory"). Plays the first 24 impact and footstep recordings of the sfx folder at EVENTS_PER_S
random times over SECONDS, under a curve, and prints the render time, the process's peak RSS
over what it held before the render, and the output's digest (the same before and after a
change that only moves memory).

    .venv/bin/python scripts/sampler_memory.py 60 40 [--sfx ../shared/sfx]
"""
from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import sampler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seconds", type=float)
    ap.add_argument("events_per_s", type=float)
    ap.add_argument("--sfx", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "sfx")
    a = ap.parse_args()
    files = sorted(p for d in ("impacts", "footsteps") for p in (a.sfx / d).rglob("*")
                   if p.suffix in (".wav", ".ogg", ".flac"))[:24]
    one = []
    for f in files:
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != 48000:
            x = resample_poly(x, 48000, sr).astype(np.float32)
        one.append(sampler.Sample(x, f.name))
    rng = np.random.default_rng(0)
    n = int(a.seconds * a.events_per_s)
    times, strengths = np.sort(rng.uniform(0, a.seconds, n)), rng.uniform(0.2, 1, n)
    events = [{"t": float(t), "strength": float(s), "kind": "impact"} for t, s in zip(times, strengths)]
    curve = np.full(int(a.seconds * 125), 0.01)
    for e in events:
        k = int(e["t"] * 125)
        curve[k:k + 10] = np.maximum(curve[k:k + 10], 0.03 * e["strength"])
    env = {"duration_s": a.seconds, "rate_hz": 125.0, "curve": curve.tolist(), "events": events}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = sampler.render_shot(env, one, one[:1], sr=48000, seed=3)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{a.seconds:.0f} s, {n} events ({len(one)} recordings): render {took:.2f} s, "
          f"peak RSS +{(peak - before) / 1024:.0f} MB over {before / 1024:.0f} MB, "
          f"output sha256 {hashlib.sha256(out.tobytes()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
