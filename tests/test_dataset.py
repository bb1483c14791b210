"""Paired scenes (picture + physically timed sound) and the dataset builders, on real recordings
from the shared sfx folder, real ffmpeg and the pass's own proxy and feature code."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models import paired_scenes as ps
from models.audio_env import detect_onsets, rms_envelope
from tasks import dataset
from tasks.features import KEYS
from tasks.media import extract_audio, ffmpeg_exe

SR = ps.AUDIO_SR


def _spec(i: int, split: str, kinds: tuple[str, ...], sfx: Path, **kw) -> ps.PairedSpec:
    rng = np.random.default_rng([i, 99, ps.SPLITS.index(split)])
    return ps.sample_spec(rng, split, kinds=kinds, available=dataset.catalog_keys(sfx), **kw)


def _audio(truth: ps.PairedTruth, sfx: Path) -> np.ndarray:
    return ps.render_audio(truth, dataset.load_sounds(sfx, ps.sound_keys(truth)), SR)


def _db(x: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(x.astype(np.float64), 1e-9))


def test_proxy_width_is_the_pass_width() -> None:
    from tasks.prepare import PROXY_WIDTH

    assert dataset.PROXY_WIDTH == PROXY_WIDTH


@pytest.mark.parametrize("kind", ps.KINDS)
def test_a_paired_spec_renders(kind: str, sfx_dir: Path) -> None:
    spec = _spec(1, "train", (kind,), sfx_dir, durations=(0.6, 0.8))
    truth = ps.paired_truth(spec)
    frames = list(ps.render_frames(spec))
    assert len(frames) == truth.n_frames == round(spec.duration_s * spec.fps)
    assert frames[0].shape == (spec.size[1], spec.size[0], 3) and frames[0].dtype == np.uint8
    assert truth.duration_s == pytest.approx(truth.n_frames / truth.fps)
    assert list(ps.render_frames(spec))[-1].tobytes() == frames[-1].tobytes()   # seeded
    assert len(_audio(truth, sfx_dir)) == round(truth.duration_s * SR)


@pytest.mark.parametrize("split", ps.SPLITS)
def test_contacts_sound_at_their_event_times(split: str, sfx_dir: Path) -> None:
    """Every contact that stands apart from the others (no other within 60 ms: detect_onsets
    keeps one onset per 50 ms) is heard within 5 ms of its time, most within a millisecond."""
    errors, missed = [], []
    for i in range(25):
        truth = ps.paired_truth(_spec(i, split, ps.CONTACT_KINDS, sfx_dir))
        assert truth.events, truth.spec.kind
        found = detect_onsets(_audio(truth, sfx_dir), SR)
        times = np.array([e["t"] for e in truth.events])
        for t in times:
            if np.sum(np.abs(times - t) < 0.06) > 1:
                continue
            err = float(np.min(np.abs(found - t))) if found.size else 1.0
            (errors if err <= 0.005 else missed).append(err)
    assert len(errors) >= 0.85 * (len(errors) + len(missed)), (len(errors), missed)
    assert np.median(errors) < 0.001


def test_silent_movers_are_silent(sfx_dir: Path) -> None:
    for split in ps.SPLITS:
        for i in range(12):
            truth = ps.paired_truth(_spec(i, split, ps.SILENT_KINDS, sfx_dir))
            assert truth.events == [] and truth.sustained == []
            audio = _audio(truth, sfx_dir)
            assert _db(rms_envelope(audio, SR)).max() < -45.0
            assert detect_onsets(audio, SR).size == 0


def _hand_spec(mover: ps.Mover, kind: str) -> ps.PairedSpec:
    return ps.PairedSpec(kind=kind, seed=7, split="heldout", fps=24.0, duration_s=4.0,
                         size=(320, 180), movers=(mover,), room_db=-60.0)


@pytest.mark.parametrize("mover, kind", [
    (ps.Rub(ps.Look(0.05, 1.5, 6.0, (1, 1, 1)), 0.4, 0.12, 0.8, 3, 1, 0.5, "synth/metal", 0.0), "rub"),
    (ps.Slide(ps.Look(0.05, 1.5, 6.0, (1, 1, 1)), 0.1, 0.0, 0.9, 0.0, "drag", 2.0, 0.5,
              "synth/glass", 0.0), "scrape"),
    (ps.Slide(ps.Look(0.05, 1.5, 6.0, (1, 1, 1)), 0.1, 0.0, 1.2, 0.9, "kick", 0.0, 0.5,
              "synth/metal", 0.0), "scrape"),
], ids=["rub", "drag", "kick"])
def test_sustained_sound_follows_the_sliding_speed(mover: ps.Mover, kind: str) -> None:
    truth = ps.paired_truth(_hand_spec(mover, kind))
    (seg,) = truth.sustained
    level = _db(rms_envelope(ps.render_audio(truth, {}, SR), SR, ps.SUSTAIN_RATE_HZ))
    k0 = int(round(seg["t0"] * ps.SUSTAIN_RATE_HZ))
    speed = np.asarray(seg["speed"])
    during = level[k0:k0 + len(speed)]
    moving = speed > 0.1 * speed.max()
    assert np.median(during[speed > 0.5 * speed.max()]) > -60.0 + 25.0
    assert np.corrcoef(np.log(speed[moving]), during[moving])[0, 1] > 0.9
    after = level[int((seg["t_end"] + 0.5) * ps.SUSTAIN_RATE_HZ):]
    assert after.size and after.max() < -60.0 + 8.0                 # at rest: room tone only
    assert seg["abrupt"] == (mover.__class__ is ps.Slide and mover.profile == "kick")


def test_sustained_scenes_sound_while_sliding(sfx_dir: Path) -> None:
    for split in ps.SPLITS:
        for i in range(8):
            truth = ps.paired_truth(_spec(i, split, ps.SUSTAINED_KINDS, sfx_dir))
            level = _db(rms_envelope(_audio(truth, sfx_dir), SR, ps.SUSTAIN_RATE_HZ))
            for seg in truth.sustained:
                k0 = int(round(seg["t0"] * ps.SUSTAIN_RATE_HZ))
                speed = np.asarray(seg["speed"])[: len(level) - k0]
                fast = level[k0:k0 + len(speed)][speed > 0.5 * speed.max()]
                assert np.median(fast) > truth.spec.room_db + 12.0, (split, i, seg["sound"])


def test_heldout_and_train_share_no_material_rate_or_seed() -> None:
    seen = {s: {"materials": set(), "fps": set(), "seeds": set()} for s in ps.SPLITS}
    for split in ps.SPLITS:
        for i in range(300):
            spec = ps.sample_spec(np.random.default_rng([i, 5]), split)
            truth = ps.paired_truth(spec)
            keys = [getattr(m, a, "") for m in spec.movers for a in ("sound", "texture")]
            seen[split]["materials"] |= {ps.material_of(k) for k in keys if k} | set(truth.materials)
            seen[split]["fps"].add(spec.fps)
            seen[split]["seeds"].add(spec.seed)
    train, held = seen["train"], seen["heldout"]
    assert held["materials"] <= ps.HELDOUT_MATERIALS and held["materials"]
    for what in ("materials", "fps", "seeds"):
        assert not train[what] & held[what], what
    assert held["fps"] == set(ps.HELDOUT_RATES) and train["fps"] == set(ps.TRAIN_RATES)


def test_rates_pick_among_the_splits_own() -> None:
    """`--rates` draws only the listed frame rates, named loosely (29.97 is 30000/1001), and
    never one of the other split's: the held-out rates stay unseen."""
    fps = {ps.sample_spec(np.random.default_rng([i, 5]), "train", rates=[60, 29.97]).fps
           for i in range(40)}
    assert fps == {60.0, 30000 / 1001}
    assert ps.split_rates("heldout", [59.94]) == (60000 / 1001,)
    with pytest.raises(ValueError, match="48 fps is not a frame rate of the train split"):
        ps.split_rates("train", [48])


