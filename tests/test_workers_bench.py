"""`foley bench --long`: the generated long reel and the cost model (the measurement itself is
the benchmark command, docs/BENCHMARKS.md)."""
from __future__ import annotations

from flows.bench_long import cost_model, long_reel_shots


def test_a_long_reel_cuts_a_distinct_range_for_every_shot() -> None:
    shots = long_reel_shots(20, shot_s=10)
    assert len(shots) == 120
    assert len({(s.media, s.source_in_s) for s in shots}) == 120  # no shot a cache hit of another
    assert all(s.source_in_s + s.duration_s <= s.scene.duration_s for s in shots)
    assert len({s.media for s in shots}) == 4 and sum(s.duration_s for s in shots) == 1200


def test_cost_model_of_a_night() -> None:
    night = cost_model(25.0, reels=10, reel_min=20.0, night_h=8.0)
    assert night == {"reels": 10, "reel_min": 20.0, "machine_hours": 8.0,
                     "machines_for_night": 1}
    assert cost_model(10.0)["machines_for_night"] == 3  # 20 machine-hours in an 8-hour night
