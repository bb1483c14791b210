"""End to end through the real `foley` CLI: rendered scenes → edit → delivery folder.

One reel with impacts and footsteps at known times, a still shot, a flying ball that makes no
sound, mixed source rates and a gap, cut at 01:00:00:00, in a folder whose name has spaces and
non-ASCII letters. The pass must put an onset in the delivered mix within one picture frame of
every true contact, none in the still or flying shots, and stamp the mix with the start
timecode. Reruns must add nothing; bad shots must be reported while the rest delivers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
import soundfile as sf

from flows.demo import make_demo_reel
from models.audio_env import detect_onsets
from tasks.bwf import read_bwf_info
from tasks.ingest import timecode

pytestmark = pytest.mark.slow
FRAME = 1 / 24
FOLEY = [str(Path(sys.executable).with_name("foley"))]


def foley(*args: str, home: Path, cwd: Path, ephemeral: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """`foley ARGS` with its own home, on the session's Prefect server, or (`ephemeral`) on
    the in-process server an installation without PREFECT_API_URL starts."""
    env = {**os.environ, "FOLEY_HOME": str(home)}
    if ephemeral:
        env.pop("PREFECT_API_URL", None)
    cmd = FOLEY if Path(FOLEY[0]).exists() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo reel rendered into a unicode folder, passed once through `foley run` as a
    fresh installation runs it (no Prefect server configured: the ephemeral one)."""
    root = tmp_path_factory.mktemp("e2e") / "Rolle 1 – Ünïcode"
    timeline = make_demo_reel(root / "edit", name="Reel 1")
    home, out = root / "home", root / "Lieferung 1"
    proc = foley("run", str(timeline), "--out", str(out), home=home, cwd=root, ephemeral=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    truth = json.loads((root / "edit" / "Reel 1_truth.json").read_text())
    return {"root": root, "timeline": timeline, "home": home, "out": out, "truth": truth,
            "manifest": json.loads((out / "manifest.json").read_text()), "stdout": proc.stdout}


def test_delivery_folder_is_complete(reel: dict) -> None:
    m, out = reel["manifest"], reel["out"]
    assert m["reel"] == "Reel 1" and m["timeline_start"] == "01:00:00:00" and m["samplerate"] == 48000
    for rel in [m["mix"], m["foa"], m["preview"], *m["timelines"].values()]:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    assert [s["status"] for s in m["shots"]] == ["delivered"] * len(reel["truth"]["shots"])
    for shot in m["shots"]:
        for kind, rel in shot["stems"].items():
            info = read_bwf_info(out / rel)
            assert info["bits"] == 24 and info["samplerate"] == 48000
            # iXML names each channel and carries the picture's rate beside the time stamp
            doc = ET.fromstring(info["ixml"])
            names = [t.findtext("NAME") for t in doc.iter("TRACK")]
            assert len(names) == info["channels"] == int(doc.findtext("TRACK_LIST/TRACK_COUNT"))
            assert names == {"51": ["L", "R", "C", "LFE", "Ls", "Rs"], "foa": ["W", "Y", "Z", "X"],
                             "stereo": ["L", "R"], "binaural": ["L ear", "R ear"],
                             "mono": ["Foley"]}[kind], (kind, names)
            assert doc.findtext("PROJECT") == "Reel 1" and doc.findtext("SCENE") == shot["name"]
            speed = doc.find("SPEED")
            assert (speed.findtext("TIMECODE_RATE"), speed.findtext("TIMECODE_FLAG")) == \
                ("24/1", "NDF")
            stamp = (int(speed.findtext("TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI")) << 32) + \
                int(speed.findtext("TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO"))
            assert stamp == info["time_reference"]
        assert (out / shot["envelope"]["uri"]).is_file()
        # `silent`: every stem digital silence (a still shot, or nothing to hear)
        assert shot["silent"] == all(not np.any(sf.read(out / rel)[0])
                                     for rel in shot["stems"].values()), shot["name"]
    assert {s["silent"] for s in m["shots"]} == {True, False}  # the demo has both
    foa = read_bwf_info(out / m["foa"])
    assert foa["channels"] == 4
    # each shot's approved events, with the record timecode of the frame they sound in
    for shot in m["shots"]:
        env = json.loads((out / shot["envelope"]["uri"]).read_text())
        assert [e["t"] for e in shot["events"]] == [e["t"] for e in env["events"]]
        for ev in shot["events"]:  # the demo: 24 fps, starting at 01:00:00:00
            frame = 86400 + round(shot["record_in_s"] * 24) + int(ev["t"] * 24)
            assert ev["record_tc"] == timecode(frame, 24, 1, False), (shot["name"], ev)
    assert [t.findtext("NAME") for t in ET.fromstring(foa["ixml"]).iter("TRACK")] == \
        ["W", "Y", "Z", "X"]


def test_stems_keep_their_dynamics(reel: dict) -> None:
    """The default pass sounds its shots at the level its envelopes ask for (linear RMS), not
    20–25 dB over it into the −1 dBFS limiter: every sounding stem peaks under −3 dBFS, and
    over −50 dBFS (heard)."""
    m, out = reel["manifest"], reel["out"]
    peaks = {}
    for shot in m["shots"]:
        audio, _ = sf.read(out / shot["stems"]["mono"], dtype="float64")
        if np.any(audio):
            peaks[shot["name"]] = round(20 * np.log10(np.abs(audio).max()), 1)
    assert peaks and all(-50 < p < -3 for p in peaks.values()), peaks


def test_mix_onsets_match_true_contacts(reel: dict) -> None:
    m, out, truth = reel["manifest"], reel["out"], reel["truth"]
    info = read_bwf_info(out / m["mix"])
    assert info["time_reference"] == 172_800_000  # 01:00:00:00 at 48 kHz, samples since midnight
    audio, sr = sf.read(out / m["mix"], dtype="float32")
    onsets = detect_onsets(audio.mean(axis=1), sr)
    errors, silent = [], []
    for shot, sh_m in zip(truth["shots"], m["shots"]):
        lo = shot["record_in_frame"] * FRAME
        hi = lo + shot["duration_frames"] * FRAME
        inside = onsets[(onsets >= lo) & (onsets < hi)]
        if not shot["events"]:
            silent.append((sh_m["name"], inside.round(3).tolist()))
            continue
        for ev in shot["events"]:
            errors.append((sh_m["name"], ev["t_record"], float(np.min(np.abs(inside - ev["t_record"])))
                           if len(inside) else 1.0))
    worst = max(errors, key=lambda e: e[2])
    assert all(e[2] <= FRAME for e in errors), f"contacts missed by more than a frame: {errors}"
    assert all(not ins for _, ins in silent), f"onsets in shots where nothing sounds: {silent}"
    print(f"{len(errors)} contacts, median error {np.median([e[2] for e in errors]) * 1000:.1f} ms, "
          f"worst {worst}")


def test_conformed_edit_has_foley_track(reel: dict) -> None:
    m, out = reel["manifest"], reel["out"]
    tl = otio.adapters.read_from_file(str(out / m["timelines"]["otio"]))
    audio = [t for t in tl.tracks if t.kind == otio.schema.TrackKind.Audio and t.name == "FOLEY"]
    assert len(audio) == 1
    clips = list(audio[0].find_clips())
    assert len(clips) == len(m["shots"])
    for clip, shot in zip(clips, m["shots"]):
        assert clip.media_reference.target_url.endswith(shot["stems"]["stereo"])
        rin = clip.range_in_parent().start_time.to_seconds()
        assert rin == pytest.approx(shot["record_in_s"], abs=1e-6)


def test_the_delivered_edits_find_their_picture(reel: dict) -> None:
    """The edit names its media relative to its own folder (media/…), which is not the
    delivery folder: each delivered timeline points its picture clips at the files ingest
    found, so an assistant opening it sees no offline picture, and it reads back whole."""
    from tasks.ingest import read_timeline
    from tasks.ingest_media import url_to_path

    media = reel["timeline"].parent / "media"
    for kind in ("otio", "fcp_xml", "aaf"):
        path = reel["out"] / reel["manifest"]["timelines"][kind]
        tl = otio.adapters.read_from_file(str(path))
        picture = [c.media_reference.target_url for t in tl.tracks
                   if t.kind == otio.schema.TrackKind.Video for c in t.find_clips()]
        assert len(picture) == 5, (kind, picture)
        for url in picture:
            assert Path(url_to_path(url)).parent == media and Path(url_to_path(url)).exists(), \
                (kind, url)
        _, spec = read_timeline(path)
        assert [(s.name, s.skipped_reason) for s in spec.shots] == [
            (s["name"], None) for s in reel["manifest"]["shots"]], kind


def test_spatial_delivery_stems_mixes_and_tracks(reel: dict) -> None:
    """5.1 (6 ch, mask 0x3F) and binaural stems and mixes, one FOLEY track per format, and the
    delivered FOA passes `foley eval spatial` (DOA, W vs mono, ITD sign, stereo order)."""
    m, out = reel["manifest"], reel["out"]
    assert m["foa_format"] == "ambix" and m["spatial"]["hfov_deg"] == 60.0
    for key, channels, mask in (("surround_51", 6, 0x3F), ("binaural", 2, None), ("foa", 4, 0)):
        info = read_bwf_info(out / m[key])
        assert (info["channels"], info["channel_mask"]) == (channels, mask), key
        assert info["time_reference"] == 172_800_000
    for shot in m["shots"]:
        assert set(shot["stems"]) == {"mono", "stereo", "foa", "51", "binaural"}
        assert json.loads((out / shot["position"]).read_text())["camera"]["hfov_deg"] == 60.0
    tl = otio.adapters.read_from_file(str(out / m["timelines"]["otio"]))
    tracks = {t.name: list(t.find_clips()) for t in tl.tracks if t.kind == otio.schema.TrackKind.Audio}
    for name, kind, channels in (("FOLEY 5.1", "51", 6), ("FOLEY BINAURAL", "binaural", 2),
                                 ("FOLEY FOA", "foa", 4)):
        assert [c.metadata["foleyflow"]["channels"] for c in tracks[name]] == [channels] * len(m["shots"])
        assert [c.media_reference.target_url for c in tracks[name]] == [
            s["stems"][kind] for s in m["shots"]]
    proc = foley("eval", "spatial", str(out), "--json", home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)["summary"]
    assert summary["doa_static_deg"]["n"] > 0 and summary["doa_static_ok"], summary
    assert summary["w_vs_mono_ok"], summary
    right, lateral = (int(v) for v in summary["itd_sign_ok"].split("/"))
    assert right == lateral > 0, summary
    right, sided = (int(v) for v in summary["stereo_order_ok"].split("/"))
    assert right == sided > 0, summary


def test_rerun_reuses_everything(reel: dict) -> None:
    db = reel["home"] / "foley.db"

    def counts() -> dict[str, int]:
        with sqlite3.connect(db) as c:
            return {t: c.execute(f"select count(*) from {t}").fetchone()[0]
                    for t in ("artifacts", "activities", "envelopes", "decisions", "shots", "reels")}

    before = counts()
    objects = sorted(p.name for p in (reel["home"] / "store").rglob("*") if p.is_file())
    mix = (reel["out"] / reel["manifest"]["mix"]).read_bytes()
    proc = foley("run", str(reel["timeline"]), "--out", str(reel["out"]), home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stderr
    assert counts() == before
    assert sorted(p.name for p in (reel["home"] / "store").rglob("*") if p.is_file()) == objects
    assert (reel["out"] / reel["manifest"]["mix"]).read_bytes() == mix


def test_a_wider_lens_and_fuma_re_render_only_the_spatial_stages(reel: dict) -> None:
    """--hfov and --foa-format are part of the spatial stage's key: the pass re-renders
    spatial and conform (nothing upstream) and the FuMa FOA still points where intended."""
    db = reel["home"] / "foley.db"
    out2 = reel["root"] / "Lieferung 2"

    def runs() -> dict[str, int]:
        with sqlite3.connect(db) as c:
            return dict(c.execute("select task, count(*) from activities group by task").fetchall())

    before = runs()
    proc = foley("run", str(reel["timeline"]), "--out", str(out2), "--hfov", "90",
                 "--foa-format", "fuma", home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stderr
    after = runs()
    changed = {t for t in after if after[t] != before.get(t)}
    assert changed == {"spatial", "conform", "manifest"}, (before, after)
    m = json.loads((out2 / "manifest.json").read_text())
    assert m["foa_format"] == "fuma" and m["spatial"]["hfov_deg"] == 90.0
    assert "FuMa" in read_bwf_info(out2 / m["foa"])["description"]
    proc = foley("eval", "spatial", str(out2), "--json", home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = json.loads(proc.stdout)["events"]
    first = json.loads((reel["out"] / reel["manifest"]["shots"][0]["position"]).read_text())
    wide = json.loads((out2 / m["shots"][0]["position"]).read_text())
    assert abs(wide["events"][0]["azimuth_deg"]) > abs(first["events"][0]["azimuth_deg"])
    assert all(e["error_deg"] < 2.0 for e in events if e["static"])


def test_provenance_reaches_edit_and_media(reel: dict) -> None:
    m, out = reel["manifest"], reel["out"]
    stem = out / m["shots"][0]["stems"]["stereo"]
    proc = foley("provenance", str(stem), "--json", home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stderr
    tree = json.loads(proc.stdout)
    tasks, uris = [], []

    def walk(n: dict) -> None:
        uris.append(n["artifact"]["uri"])
        if n["activity"]:
            tasks.append(n["activity"]["task"])
        for c in n["inputs"]:
            walk(c)

    walk(tree)
    assert {"conform", "spatial", "synth", "envelope-version", "envelope-predict", "features",
            "proxy"} <= set(tasks)
    assert any(u.endswith("bounce_24.mp4") for u in uris), "chain must end at the source media"
    assert any(u.endswith(".otio") for u in uris), "chain must reach the edit"


def test_a_reel_mix_traces_to_its_own_kind_and_prints_each_chain_once(reel: dict) -> None:
    """The stereo reel mix is made of the shots' stereo stems, not their 5.1 or envelopes'
    plots; and the shots' shared links (one envelope feeds the synth and the spatial stage)
    are printed once, then referred to, with times people read."""
    m, out = reel["manifest"], reel["out"]
    proc = foley("provenance", str(out / m["mix"]), "--json", home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stderr
    tree = json.loads(proc.stdout)
    assert tree["activity"]["task"] == "conform"
    delivered = [s["name"] for s in m["shots"] if s["status"] == "delivered"]
    assert sorted(c["role"] for c in tree["inputs"]) == sorted(
        [f"{name}/stereo" for name in delivered] + ["timeline"])
    proc = foley("provenance", str(out / m["mix"]), home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # (content, the run that made it): two silent shots' stems are one file made by two runs
    made = [(re.search(r"sha256:\w+", ln)[0], re.search(r"#\d+", nxt)[0])
            for ln, nxt in zip(lines, lines[1:]) if nxt.lstrip().startswith("←")]
    assert made and len(made) == len(set(made)), "an artifact's chain printed twice"
    assert any("see envelope above" in ln for ln in lines)
    whens = [ln for ln in lines if ln.lstrip().startswith("←")]
    assert all(re.search(r" at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, code ", ln) for ln in whens)
    assert len(lines) < 40 * len(delivered), len(lines)


def test_a_shots_stem_traces_to_its_own_picture(reel: dict, tmp_path: Path) -> None:
    """Each delivered stem's chain reaches its own shot's media and no other's — SH030 and
    SH050 are both silent, so their synthesized stems are one stored file, which the chain
    used to follow to SH030's picture, and a shot's stem listed every shot's. A delivered file
    changed since is named as such (exit 2)."""
    m, out = reel["manifest"], reel["out"]

    def media(path: Path) -> set[str]:
        proc = foley("provenance", str(path), "--json", home=reel["home"], cwd=reel["root"])
        assert proc.returncode == 0, proc.stderr
        found: set[str] = set()

        def walk(n: dict) -> None:
            if n["artifact"]["uri"].endswith(".mp4") and "/store/" not in n["artifact"]["uri"]:
                found.add(n["artifact"]["uri"].rsplit("/", 1)[-1])
            for c in n["inputs"]:
                walk(c)

        walk(json.loads(proc.stdout))
        return found

    for sh in m["shots"]:
        if sh["status"] == "delivered":
            assert media(out / sh["stems"]["mono"]) == {f"{sh['clip']}.mp4"}, sh["name"]
    copy = tmp_path / "delivery"
    stem = m["shots"][0]["stems"]["stereo"]
    (copy / stem).parent.mkdir(parents=True)
    shutil.copy(out / "manifest.json", copy / "manifest.json")
    (copy / stem).write_bytes((out / stem).read_bytes() + b"\0")
    proc = foley("provenance", str(copy / stem), home=reel["home"], cwd=reel["root"])
    assert proc.returncode == 2, proc.stderr
    assert f"{copy / stem} was changed after it was delivered" in proc.stderr


def test_bad_timeline_is_rejected_and_nothing_written(tmp_path: Path) -> None:
    bad = tmp_path / "broken edit.otio"
    bad.write_text('{"OTIO_SCHEMA": "Timeline.1", "tracks": ')
    proc = foley("run", str(bad), "--out", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2
    assert "broken edit.otio" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


@pytest.mark.parametrize("args, says", [
    (["--approve-threshold", "1.5"], "--approve-threshold must lie between 0 and 1, not 1.5"),
    (["--approve-threshold", "-0.1"], "--approve-threshold must lie between 0 and 1"),
    (["--approve", "queue", "--approve-threshold", "0.8"],
     "--approve-threshold 0.8 is the threshold of --approve auto; with --approve queue no "
     "envelope is approved automatically"),
    (["--envelope", "model", "--envelope-checkpoint", "WIDER"],
     "wider.safetensors takes 773 inputs per step, but this foleyflow builds 765"),
])
def test_bad_approval_and_checkpoint_options_are_one_clear_error(
        tmp_path: Path, args: list[str], says: str) -> None:
    """A threshold outside [0, 1], a threshold where nothing is approved automatically, a
    checkpoint built for another input layout: one message, exit 2, nothing written."""
    from models import rms_mapper
    from models.v2a_inputs import CONTACT_DIM, INPUT_DIM

    edit = tmp_path / "edit.otio"
    otio.adapters.write_to_file(otio.schema.Timeline(name="reel"), str(edit))
    if "WIDER" in args:
        config = rms_mapper.get_config("tiny", in_dim=INPUT_DIM + CONTACT_DIM + 8)
        rms_mapper.save_checkpoint(rms_mapper.build(config), config,
                                   tmp_path / "wider.safetensors", {})
        args = [str(tmp_path / "wider.safetensors") if a == "WIDER" else a for a in args]
    proc = foley("run", str(edit), "--out", str(tmp_path / "out"), *args,
                 home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2 and says in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


def test_bad_shots_are_reported_and_the_rest_delivers(reel: dict, tmp_path: Path) -> None:
    """Missing media, a truncated file and a range beyond the media: exit 1, reasons listed."""
    edit = tmp_path / "edit"
    shutil.copytree(reel["timeline"].parent, edit)
    tl = otio.adapters.read_from_file(str(edit / reel["timeline"].name))
    clips = list(tl.find_clips())
    clips[1].media_reference.target_url = "media/does_not_exist.mp4"
    data = (edit / "media" / "still_25.mp4").read_bytes()
    (edit / "media" / "still_25.mp4").write_bytes(data[: len(data) // 3])  # truncated
    r = clips[3].source_range
    clips[3].source_range = otio.opentime.TimeRange(
        otio.opentime.RationalTime(r.start_time.value + 10 * r.start_time.rate, r.start_time.rate), r.duration)
    otio.adapters.write_to_file(tl, str(edit / "bad.otio"))
    out = tmp_path / "out"
    proc = foley("run", str(edit / "bad.otio"), "--out", str(out), home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    status = {s["name"]: (s["status"], s["skipped_reason"]) for s in m["shots"]}
    bad = {name for name, (st, _) in status.items() if st != "delivered"}
    assert bad == {m["shots"][i]["name"] for i in (1, 2, 3)}, status
    assert "does_not_exist.mp4" in status[m["shots"][1]["name"]][1]
    for name in bad:
        assert name in proc.stdout and status[name][1]
    assert (out / m["mix"]).is_file()


@pytest.mark.parametrize("ext", [".edl", ".xml", ".aaf"])
def test_other_formats_give_the_same_shots(reel: dict, tmp_path: Path, ext: str) -> None:
    """The e2e edit written as EDL / FCP7 XML / AAF ingests to the same shots."""
    from tasks.ingest import read_timeline
    from tasks.timeline_io import write_timeline

    tl, ref = read_timeline(reel["timeline"])
    path = tmp_path / f"Reel 1{ext}"
    write_timeline(tl, path)
    _, spec = read_timeline(path, fps=24 if ext == ".edl" else None,
                            media_root=reel["timeline"].parent / "media")
    assert spec.start_timecode == ref.start_timecode
    got = [(s.name, s.record_in_frame, s.duration_frames, Path(s.source_path or "").name) for s in spec.shots]
    want = [(s.name, s.record_in_frame, s.duration_frames, Path(s.source_path or "").name) for s in ref.shots]
    assert got == want
    for a, b in zip(spec.shots, ref.shots):
        assert a.source_in_s == pytest.approx(b.source_in_s, abs=0.5 / b.source_rate)


def test_pass_from_aaf_delivers_the_same_reel(reel: dict, tmp_path: Path) -> None:
    from tasks.ingest import read_timeline
    from tasks.timeline_io import write_timeline

    tl, _ = read_timeline(reel["timeline"])
    aaf = tmp_path / "Reel 1.aaf"
    write_timeline(tl, aaf)
    out = tmp_path / "out"
    proc = foley("run", str(aaf), "--out", str(out), "--media-root", str(reel["timeline"].parent / "media"),
                 home=reel["home"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    strip = lambda shots: [(s["name"], s["record_in"], s["status"], s["stems"] and True) for s in shots]  # noqa: E731
    assert strip(m["shots"]) == strip(reel["manifest"]["shots"])
    assert m["timeline_start"] == reel["manifest"]["timeline_start"]