def test_build_procedural_writes_valid_clips_and_resumes(tmp_path: Path, sfx_dir: Path) -> None:
    out = tmp_path / "data"
    summary = dataset.build_procedural(out, n_clips=2, split="train", seed=3, workers=2,
                                       sfx_dir=sfx_dir, durations=(1.2, 1.6))
    assert summary["written"] == 2 and not summary["failed"], summary["failed"]
    files = sorted(out.glob("clip_*.npz"))
    assert [f.name for f in files] == ["clip_00003.npz", "clip_00004.npz"]
    assert not (out / ".work").exists() and not (out / "media").exists()
    for path in files:
        with np.load(path, allow_pickle=False) as data:
            assert {f"feat_{k}" for k in KEYS} | set(dataset.REQUIRED) <= set(data.files)
            meta = json.loads(str(data["meta"]))
            fps, n_frames = float(data["feat_fps"]), int(data["feat_n_frames"])
            assert fps == pytest.approx(meta["fps"]) and n_frames == meta["n_frames"]
            assert abs(len(data["audio16k"]) - n_frames / fps * SR) <= 128
            assert data["audio16k"].dtype == np.float32
            w, h = meta["render_size"]
            proxy_h = 2 * round(dataset.PROXY_WIDTH * h / w / 2)
            assert data["feat_size"].tolist() == [dataset.PROXY_WIDTH, proxy_h]
            assert len(data["feat_regions"]) == n_frames - 1
            assert str(data["split"]) == "train"
            assert int(data["seed"]) == meta["seed"] < ps.HELDOUT_SEED_BASE
            events = json.loads(str(data["events"]))
            assert all({"t", "strength", "x", "y", "kind", "material"} <= set(e) for e in events)
    index = json.loads((out / "index.json").read_text())
    assert [c["file"] for c in index["clips"]] == [f.name for f in files]
    clips = list(dataset.iter_clips(out, split="train"))
    assert len(clips) == 2 and set(clips[0].features) == set(KEYS)
    assert list(dataset.iter_clips(out, split="heldout")) == []

    stamps = [f.stat().st_mtime_ns for f in files]
    again = dataset.build_procedural(out, n_clips=2, split="train", seed=3, workers=2,
                                     sfx_dir=sfx_dir, durations=(1.2, 1.6))
    assert again["written"] == 0 and again["existing"] == 2
    assert [f.stat().st_mtime_ns for f in files] == stamps
    files[1].write_bytes(b"not a zip")                              # a torn file is remade
    third = dataset.build_procedural(out, n_clips=2, split="train", seed=3, workers=1,
                                     sfx_dir=sfx_dir, durations=(1.2, 1.6))
    assert third["written"] == 1 and third["existing"] == 1
    assert dataset.read_clip(files[1]).meta["clip"] == 4
    # asked for other frame rates, the same numbers are other scenes: kept only where the
    # request draws the scene the folder holds, remade otherwise
    stamp = files[1].stat().st_mtime_ns
    fast = dataset.build_procedural(out, n_clips=1, split="train", seed=3, workers=1,
                                    sfx_dir=sfx_dir, durations=(1.2, 1.6), rates=[60])
    assert fast["written"] == 1 and dataset.read_clip(files[0]).meta["fps"] == 60.0
    assert files[1].stat().st_mtime_ns == stamp                     # not asked for: as it was
    entries = {c["file"]: c for c in json.loads((out / "index.json").read_text())["clips"]}
    assert entries[files[0].name]["fps"] == 60.0                    # remade: read again

    # the index rebuild opens only clips whose file changed since their entry was read
    def rebuilt() -> dict[str, dict]:
        dataset.write_index(out)
        return {c["file"]: c for c in json.loads((out / "index.json").read_text())["clips"]}

    index = json.loads((out / "index.json").read_text())
    for c in index["clips"]:
        c["n_events"] = 999                                         # what only the index says
    index["clips"][0].pop("kind")                                   # an incomplete entry
    (out / "index.json").write_text(json.dumps(index))
    true_events = len(dataset.read_clip(files[0]).events)
    assert {k: c["n_events"] for k, c in rebuilt().items()} == {
        files[0].name: true_events, files[1].name: 999}
    tmp = out / "copy.tmp"
    tmp.write_bytes(files[1].read_bytes())
    os.replace(tmp, files[1])                                       # the same bytes, replaced
    assert rebuilt()[files[1].name]["n_events"] == len(dataset.read_clip(files[1]).events)


# a 150 ms 440 Hz burst 0.4 s into each second, none after 3 s
BURST = "if(between(mod(t,1),0.4,0.55)*lt(t,3),0.5*sin(2*PI*440*t),0)"


