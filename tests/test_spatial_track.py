"""The position track: smoothing, which object sounds, glides, overrides, and the tracker against
the truth of rendered scenes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models import motion_baseline, spatial, spatial_render, spatial_track
from models.motion_baseline import Track
from tasks.features import MAX_REGIONS, REGION_FIELDS

FPS, W, H = 24.0, 320, 180


def features(objects: list[dict], seconds: float = 2.0) -> dict[str, np.ndarray]:
    """A feature dict with moving regions: each object {x0, vx (widths/s), y, area, t0, t1}."""
    pairs = int(seconds * FPS)
    regions = np.zeros((pairs, MAX_REGIONS, len(REGION_FIELDS)), np.float32)
    for k in range(pairs):
        row = 0
        for ob in objects:
            t = k / FPS
            if not ob.get("t0", 0) <= t < ob.get("t1", seconds):
                continue
            x, vx = ob["x0"] + ob["vx"] * t, ob["vx"] / FPS
            half = math.sqrt(ob["area"]) / 2
            regions[k, row] = (1, x, ob["y"], ob["area"], vx, 0, x - half, ob["y"] - half,
                               x + half, ob["y"] + half)
            row += 1
    return {"fps": np.float32(FPS), "n_frames": np.float32(pairs + 1), "size": np.float32([W, H]),
            "global_motion": np.zeros((pairs, 2), np.float32), "regions": regions}


def envelope(events: list[tuple[float, float, float]], seconds: float = 2.0,
             curve: np.ndarray | None = None) -> dict:
    n = int(seconds * 100)
    return {"rate_hz": 100, "duration_s": seconds,
            "curve": list(curve) if curve is not None else [0.0] * n,
            "events": [{"t": t, "x": x, "y": y, "strength": 0.8, "kind": "impact"} for t, x, y in events]}


def test_rts_smoother_removes_jitter_and_keeps_the_motion() -> None:
    t = np.arange(48) / FPS
    truth = 0.2 + 0.3 * t
    noisy = truth + np.random.default_rng(1).normal(0, 0.01, len(t))
    smooth = spatial_track.rts_smooth(noisy, 1 / FPS)
    assert np.sqrt(np.mean((smooth - truth) ** 2)) < 0.5 * np.sqrt(np.mean((noisy - truth) ** 2))


def only_layer(sources: spatial_track.SourceScene, t: np.ndarray) -> np.ndarray:
    """x of the layer with the largest share at each time."""
    shares = sources.shares(t)
    xs = np.stack([lay.track.at(t)[0] for lay in sources.layers])
    return xs[np.argmax(shares, axis=0), np.arange(len(t))]


def test_a_single_moving_source_is_followed() -> None:
    feats = features([{"x0": 0.2, "vx": 0.3, "y": 0.6, "area": 0.01}])
    sources = spatial_track.sounding_sources(feats, envelope([(1.0, 0.5, 0.6)]))
    assert len(sources.layers) == 1
    x, y, area = sources.layers[0].track.at(np.array([0.5, 1.0, 1.5]))
    assert x == pytest.approx([0.35, 0.5, 0.65], abs=0.01)
    assert y == pytest.approx(0.6, abs=0.01) and area == pytest.approx(0.01, rel=0.05)


def test_each_event_is_its_object_and_the_switch_is_done_at_the_onset() -> None:
    feats = features([{"x0": 0.2, "vx": 0.0, "y": 0.5, "area": 0.01},
                      {"x0": 0.8, "vx": 0.0, "y": 0.5, "area": 0.01}])
    sources = spatial_track.sounding_sources(feats, envelope([(0.5, 0.2, 0.5), (1.2, 0.8, 0.5)]))
    t = np.array([0.1, 1.0, 1.2, 1.9])
    assert only_layer(sources, t) == pytest.approx([0.2, 0.2, 0.8, 0.8], abs=0.01)
    share = sources.shares(np.arange(1.0, 1.4, 1 / 480))
    assert np.all(share.sum(axis=0) == pytest.approx(1.0))
    assert np.max(np.abs(np.diff(share, axis=1))) < 0.1             # a glide, not a jump
    assert sources.shares(1.2).max() > 0.95                         # done by the onset


def test_an_event_no_track_explains_is_a_fixed_anchor() -> None:
    sources = spatial_track.sounding_sources(features([]), envelope([(0.7, 0.9, 0.3)]))
    assert only_layer(sources, np.array([0.0, 1.5])) == pytest.approx([0.9, 0.9])


def test_a_silent_fast_distractor_does_not_take_the_sliding_sound() -> None:
    """No events: the slider whose motion follows the curve sounds, not the fast crossing."""
    seconds = 2.0
    curve = np.zeros(200)
    curve[50:150] = 0.3  # the slide sounds from 0.5 s to 1.5 s
    feats = features([{"x0": 0.3, "vx": 0.1, "y": 0.8, "area": 0.02, "t0": 0.5, "t1": 1.5},
                      {"x0": 0.0, "vx": 0.5, "y": 0.2, "area": 0.01}], seconds)
    sources = spatial_track.sounding_sources(feats, envelope([], seconds, curve))
    assert only_layer(sources, np.array([1.0]))[0] == pytest.approx(0.4, abs=0.02)  # x0 + vx · t
    assert sources.shares(1.0).max() > 0.99


def test_a_hit_during_a_slide_gives_the_position_back_as_it_decays() -> None:
    """A hit by a still object while another slides, the curve the baseline's own (events and
    sustained sound on its RMS scale, `envelope_curve`): the hit holds the position while it
    rings, then the slider has it again — the two weighed in the curve's units, not a hit's
    0–1 strength against a slide's RMS (which kept the hit's object for ~300 ms)."""
    seconds = 2.0
    hit = {"t": 1.0, "x": 0.8, "y": 0.5, "strength": 0.8, "kind": "impact"}
    curve = motion_baseline.envelope_curve([hit], [(0.4, 1.6, 0.2)], 200, 100)
    feats = features([{"x0": 0.1, "vx": 0.2, "y": 0.8, "area": 0.01, "t0": 0.4, "t1": 1.6},
                      {"x0": 0.8, "vx": 0.0, "y": 0.5, "area": 0.01}], seconds)
    env = {"rate_hz": 100, "duration_s": seconds, "curve": list(curve), "events": [hit]}
    sources = spatial_track.sounding_sources(feats, env)
    t = np.array([0.8, 1.02, 1.2, 1.4])
    assert only_layer(sources, t) == pytest.approx([0.26, 0.8, 0.34, 0.38], abs=0.02)


def test_two_objects_sliding_at_once_each_get_a_layer_following_it() -> None:
    seconds = 2.0
    curve = np.zeros(200)
    curve[40:160] = 0.3
    feats = features([{"x0": 0.1, "vx": 0.2, "y": 0.8, "area": 0.01, "t0": 0.4, "t1": 1.6},
                      {"x0": 0.9, "vx": -0.2, "y": 0.8, "area": 0.01, "t0": 0.4, "t1": 1.6}], seconds)
    sources = spatial_track.sounding_sources(feats, envelope([], seconds, curve))
    heard = np.flatnonzero(sources.shares(1.0)[:, 0] >= spatial_track.SOUNDING)
    assert len(heard) == 2
    where = sorted(float(sources.layers[i].track.at(1.0)[0]) for i in heard)
    assert where == pytest.approx([0.3, 0.7], abs=0.02)


def track(pairs: range, x0: float, vx: float, y: float = 0.8, area: float = 0.01) -> Track:
    """A region track in proxy pixels: x0, vx in picture units (per pair)."""
    tr = Track()
    for k in pairs:
        tr.pairs.append(k)
        tr.pos.append(np.array([(x0 + vx * (k - pairs[0])) * W, y * H]))
        tr.disp.append(np.array([vx * W, 0.0]))
        tr.area.append(area)
        tr.border.append(False)
    return tr


def test_a_track_broken_mid_slide_is_stitched_to_its_continuation() -> None:
    feats = features([], 3.0)
    a, b = track(range(10, 30), 0.1, 0.01), track(range(34, 60), 0.1 + 0.01 * 24, 0.01)
    other = track(range(34, 60), 0.8, -0.01)                  # starts as b does, far away
    joined = spatial_track.stitch_tracks([a, other, b], feats)
    assert sorted(len(t.pairs) for t in joined) == [26, 46]
    chain = max(joined, key=lambda t: len(t.pairs))
    assert chain.pairs[:20] == list(range(10, 30)) and chain.pairs[20:] == list(range(34, 60))


@pytest.mark.parametrize(("gap", "jump", "vx"), [(14, 0.0, 0.01), (4, 0.15, 0.01), (4, 0.0, -0.01)])
def test_no_stitch_across_a_long_gap_a_jump_or_a_reversal(gap: int, jump: float, vx: float) -> None:
    a = track(range(10, 30), 0.1, 0.01)
    b = track(range(29 + gap, 50 + gap), 0.1 + 0.01 * (19 + gap) + jump, vx)
    assert len(spatial_track.stitch_tracks([a, b], features([], 4.0))) == 2


def test_objects_stopping_together_share_the_event_and_a_passer_by_does_not() -> None:
    """Two objects stop at 1.0 s (dropped together, one event for both); a third moves on."""
    fps = FPS
    stop_a, stop_b = track(range(10, 24), 0.03, 0.01), track(range(10, 24), 0.7, -0.01)
    passing = track(range(0, 48), 0.3, 0.004, y=0.7)
    sm = [spatial_track._smoothed(t, W, H, fps) for t in (stop_a, stop_b, passing)]
    contacts = [motion_baseline.track_contacts(t, 48, W, H, fps) for t in (stop_a, stop_b, passing)]
    event = {"t": 24 / fps, "x": 0.17, "y": 0.8, "strength": 0.8}
    parts = spatial_track.event_objects(event, sm, contacts, fps)
    assert set(parts) == {0, 1} and sum(parts.values()) == pytest.approx(1.0)


def test_the_stem_split_over_layers_adds_back_and_gives_each_its_share() -> None:
    sr = 48000
    mono = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    shares = np.stack([np.full(sr, 0.7), np.full(sr, 0.3)])
    parts = spatial_render.split_layers(mono, shares, sr)
    assert np.max(np.abs(sum(parts) - mono)) < 1e-5
    power = np.array([np.mean(p ** 2) for p in parts]) / np.mean(mono ** 2)
    assert power == pytest.approx([0.7, 0.3], abs=0.12)                    # white noise: by bands
    assert abs(np.corrcoef(parts[0], parts[1])[0, 1]) < 0.1                # not one signal scaled


def test_override_replaces_only_the_fields_it_gives() -> None:
    sources = spatial_track.fixed_sources(1.0, x=0.0, y=0.5)
    cam = spatial.Camera(60.0)
    [path] = spatial_render.source_paths(sources, cam, {"distance_m": 8.0}, 10, 10)
    assert np.degrees(path.azimuth) == pytest.approx(30.0) and np.all(path.distance == 8.0)
    [path] = spatial_render.source_paths(sources, cam, {"azimuth_deg": -45.0}, 10, 10)
    assert np.degrees(path.azimuth) == pytest.approx(-45.0)
    assert path.distance == pytest.approx(spatial.D_REF)


@pytest.mark.parametrize(("pos", "message"), [
    ({"azimuth_deg": 200}, "outside"), ({"azimuth": 10}, "unknown position field"),
    ({"distance_m": "far"}, "must be a number"), ([1, 2], "must be an object")])
def test_bad_overrides_name_the_field(pos: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        spatial_render.validate_override(pos, where="reel1 SH010")
    assert "reel1 SH010" in str(err.value)


def test_clip_metadata_and_edit_hfov_reach_the_reel_settings(tmp_path: Path) -> None:
    from tasks.ingest import read_timeline
    from tasks.spatial import reel_spatial_params
    from tests import fixtures_otio as fx

    clips = [fx.media_clip("a", None, 0, 24, 24),
             fx.media_clip("b", None, 0, 24, 24,
                           metadata={"foleyflow": {"position": {"azimuth_deg": -20, "distance_m": 5}}})]
    tl = fx.edit("r1", [fx.video_track(clips)], 24)
    tl.metadata["foleyflow"] = {"hfov_deg": 75.0}
    edit, spec = read_timeline(fx.save(tl, tmp_path / "r1.otio"))
    params = reel_spatial_params(edit, spec)
    assert params["hfov_deg"] == 75.0 and params["fmt"] == "ambix" and params["reverb_db"] is None
    assert params["positions"] == {"SH020": {"azimuth_deg": -20.0, "distance_m": 5.0}}
    assert reel_spatial_params(edit, spec, hfov_deg=50.0, fmt="fuma")["hfov_deg"] == 50.0
    clips[1].metadata["foleyflow"]["position"]["elevation_deg"] = 120
    edit, spec = read_timeline(fx.save(tl, tmp_path / "r1.otio"))
    with pytest.raises(ValueError, match=r"clip 'b' \(SH020\).*elevation_deg=120"):
        reel_spatial_params(edit, spec)


def test_tracked_azimuth_on_rendered_bouncing_balls_is_within_5_degrees() -> None:
    """A rendered scene (picture → proxy → features → envelope → track, as in the pass)."""
    from flows.eval_spatial import evaluate_scenes

    report = evaluate_scenes(1, seed=3, kinds=("bounce",))
    stats = report["summary"]["tracked_az_deg"]
    assert stats["n"] >= 2
    assert stats["p90"] < 5.0, report["scenes"]


def two_layers(share_left: float) -> spatial_track.SourceScene:
    """A layer at the left edge and one at the right, the left with `share_left` of the sound."""
    t = np.array([0.0, 1.0])
    layers = [spatial_track.SourceLayer(spatial_track.PositionTrack(t, np.full(2, x), np.full(2, 0.5),
                                                                    np.full(2, spatial.A_REF)),
                                        np.full(2, s), f"object {i}")
              for i, (x, s) in enumerate(((0.0, share_left), (1.0, 1 - share_left)))]
    return spatial_track.SourceScene(t, layers)


def test_layers_heard_together_sum_to_the_stem_in_w_and_mark_their_events_shared() -> None:
    sr = 48000
    mono = np.random.default_rng(1).standard_normal(sr // 2).astype(np.float32) * 0.1
    cam, settings = spatial.Camera(60.0), spatial_render.SpatialSettings()
    sources = two_layers(0.5)
    stems = spatial_render.render(mono, spatial_render.source_paths(sources, cam, {}, len(mono), sr), sr, settings)
    assert np.max(np.abs(stems["foa"][:, 0] - stems["mono"])) < 1e-6           # W = the placed stem
    report = spatial_render.position_report(sources, cam, {}, [{"t": 0.2, "kind": "scrape"}], settings)
    [event] = report["events"]
    assert event["shared"] and event["layers"] == ["object 0", "object 1"]
    assert abs(event["azimuth_deg"]) < 1.0                                       # between the two
    assert len(report["layers"]) == 2 and report["layers"][0]["azimuth_deg"][0] == pytest.approx(30.0)
    alone = spatial_render.position_report(two_layers(0.9), cam, {}, [{"t": 0.2, "kind": "impact"}], settings)
    assert not alone["events"][0]["shared"] and alone["events"][0]["azimuth_deg"] == pytest.approx(30.0)