def _video(path: Path, audio: bool = True) -> Path:
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
            "testsrc2=size=320x180:rate=25:duration=4"]
    if audio:
        args += ["-f", "lavfi", "-i", f"aevalsrc='{BURST}':s=48000:d=4", "-c:a", "aac", "-shortest"]
    subprocess.run(args + ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_build_from_videos_windows_carry_their_own_sound(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    videos = tmp_path / "reels"
    (videos / "r1").mkdir(parents=True)
    src = _video(videos / "r1" / "burst.mp4")
    _video(videos / "mute.mp4", audio=False)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    out = tmp_path / "data"
    summary = dataset.build_from_videos(videos, out, clip_s=1.0, workers=1)
    assert summary["written"] == 3, summary
    reasons = {r["source"]: r["reason"] for r in summary["skipped"] + summary["failed"]}
    assert "no audio stream" in reasons["mute.mp4"]
    assert "broken.mp4" in reasons and [r["source"] for r in summary["failed"]] == ["broken.mp4"]
    own = [r["reason"].split(" ")[0] for r in summary["skipped"] if r["source"] == "r1/burst.mp4"]
    assert own == ["silent"]                                        # the window after 3 s

    extract_audio(src, 0.0, 4.0, tmp_path / "whole.wav", sr=SR)
    whole = sf.read(tmp_path / "whole.wav", dtype="float32", always_2d=True)[0].mean(axis=1)
    clips = sorted(dataset.iter_clips(out), key=lambda c: c.meta["window"])
    assert [c.meta["window"] for c in clips] == [0, 1, 2]
    for clip in clips:
        k = clip.meta["window"]
        assert clip.meta["source"] == "r1/burst.mp4" and clip.split == "train"
        assert len(clip.audio16k) == SR and int(clip.features["n_frames"]) == 25
        assert [round(o["t"], 2) for o in clip.onsets] == [0.4]
        assert abs(clip.onsets[0]["t"] - 0.4) < 0.005
        inner = slice(int(0.3 * SR), int(0.7 * SR))                 # the same span of the film
        np.testing.assert_allclose(clip.audio16k[inner], whole[k * SR:(k + 1) * SR][inner], atol=2e-3)
    # a rerun of the same cut reads no sound: the kept windows are checked, and the silent one
    # keeps the verdict of the cut it was judged in (a counting wrapper around the real call)
    reads: list[float] = []

    def counted(src, start_s, *args, **kw):
        reads.append(start_s)
        return extract_audio(src, start_s, *args, **kw)

    monkeypatch.setattr(dataset.media, "extract_audio", counted)
    again = dataset.build_from_videos(videos, out, clip_s=1.0, workers=1)
    assert again["written"] == 0 and again["existing"] == 3 and again["removed"] == 0
    assert [r["reason"] for r in again["skipped"]] == \
        [r["reason"] for r in summary["skipped"]] and reads == []

    # the folder inside it built alone, then the whole again: each time the reel's windows are
    # kept under its path there (the silent verdict with them), nothing is cut or read again
    def burst() -> dict[int, tuple[str, str, bytes, bytes]]:
        return {c.meta["window"]: (c.name, c.meta["source"], c.audio16k.tobytes(),
                                   c.features[KEYS[0]].tobytes())
                for c in dataset.iter_clips(out) if c.meta["source"].endswith("burst.mp4")}

    whole_folder = burst()
    inner = dataset.build_from_videos(videos / "r1", out, clip_s=1.0, workers=1)
    assert (inner["renamed"], inner["written"], inner["removed"], reads) == (3, 0, 0, []), inner
    assert [r["reason"].split(" ")[0] for r in inner["skipped"]] == ["silent"]
    assert {k: (v[1], *v[2:]) for k, v in burst().items()} == \
        {k: ("burst.mp4", *v[2:]) for k, v in whole_folder.items()}
    back = dataset.build_from_videos(videos, out, clip_s=1.0, workers=1)
    assert (back["renamed"], back["written"], back["removed"], reads) == (3, 0, 0, []), back
    assert burst() == whole_folder and len(list(out.glob("*.npz"))) == 3
    index = json.loads((out / "index.json").read_text())
    assert sorted(r["source"] for r in index["skipped"]) == ["mute.mp4", "r1/burst.mp4"]
    # judged with another threshold, the window is read again (and now written)
    monkeypatch.setattr(dataset, "SILENCE_DBFS", -300.0)
    louder = dataset.build_from_videos(videos, out, clip_s=1.0, workers=1)
    assert reads == [3.0] and louder["written"] == 1 and louder["existing"] == 3
    assert not [r for r in louder["skipped"] if r["source"] == "r1/burst.mp4"]


def test_a_rerun_with_another_window_length_cuts_the_video_again(tmp_path: Path) -> None:
    """The folder holds one cut of each video: a rerun with another --clip-s remakes every
    window, a window of the old cut that is silent in the new one does not stay, and the
    windows past the end of the new cut go, files and index rows alike; a video skipped for
    want of the sound asked for keeps no window of another sound."""
    from typer.testing import CliRunner

    from flows.cli import app

    videos = tmp_path / "reels"
    videos.mkdir()
    _video(videos / "burst.mp4")                   # bursts at 0.4, 1.4, 2.4 s; 3–4 s silent
    out = tmp_path / "data"

    def cut() -> dict[int, tuple[float, float]]:
        index = json.loads((out / "index.json").read_text())
        files = sorted(p.stem for p in out.glob("*.npz"))
        assert sorted(c["name"] for c in index["clips"]) == files
        return {c.meta["window"]: (c.meta["clip_s"], c.meta["start_s"])
                for c in dataset.iter_clips(out)}

    first = dataset.build_from_videos(videos, out, clip_s=1.0, workers=1)
    assert first["written"] == 3 and cut() == {0: (1.0, 0.0), 1: (1.0, 1.0), 2: (1.0, 2.0)}
    # 0.6 s: window 1 (0.6–1.2 s) falls between two bursts, where window 1 of the 1 s cut sounded
    finer = dataset.build_from_videos(videos, out, clip_s=0.6, workers=1)
    skipped = {r["name"].rsplit("_", 1)[1]: r["reason"] for r in finer["skipped"]}
    assert skipped["0001"].startswith("silent"), finer["skipped"]
    assert set(cut()) == {0, 2, 4} - {int(k) for k in skipped}
    assert {v[0] for v in cut().values()} == {0.6} and cut()[2] == (0.6, pytest.approx(1.2))
    # 3 s: one window; the rest of the 0.6 s cut and its skipped rows go
    res = CliRunner().invoke(app, ["dataset", "videos", str(videos), str(out), "--clip-s", "3",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "1 written, 0 already there, 0 skipped, 0 failed, 2 of an earlier cut removed" \
        in res.output, res.output
    assert cut() == {0: (3.0, 0.0)}
    assert json.loads((out / "index.json").read_text())["skipped"] == []
    # the reel exported again (here only its metadata differs): cut again; a copy is not
    src = videos / "burst.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-c", "copy", "-metadata",
                    "title=R1 v2", str(tmp_path / "v2.mp4")], check=True)
    os.replace(tmp_path / "v2.mp4", src)
    assert dataset.build_from_videos(videos, out, clip_s=3.0, workers=1)["written"] == 1
    shutil.copy(src, tmp_path / "copy.mp4")
    os.replace(tmp_path / "copy.mp4", src)
    assert dataset.build_from_videos(videos, out, clip_s=3.0, workers=1)["existing"] == 1
    # asked for a stream the video lacks: skipped, and its windows of stream 0 go
    other = dataset.build_from_videos(videos, out, clip_s=3.0, workers=1, audio_stream=1)
    assert other["removed"] == 1 and "no audio stream 1" in other["skipped"][0]["reason"]
    assert not list(out.glob("*.npz"))


def test_one_folder_gathers_reels_of_several_folders_and_loses_none(tmp_path: Path) -> None:
    """Two shows' R1.mp4 built into one dataset folder: the second fails alone instead of
    replacing the first's windows; the first's folder moved elsewhere keeps its windows; the
    folder holding both cuts each under its own path (the old names go); --prune removes the
    windows of a reel taken out of the folder, and only those."""
    from typer.testing import CliRunner

    from flows.cli import app

    shows, out = tmp_path / "shows", tmp_path / "data"
    (shows / "A").mkdir(parents=True)
    (shows / "B").mkdir()
    _video(shows / "A" / "R1.mp4")
    # another show's reel of the same name: another file (here, another title)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shows / "A" / "R1.mp4"), "-c", "copy",
                    "-metadata", "title=show B", str(shows / "B" / "R1.mp4")], check=True)

    def held() -> dict[str, tuple[str, str]]:
        index = json.loads((out / "index.json").read_text())
        assert sorted(c["name"] for c in index["clips"]) == sorted(p.stem for p in out.glob("*.npz"))
        return {c.name: (c.meta["source"], Path(c.meta["root"]).name)
                for c in dataset.iter_clips(out)}

    assert dataset.build_from_videos(shows / "A", out, clip_s=2.0, workers=1)["written"] == 2
    before = {p.name: p.read_bytes() for p in out.glob("*.npz")}
    other = dataset.build_from_videos(shows / "B", out, clip_s=2.0, workers=1)
    assert other["written"] == 0 and other["removed"] == 0, other
    assert [r["source"] for r in other["failed"]] == ["R1.mp4"]
    assert f"cut from {shows / 'A'}" in other["failed"][0]["reason"]
    cli = CliRunner().invoke(app, ["dataset", "videos", str(shows / "B"), str(out),
                                   "--clip-s", "2", "--workers", "1"])
    assert cli.exit_code == 2 and "failed: R1.mp4" in cli.output, cli.output
    assert "nothing from this run went into" in cli.output, cli.output
    assert "(it holds 2 clips of earlier runs)" in cli.output, cli.output
    assert {p.name: p.read_bytes() for p in out.glob("*.npz")} == before     # A's untouched
    # show A's folder moved: the same files, kept (their folder rewritten), and no conflict after
    os.rename(shows / "A", shows / "A2")
    moved = dataset.build_from_videos(shows / "A2", out, clip_s=2.0, workers=1)
    assert moved["written"] == 0 and moved["existing"] == 2 and not moved["failed"], moved
    assert set(held().values()) == {("R1.mp4", "A2")}

    def failed() -> list[tuple[str, str]]:
        return [(r["source"], Path(r["root"]).name)
                for r in json.loads((out / "index.json").read_text())["failed"]]

    assert failed() == [("R1.mp4", "B")]       # B's reel still cannot be cut under that name
    # the folder that holds both: each reel under its own path, A's old names removed
    both = dataset.build_from_videos(shows, out, clip_s=2.0, workers=1)
    assert both["written"] == 2 and both["renamed"] == 2 and both["removed"] == 0, both
    assert failed() == []
    assert sorted(set(held().values())) == [("A2/R1.mp4", "shows"), ("B/R1.mp4", "shows")]
    # show B's reel taken out: kept without --prune, removed with it (files and index rows)
    (shows / "B" / "R1.mp4").unlink()
    assert dataset.build_from_videos(shows, out, clip_s=2.0, workers=1)["existing"] == 2
    assert len(held()) == 4
    res = CliRunner().invoke(app, ["dataset", "videos", str(shows), str(out), "--clip-s", "2",
                                   "--workers", "1", "--prune"])
    assert res.exit_code == 0, res.output
    assert "0 written, 2 already there, 0 skipped, 0 failed, 2 of reels no longer in the " \
        "folder removed" in res.output, res.output
    assert set(held().values()) == {("A2/R1.mp4", "shows")}


def test_windows_from_before_folders_were_recorded_are_never_taken_for_another_folders(
        tmp_path: Path) -> None:
    """Windows written before meta root and digests (simulated by taking them out): another
    folder's reel of the same name fails alone, --prune from another folder leaves them, and a
    rerun of their own folder keeps them and records both. A file fixed since it failed loses
    its failed row; a name that is not UTF-8 fails alone."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "data"
    a.mkdir()
    b.mkdir()
    _video(a / "R1.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(a / "R1.mp4"), "-c", "copy",
                    "-metadata", "title=show B", str(b / "R1.mp4")], check=True)
    (b / "R2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    assert dataset.build_from_videos(a, out, clip_s=2.0, workers=1)["written"] == 2
    for path in out.glob("clip_*.npz"):
        clip = dataset.read_clip(path)
        meta = {k: v for k, v in clip.meta.items() if k not in ("root", "digests")}
        dataset.write_clip(path, clip.features, clip.audio16k, events=clip.events,
                           sustained=clip.sustained, onsets=clip.onsets, meta=meta)
    before = {p.name: p.read_bytes() for p in out.glob("*.npz")}
    other = dataset.build_from_videos(b, out, clip_s=2.0, workers=1, prune=True)
    assert other["written"] == 0 and other["pruned"] == 0, other
    reasons = {r["source"]: r["reason"] for r in other["failed"]}
    assert "before windows recorded the folder they were cut from" in reasons["R1.mp4"]
    assert "R2.mp4" in reasons
    assert {p.name: p.read_bytes() for p in out.glob("*.npz")} == before
    own = dataset.build_from_videos(a, out, clip_s=2.0, workers=1)
    assert own["written"] == 0 and own["existing"] == 2, own
    assert {c.meta["root"] for c in dataset.iter_clips(out)} == {str(a.resolve())}
    assert all("digests" in c.meta for c in dataset.iter_clips(out))
    # B's R2 fixed: cut, and its failed row goes; a name of Latin-1 bytes fails alone
    _video(b / "R2.mp4")
    odd = os.fsdecode(bytes(b) + b"/R\xf3lo.mp4")
    shutil.copy(b / "R2.mp4", odd)
    fixed = dataset.build_from_videos(b, out, clip_s=2.0, workers=1)
    assert fixed["written"] == 2, fixed
    failed = json.loads((out / "index.json").read_text())["failed"]
    assert sorted(r["source"] for r in failed) == ["R1.mp4", "R\\xf3lo.mp4"], failed
    assert "not UTF-8" in next(r["reason"] for r in failed if r["source"] != "R1.mp4")


def test_a_reel_copied_into_two_folders_stays_with_the_first(tmp_path: Path) -> None:
    """The same bytes at the same path in two folders: the second folder's runs keep the
    windows as the first's (not rewritten run after run), and its --prune never takes them;
    a skipped reel taken out of the folder loses its index row with --prune."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "data"
    a.mkdir()
    b.mkdir()
    _video(a / "R1.mp4")
    shutil.copy(a / "R1.mp4", b / "R1.mp4")
    _video(b / "mute.mp4", audio=False)
    assert dataset.build_from_videos(a, out, clip_s=2.0, workers=1)["written"] == 2

    def stamps() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}

    first = stamps()
    for folder in (b, a, b):
        again = dataset.build_from_videos(folder, out, clip_s=2.0, workers=1)
        assert again["written"] == 0 and again["existing"] == 2, again
    assert stamps() == first
    assert {c.meta["root"] for c in dataset.iter_clips(out)} == {str(a.resolve())}
    rows = json.loads((out / "index.json").read_text())["skipped"]
    assert [(r["source"], r["root"]) for r in rows] == [("mute.mp4", str(b.resolve()))]
    (b / "R1.mp4").unlink()
    (b / "mute.mp4").unlink()
    pruned = dataset.build_from_videos(b, out, clip_s=2.0, workers=1, prune=True)
    assert pruned["pruned"] == 0 and stamps() == first, pruned
    assert json.loads((out / "index.json").read_text())["skipped"] == []
    # the digest cache and the index damaged: read as empty, rebuilt, nothing remade
    for name in (dataset.DIGESTS, dataset.INDEX):
        (out / name).write_bytes(b"\xff\x00[")
    kept = dataset.build_from_videos(a, out, clip_s=2.0, workers=1)
    assert kept["existing"] == 2 and stamps() == first, kept
    assert len(json.loads((out / "index.json").read_text())["clips"]) == 2


def _bursts(times: list[float], n: int, sr: int, hz: float = 660.0) -> np.ndarray:
    """150 ms tone bursts starting at `times` (s) in n samples of silence."""
    out = np.zeros(n)
    t = np.arange(int(0.15 * sr)) / sr
    for start in times:
        i = int(round(start * sr))
        out[i:i + len(t)] += 0.4 * np.sin(2 * np.pi * hz * t)[:n - i]
    return out


def _reel(path: Path) -> Path:
    """3 s of picture at 25 fps starting at 01:00:00:00; audio stream 0 a mix (bursts 0.4 s into
    each second), stream 1 a Foley track (bursts 0.7 s into each second)."""
    foley = "if(between(mod(t,1),0.7,0.85),0.5*sin(2*PI*880*t),0)"
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
            "testsrc2=size=320x180:rate=25:duration=3",
            "-f", "lavfi", "-i", f"aevalsrc='{BURST}':s=48000:d=3",
            "-f", "lavfi", "-i", f"aevalsrc='{foley}':s=48000:d=3",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-c:a", "pcm_s24le"]
    subprocess.run(args + ["-timecode", "01:00:00:00", str(path)], check=True)
    return path


def test_a_backup_copy_cut_apart_never_takes_an_unmounted_shows_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A show and a backup copy of its folder, each cut: with the show's disk gone, the
    backup's rebuild keeps both (the copy has windows of its own); a window whose renaming
    fails (a full disk) stays under its old name, media and all, and the next run renames it."""
    show, backup, out = tmp_path / "mnt" / "showA", tmp_path / "backup", tmp_path / "data"
    show.mkdir(parents=True)
    _video(show / "R1.mp4")
    shutil.copytree(show, backup / "showA")
    for folder in (show, backup):
        assert dataset.build_from_videos(folder, out, clip_s=2.0, workers=1)["written"] == 2
    os.rename(tmp_path / "mnt", tmp_path / "unmounted")
    again = dataset.build_from_videos(backup, out, clip_s=2.0, workers=1)
    assert (again["existing"], again["removed"], again["renamed"]) == (2, 0, 0), again
    assert len(list(out.glob("*.npz"))) == 4

    # the folder inside a cut one, built while the disk is full for its second window
    videos = tmp_path / "videos"
    (videos / "r1").mkdir(parents=True)
    _video(videos / "r1" / "R1.mp4")
    data = tmp_path / "data2"
    assert dataset.build_from_videos(videos, data, clip_s=2.0, workers=1,
                                     keep_media=True)["written"] == 2
    write = dataset.write_clip

    def full_disk(path: Path, *args, **kw) -> None:
        if path.stem.endswith("_0001"):
            raise OSError(28, "No space left on device")
        write(path, *args, **kw)

    monkeypatch.setattr(dataset, "write_clip", full_disk)
    full = dataset.build_from_videos(videos / "r1", data, clip_s=2.0, workers=1)
    assert full["renamed"] == 1 and "kept as clip_r1-R1-" in full["failed"][0]["reason"], full

    names = sorted(p.name for p in [*data.glob("*.npz"), *(data / "media").iterdir()])
    assert [n.split("-")[0] for n in names] == ["clip_R1", "clip_R1", "clip_r1", "clip_r1"], names
    monkeypatch.setattr(dataset, "write_clip", write)
    done = dataset.build_from_videos(videos / "r1", data, clip_s=2.0, workers=1)
    assert (done["renamed"], done["existing"], done["failed"]) == (1, 1, []), done
    names = sorted(p.name for p in [*data.glob("*.npz"), *(data / "media").iterdir()])
    assert [n.split("-")[0] for n in names] == ["clip_R1"] * 4, names


def test_the_digest_cache_follows_a_file_moved_on_its_file_system(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A renamed or moved file (same inode, name, size, mtime and sampled bytes) is not read
    again, and its old path leaves the cache; a file changed at the same size is, a copy is
    (another inode), and so is another file that took a deleted one's inode, name, size and
    mtime."""
    from tasks import store

    reads: list[str] = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file",
                        lambda path, progress=None: reads.append(Path(path).name) or real(path))
    (tmp_path / "reels").mkdir()
    first = tmp_path / "reels" / "R1.mov"
    first.write_bytes(os.urandom(1 << 16))
    cache = store.HashCache(tmp_path / "cache.json")
    digest = cache.sha256(first)
    cache.save()
    os.rename(tmp_path / "reels", tmp_path / "show")
    moved = tmp_path / "show" / "R1.mov"
    cache = store.HashCache(tmp_path / "cache.json")        # a later run
    assert cache.cached(moved) == digest and cache.sha256(moved) == digest and reads == ["R1.mov"]
    cache.save()
    assert list(json.loads((tmp_path / "cache.json").read_text())) == [str(moved.resolve())]
    shutil.copy(moved, tmp_path / "copy.mov")
    assert cache.sha256(tmp_path / "copy.mov") == digest and reads[-1] == "copy.mov"
    stat = moved.stat()
    moved.write_bytes(os.urandom(1 << 16))                  # exported again in place
    os.utime(moved, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    moved.rename(tmp_path / "show" / "R2.mov")
    again = store.HashCache(tmp_path / "cache.json")
    assert again.cached(tmp_path / "show" / "R2.mov") is None
    assert again.sha256(tmp_path / "show" / "R2.mov") != digest and reads[-1] == "R2.mov"
    # a file deleted and another written with its name, size and mtime, which took its freed
    # inode (ext4 reuses one at once): made here by recording the file under a gone path and
    # writing other bytes into it; its digest is read, not taken from the deleted one's
    again.save()
    known = json.loads((tmp_path / "cache.json").read_text())
    here = str((tmp_path / "show" / "R2.mov").resolve())
    known[str(tmp_path / "gone" / "R2.mov")] = known.pop(here)
    (tmp_path / "cache.json").write_text(json.dumps(known))
    stat = (tmp_path / "show" / "R2.mov").stat()
    (tmp_path / "show" / "R2.mov").write_bytes(os.urandom(1 << 16))
    os.utime(tmp_path / "show" / "R2.mov", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.HashCache(tmp_path / "cache.json").cached(tmp_path / "show" / "R2.mov") is None


def test_windows_cut_under_another_path_go_to_their_own_reel_and_survive_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two copies of a reel in a folder moved into another: each keeps its own windows under
    its new path, media with them, even when the build is killed between writing a window's
    new file and removing the old; a reel of the same picture with other stems never takes
    the windows of a folder that is gone (a disk not mounted); asked to prune, the build of a
    folder the reel moved into with its stems exported again removes them."""
    x, out = tmp_path / "X", tmp_path / "data"
    (x / "A").mkdir(parents=True)
    (x / "B").mkdir()
    _video(x / "A" / "R1.mp4")
    shutil.copy(x / "A" / "R1.mp4", x / "B" / "R1.mp4")
    assert dataset.build_from_videos(x, out, clip_s=1.0, workers=1, keep_media=True)["written"] == 6
    before = {(c.meta["source"], c.meta["window"]): c.audio16k.tobytes()
              for c in dataset.iter_clips(out)}
    (tmp_path / "Z").mkdir()
    os.rename(x, tmp_path / "Z" / "X")

    class Killed(BaseException):
        """The process dies between writing a window's new npz and removing its old one."""

    unlink = Path.unlink

    def dies_once(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("clip_A-R1-") and self.suffix == ".npz":
            monkeypatch.setattr(Path, "unlink", unlink)
            raise Killed(self.name)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", dies_once)
    with pytest.raises(Killed):
        dataset.build_from_videos(tmp_path / "Z", out, clip_s=1.0, workers=1)
    again = dataset.build_from_videos(tmp_path / "Z", out, clip_s=1.0, workers=1)
    assert again["written"] == 0 and again["existing"] + again["renamed"] == 6, again
    assert {(c.meta["source"], c.meta["window"]): c.audio16k.tobytes()
            for c in dataset.iter_clips(out)} == {("X/" + src, k): a for (src, k), a in before.items()}
    assert sorted(p.name.rsplit("_", 2)[0] for p in (out / "media").iterdir()) == \
        sorted(p.stem.rsplit("_", 1)[0] for p in out.glob("*.npz"))

    # show A's reel with its Foley, show B's the same picture with another: A's disk gone
    from tasks.bwf import time_reference_from_timecode, write_bwf

    hour = time_reference_from_timecode("01:00:00:00", 25.0, 48000)
    mnt, b, foley = tmp_path / "mnt" / "A", tmp_path / "B", tmp_path / "foley"
    mnt.mkdir(parents=True)
    b.mkdir()
    _reel(mnt / "R1.mov")
    write_bwf(mnt / "R1_FOLEY.wav", _bursts([0.1, 1.1], 48000 * 3, 48000), 48000,
              time_reference=hour)
    shutil.copy(mnt / "R1.mov", b / "R1b.mov")
    write_bwf(b / "R1b_FOLEY.wav", _bursts([0.3, 2.3], 48000 * 3, 48000), 48000,
              time_reference=hour)
    for folder in (mnt, b):
        assert dataset.build_from_videos(folder, foley, clip_s=1.0, workers=1,
                                         stems="foley")["written"] == 2
    os.rename(tmp_path / "mnt", tmp_path / "unmounted")
    alone = dataset.build_from_videos(b, foley, clip_s=1.0, workers=1, stems="foley")
    assert (alone["existing"], alone["removed"], alone["renamed"]) == (2, 0, 0), alone
    assert sorted({c.meta["source"] for c in dataset.iter_clips(foley)}) == ["R1.mov", "R1b.mov"]
    # asked to prune, still: R1b.mov is another reel; but A's R1.mov moved into B with its
    # stems exported again (the same picture at a path ending with its old one) takes them
    kept = dataset.build_from_videos(b, foley, clip_s=1.0, workers=1, stems="foley", prune=True)
    assert (kept["existing"], kept["pruned"], kept["removed"]) == (2, 0, 0), kept
    (b / "A").mkdir()
    shutil.copy(b / "R1b.mov", b / "A" / "R1.mov")
    write_bwf(b / "A" / "R1_FOLEY.wav", _bursts([0.6, 1.6], 48000 * 3, 48000), 48000,
              time_reference=hour)
    pruned = dataset.build_from_videos(b, foley, clip_s=1.0, workers=1, stems="foley", prune=True)
    assert (pruned["existing"], pruned["pruned"], pruned["written"]) == (2, 2, 2), pruned
    assert {c.meta["source"] for c in dataset.iter_clips(foley)} == {"R1b.mov", "A/R1.mov"}


def _onsets_by_window(out: Path, source: str) -> dict[int, list[float]]:
    return {c.meta["window"]: [round(o["t"], 2) for o in c.onsets]
            for c in dataset.iter_clips(out) if c.meta["source"] == source}


def test_build_from_videos_learns_from_a_chosen_track_or_sidecar_stems(tmp_path: Path) -> None:
    from tasks.bwf import time_reference_from_timecode, write_bwf

    reels = tmp_path / "reels"
    reels.mkdir()
    _reel(reels / "R1.mov")
    _reel(reels / "R10.mov")
    one_hour = time_reference_from_timecode("01:00:00:00", 25.0, 48000)
    # R1's Foley, in two stems placed by their BWF time stamps: footsteps start 0.5 s after the
    # picture (a burst 0.1 s into the stem is at 0.6 s of picture), props at 01:00:00:00 at
    # 44.1 kHz stereo; the music stem and R10's stem are not R1's Foley
    write_bwf(reels / "R1_FOLEY_FS.wav", _bursts([0.1, 1.1], 48000 * 3, 48000), 48000,
              time_reference=one_hour + 24000)
    props = _bursts([1.3, 2.45], 44100 * 3, 44100, hz=1200.0)
    write_bwf(reels / "R1 - Foley Props.wav", np.stack([props, props], axis=1), 44100,
              time_reference=round(one_hour * 44100 / 48000))
    write_bwf(reels / "R1_MX.wav", _bursts([0.2], 48000 * 3, 48000), 48000, time_reference=one_hour)
    write_bwf(reels / "R10_FOLEY.wav", _bursts([0.5], 48000 * 3, 48000), 48000, time_reference=0)

    out = tmp_path / "foley"
    summary = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1, stems="foley")
    assert summary["written"] == 4 and not summary["failed"], summary
    assert _onsets_by_window(out, "R1.mov") == {0: [0.6], 1: [0.3, 0.6], 2: [0.45]}
    # R10's stem carries no time stamp (TimeReference 0): it starts with the picture; its last
    # two seconds are silent
    assert _onsets_by_window(out, "R10.mov") == {0: [0.5]}
    r10 = next(c for c in dataset.iter_clips(out) if c.meta["source"] == "R10.mov")
    assert r10.meta["sound"]["stems"] == [{"file": "R10_FOLEY.wav", "offset_s": 0.0,
                                           "aligned_by": "start"}]
    assert sorted(r["reason"].split(" ")[0] for r in summary["skipped"]) == ["silent", "silent"]
    r1 = next(c for c in dataset.iter_clips(out) if c.meta["source"] == "R1.mov")
    assert r1.meta["sound_source"] == "stems:foley"
    placed = {s["file"]: (round(s["offset_s"], 6), s["aligned_by"]) for s in r1.meta["sound"]["stems"]}
    assert placed == {"R1 - Foley Props.wav": (0.0, "timecode"), "R1_FOLEY_FS.wav": (0.5, "timecode")}
    # the 0.1 s burst of the footsteps stem lands within a sample of 0.6 s of picture
    assert abs(next(o["t"] for o in r1.onsets) - 0.6) < 0.002
    # a stem added next to R1: R1's windows are made again with it, R10's are kept
    write_bwf(reels / "R1_FOLEY_BG.wav", _bursts([2.2], 48000 * 3, 48000), 48000,
              time_reference=one_hour)
    more = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1, stems="foley")
    assert more["written"] == 3 and more["existing"] == 1, more
    assert _onsets_by_window(out, "R1.mov") == {0: [0.6], 1: [0.3, 0.6], 2: [0.2, 0.45]}
    # R10's stem exported again at the same length (the same size) with its hit moved, and its
    # silent seconds now sounding: its windows are made again and its silent verdicts judged anew
    size = (reels / "R10_FOLEY.wav").stat().st_size
    write_bwf(reels / "R10_FOLEY.wav", _bursts([0.25, 1.5, 2.5], 48000 * 3, 48000), 48000,
              time_reference=0)
    assert (reels / "R10_FOLEY.wav").stat().st_size == size
    moved = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1, stems="foley")
    assert moved["written"] == 3 and moved["existing"] == 3 and not moved["skipped"], moved
    assert _onsets_by_window(out, "R10.mov") == {0: [0.25], 1: [0.5], 2: [0.5]}
    # copied elsewhere (new modification times, the same bytes): every window kept
    shutil.copytree(reels, tmp_path / "copy")
    kept = dataset.build_from_videos(tmp_path / "copy", out, clip_s=1.0, workers=1, stems="foley")
    assert kept["written"] == 0 and kept["existing"] == 6 and not kept["failed"], kept

    # the reel's second audio track; a third is not there
    track = tmp_path / "track"
    assert dataset.build_from_videos(reels, track, clip_s=1.0, workers=1, audio_stream=1)["written"] == 6
    assert _onsets_by_window(track, "R1.mov") == {0: [0.7], 1: [0.7], 2: [0.7]}
    mix = dataset.build_from_videos(reels, track, clip_s=1.0, workers=1)   # another source remakes
    assert mix["written"] == 6 and mix["existing"] == 0
    assert _onsets_by_window(track, "R1.mov") == {0: [0.4], 1: [0.4], 2: [0.4]}
    assert dataset.build_from_videos(reels, track, clip_s=1.0, workers=1)["existing"] == 6
    none = dataset.build_from_videos(reels, tmp_path / "none", clip_s=1.0, workers=1, audio_stream=2)
    assert none["written"] == 0
    assert {r["reason"] for r in none["skipped"]} == {"no audio stream 2 (it has 2: 0–1)"}
    # the reels moved into a show's folder and built from there: every window is kept under
    # its new name, the stems' paths with it; with another window length they are cut again
    show = tmp_path / "show"
    show.mkdir()
    os.rename(reels, show / "reels")
    there = dataset.build_from_videos(show, out, clip_s=1.0, workers=1, stems="foley")
    assert there["renamed"] == 6 and there["written"] == 0 and not there["failed"], there
    assert _onsets_by_window(out, "reels/R10.mov") == {0: [0.25], 1: [0.5], 2: [0.5]}
    r1 = next(c for c in dataset.iter_clips(out) if c.meta["source"] == "reels/R1.mov")
    assert r1.name.startswith("clip_reels-R1-") and r1.meta["root"] == str(show.resolve())
    assert sorted(s["file"] for s in r1.meta["sound"]["stems"]) == \
        ["reels/R1 - Foley Props.wav", "reels/R1_FOLEY_BG.wav", "reels/R1_FOLEY_FS.wav"]
    assert set(r1.meta["digests"]) == {"reels/R1.mov"} | {s["file"] for s in r1.meta["sound"]["stems"]}
    os.rename(show / "reels", show / "R")
    longer = dataset.build_from_videos(show, out, clip_s=1.5, workers=1, stems="foley")
    assert (longer["renamed"], longer["removed"], longer["written"]) == (0, 6, 2), longer


def test_stems_that_miss_the_picture_fail_alone_and_the_cli_says_so(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.bwf import time_reference_from_timecode, write_bwf

    reels = tmp_path / "reels"
    reels.mkdir()
    _reel(reels / "R2.mov")
    _reel(reels / "R3.mov")
    # stamped at 10:00:00:00: nine hours after R2's picture
    write_bwf(reels / "R2_foley.wav", _bursts([0.5], 48000 * 3, 48000), 48000,
              time_reference=time_reference_from_timecode("10:00:00:00", 25.0, 48000))
    run = CliRunner().invoke(app, ["dataset", "videos", str(reels), str(tmp_path / "d"),
                                   "--stems", "foley", "--clip-s", "1", "--workers", "1"])
    assert run.exit_code == 2, run.output
    assert "failed: R2.mov" in run.output and "R2_foley.wav" in run.output
    assert ("(stamped 10:00:00:00–10:00:03:00) holds no sound over the picture "
            "(01:00:00:00–01:00:03:00 at 25 fps)") in run.output
    assert "skipped: R3.mov" in run.output and "R3_FOLEY.wav" in run.output
    assert "nothing to train on" in run.output
    assert not list((tmp_path / "d").glob("clip_*.npz"))
    both = CliRunner().invoke(app, ["dataset", "videos", str(reels), str(tmp_path / "d"),
                                    "--stems", "foley", "--audio-stream", "1"])
    assert both.exit_code == 2 and "give one" in both.output


def _hit(n: int, sr: int, at: float, peak: float, rng: np.random.Generator) -> np.ndarray:
    """A decaying noise hit (15 ms time constant) starting at `at` s, in n samples."""
    out = np.zeros(n)
    i = int(round(at * sr))
    t = np.arange(n - i) / sr
    out[i:] = peak * rng.standard_normal(n - i) * np.exp(-t / 0.015)
    return out


def test_the_training_truth_takes_the_hit_and_reads_again_on_a_rerun(tmp_path: Path) -> None:
    """A window holding a hit, its rattle 80 ms later and a rub whose grain swells by 9 dB: the
    builder's truth (14 dB, 150 ms) is the hit and the rub's start, detect_onsets' own settings
    (6 dB, 50 ms) take the rattle and the swell too. Other onset settings on a rerun read the
    onsets again from the stored sound and leave the picture's features as they were."""
    from typer.testing import CliRunner

    from flows.cli import app

    reels = tmp_path / "reels"
    reels.mkdir()
    _reel(reels / "R4.mov")
    rng = np.random.default_rng(4)
    n = 48000 * 3
    sound = 10 ** (-70 / 20) * rng.standard_normal(n)              # room tone
    sound += _hit(n, 48000, 0.2, 0.5, rng) + _hit(n, 48000, 0.28, 0.12, rng)
    rub = np.zeros(n)
    rub[24000:48000] = 10 ** (-30 / 20) * rng.standard_normal(24000)
    rub[int(0.7 * 48000):48000] *= 10 ** (9 / 20)                  # the grain swells at 0.7 s
    sf.write(reels / "R4_foley.wav", sound + rub, 48000, subtype="PCM_24")   # no bext: at the start

    out = tmp_path / "data"
    summary = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1, stems="foley")
    assert summary["written"] == 1, summary                        # windows 1 and 2 are silent
    (clip,) = dataset.iter_clips(out)
    assert clip.meta["onset_truth"] == {"rise_db": 14.0, "min_gap_s": 0.15, "floor_dbfs": -40.0}
    assert [round(o["t"], 2) for o in clip.onsets] == [0.2, 0.5]

    def cli(*extra: str):
        return CliRunner().invoke(app, ["dataset", "videos", str(reels), str(out), "--stems",
                                        "foley", "--clip-s", "1", "--workers", "1", *extra])

    loose = cli("--onset-rise-db", "6", "--onset-gap-ms", "50")
    assert loose.exit_code == 0, loose.output
    assert "0 written, 1 with their onsets read again, 0 already there" in loose.output
    (again,) = dataset.iter_clips(out)
    assert [round(o["t"], 2) for o in again.onsets] == [0.2, 0.28, 0.5, 0.7]
    assert again.meta["onset_truth"] == {"rise_db": 6.0, "min_gap_s": 0.05, "floor_dbfs": -40.0}
    assert again.meta | {"onset_truth": None} == clip.meta | {"onset_truth": None}
    np.testing.assert_array_equal(again.audio16k, clip.audio16k)
    for key, value in clip.features.items():
        np.testing.assert_array_equal(again.features[key], value)
    same = cli("--onset-rise-db", "6", "--onset-gap-ms", "50")
    assert same.exit_code == 0 and "0 written, 1 already there" in same.output

    # a window written before meta onset_truth existed was read with detect_onsets' settings
    dataset.write_clip(again.path, again.features, again.audio16k, events=[], sustained=[],
                       onsets=again.onsets, meta={k: v for k, v in again.meta.items()
                                                  if k != "onset_truth"})
    old = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1, stems="foley",
                                    onset_truth=dataset.DETECTOR_TRUTH)
    assert (old["existing"], old["relabelled"], old["written"]) == (1, 0, 0)
    # the folder around it cut with the builder's own truth: the window is kept under its
    # path there, and its onsets are read again
    around = dataset.build_from_videos(tmp_path, out, clip_s=1.0, workers=1, stems="foley")
    assert (around["renamed"], around["relabelled"], around["written"]) == (1, 1, 0), around
    (moved,) = dataset.iter_clips(out)
    assert moved.meta["source"] == "reels/R4.mov"
    assert [round(o["t"], 2) for o in moved.onsets] == [0.2, 0.5]

    bad = cli("--onset-rise-db", "0")
    assert bad.exit_code == 2 and "--onset-rise-db" in bad.output and "above 0 dB" in bad.output


def _damage(npz: Path, member: str) -> None:
    """Flip bytes in the middle of one member's stored data: the archive still opens, the
    member no longer reads."""
    import struct
    import zipfile

    with zipfile.ZipFile(npz) as z:
        info = z.getinfo(member)
    raw = bytearray(npz.read_bytes())
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[at + 26:at + 30])
    mid = at + 30 + name_len + extra_len + info.compress_size // 2
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])
    npz.write_bytes(bytes(raw))


def test_a_rerun_reads_no_video_and_verify_remakes_a_damaged_window(tmp_path: Path) -> None:
    """A rerun keeps windows on their keys and lengths and the videos' probes by digest (the
    probe cache is what it reads: an entry changed by hand changes the cut, an entry of
    another probe version is probed again); a window damaged on disk is named when read and
    made again by --verify."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.store import sha256_file

    reels, out = tmp_path / "reels", tmp_path / "data"
    reels.mkdir()
    video = _video(reels / "R1.mp4")
    first = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)
    assert first["written"] == 3 and len(first["skipped"]) == 1, first      # 3–4 s is silent
    probes = json.loads((out / dataset.PROBES).read_text())
    assert list(probes) == [sha256_file(video)]
    assert probes[sha256_file(video)]["n_frames"] == 100
    windows = sorted(out.glob("clip_*.npz"))
    stamps = [p.stat().st_mtime_ns for p in windows]
    again = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)
    assert (again["existing"], again["written"]) == (3, 0)
    assert [p.stat().st_mtime_ns for p in windows] == stamps

    # the probe is read from the cache: told the reel is 2.5 s, the build cuts 2 windows
    entry = probes[sha256_file(video)]
    (out / dataset.PROBES).write_text(json.dumps({sha256_file(video): entry | {"duration_s": 2.5}}))
    short = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)
    assert (short["existing"], short["removed"]) == (2, 1), short
    (out / dataset.PROBES).write_text(json.dumps({sha256_file(video): entry | {
        "duration_s": 2.5, "made_by": "0:an-older-ffmpeg"}}))
    whole = dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)
    assert (whole["existing"], whole["written"]) == (2, 1), whole
    assert json.loads((out / dataset.PROBES).read_text())[sha256_file(video)] == entry

    # a window damaged on disk: a rerun keeps it (its keys and lengths are right), reading it
    # names it, and --verify makes it again
    windows = sorted(out.glob("clip_*.npz"))
    _damage(windows[1], "feat_flow_grid.npy")
    assert dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)["existing"] == 3
    with pytest.raises(ValueError, match=windows[1].name):
        dataset.read_clip(windows[1])
    res = CliRunner().invoke(app, ["dataset", "videos", str(reels), str(out), "--clip-s", "1",
                                   "--workers", "1", "--verify"])
    assert res.exit_code == 0 and "1 written, 2 already there" in res.output, res.output
    assert len(list(dataset.iter_clips(out))) == 3


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_build_stopped_while_cutting_leaves_an_index_of_what_is_there(
        tmp_path: Path, stop: str) -> None:
    """Cut again with another window length and stopped while the windows are cut — ^C, or
    `foley dataset videos` sent SIGTERM (a scheduler stopping the job): the old windows are
    gone and index.json names exactly the windows on disk; a rerun finishes."""
    import signal
    import sys
    import time

    reels, out = tmp_path / "reels", tmp_path / "data"
    reels.mkdir()
    _video(reels / "R1.mp4")
    assert dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)["written"] == 3
    if stop == "SIGINT":      # ^C as at a terminal (a background job, as CI's may be, ignores it)
        cmd = [sys.executable, "-c",
               "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from tasks import dataset; "
               f"dataset.build_from_videos({str(reels)!r}, {str(out)!r}, clip_s=0.5, workers=1)"]
    else:                     # the CLI with two workers, its process group sent SIGTERM
        cmd = [sys.executable, "-c", "from flows.cli import app; app()", "dataset", "videos",
               str(reels), str(out), "--clip-s", "0.5", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).parents[1], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def cutting() -> bool:
        """The old windows are gone, and a window of the new cut is written."""
        metas = [dataset._read_meta(p) for p in out.glob("clip_*.npz")]
        return bool(metas) and all(m is not None and m["clip_s"] == 0.5 for m in metas)

    deadline = time.monotonic() + 120
    while not cutting():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    if stop == "SIGINT":
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) != 0
    else:                     # the workers too: none is left holding the pool's queue
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM, proc.stderr.read()
        assert b"run the same command again to resume" in proc.stderr.read()
    on_disk = sorted(p.name for p in out.glob("clip_*.npz"))
    index = json.loads((out / "index.json").read_text())
    assert 1 <= len(on_disk) and sorted(c["file"] for c in index["clips"]) == on_disk
    done = dataset.build_from_videos(reels, out, clip_s=0.5, workers=1)
    assert done["written"] >= 1 and not done["failed"], done
    assert done["written"] + done["existing"] + len(done["skipped"]) == 8, done


def test_a_build_stopped_before_cutting_leaves_an_index_of_what_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped (^C) while it goes through the kept windows, a build cutting a reel again with
    another window length has removed some of the old ones: index.json names what is left."""
    reels, out = tmp_path / "reels", tmp_path / "data"
    reels.mkdir()
    _video(reels / "R1.mp4")
    assert dataset.build_from_videos(reels, out, clip_s=1.0, workers=1)["written"] == 3
    existing, calls = dataset._existing, []

    def stops_at_the_third(*args, **kw):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return existing(*args, **kw)

    monkeypatch.setattr(dataset, "_existing", stops_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        dataset.build_from_videos(reels, out, clip_s=0.5, workers=1, verify=True)
    on_disk = sorted(p.name for p in out.glob("clip_*.npz"))
    assert on_disk == [calls[-1].name]                  # two removed, the third not reached
    assert [c["file"] for c in json.loads((out / "index.json").read_text())["clips"]] == on_disk


def test_another_folders_row_goes_when_it_is_the_same_reel(tmp_path: Path) -> None:
    """A reel's row from its folder (skipped: no audio stream 1) goes when a copy of the folder
    cuts the same reel into the dataset; another reel of that path would keep it."""
    a, out = tmp_path / "A", tmp_path / "data"
    a.mkdir()
    _video(a / "R1.mp4")
    skipped = dataset.build_from_videos(a, out, clip_s=1.0, workers=1, audio_stream=1)
    assert [r["reason"] for r in skipped["skipped"]] == ["no audio stream 1 (it has 1: 0–0)"]
    shutil.copytree(a, tmp_path / "A2")
    cut = dataset.build_from_videos(tmp_path / "A2", out, clip_s=1.0, workers=1)
    assert cut["written"] == 3, cut
    index = json.loads((out / "index.json").read_text())
    assert [r["name"] for r in index["skipped"]] == [f"{index['clips'][0]['name'][:-5]}_0003"]


def test_a_build_stopped_while_renaming_leaves_each_window_its_media(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A show's folder cut after one of its reels' folders, with --keep-media, stopped between
    writing a window under its new name and moving its proxy: whichever folder is cut next,
    every window keeps its proxy and no proxy is left without its window."""
    show, out = tmp_path / "S", tmp_path / "data"
    (show / "show1").mkdir(parents=True)
    _video(show / "show1" / "R1.mp4")
    assert dataset.build_from_videos(show / "show1", out, clip_s=1.0, workers=1,
                                     keep_media=True)["written"] == 3

    def paired() -> None:
        npz = sorted(p.stem for p in out.glob("clip_*.npz"))
        assert len(npz) == 3
        assert sorted(p.name.removesuffix("_proxy.mp4") for p in (out / "media").iterdir()) == npz

    class Killed(BaseException):
        """The process dies as it writes the first window under its new name, or moves the
        first proxy."""

    replace = os.replace

    def dies_at(what: str):
        def once(src, dst) -> None:
            if str(src if what == "_proxy.mp4" else dst).endswith(what):
                monkeypatch.setattr(os, "replace", replace)
                raise Killed(str(src))
            replace(src, dst)
        return once

    for folder in (show / "show1", show):       # stopped, then each folder cut next
        for what in (".npz", "_proxy.mp4"):
            monkeypatch.setattr(os, "replace", dies_at(what))
            with pytest.raises(Killed):
                dataset.build_from_videos(show, out, clip_s=1.0, workers=1, keep_media=True)
            monkeypatch.setattr(os, "replace", replace)
            done = dataset.build_from_videos(folder, out, clip_s=1.0, workers=1, keep_media=True)
            assert done["written"] == 0 and not done["failed"], done
            paired()
            assert {c.meta["root"] for c in dataset.iter_clips(out)} == {str(folder)}
            dataset.build_from_videos(show / "show1", out, clip_s=1.0, workers=1,
                                      keep_media=True)
            paired()


def test_a_cached_probe_holds_every_field_of_a_probe() -> None:
    """The probe cache checks each of MediaInfo's fields: one added to MediaInfo must be added
    to PROBE_FIELDS (and PROBE_VERSION raised), or no cached probe would ever be used."""
    from dataclasses import fields

    from tasks.media import MediaInfo

    assert dataset.PROBE_FIELDS.keys() == {f.name for f in fields(MediaInfo)} - {"path"}
