"""tasks.ingest at the edges: rates the edit does not carry, retimed clips, sound-only media,
FCP7 markers on camera-timecode media, ranges OTIO cannot place, timecode past midnight.

Real media (`models.scenes` barcoded renders, ffmpeg) and real edits (OTIO's adapters, EDLs
as editors write them); the proxy is cut exactly as `tasks.prepare.make_proxy` cuts it."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
import soundfile as sf
from typer.testing import CliRunner

from models.scenes import SceneSpec, read_barcode, render_scene
from tasks import media
from tasks.ingest import ShotSpec, TimelineError, read_timeline, timecode
from tasks.prepare import file_time
from tasks.timeline_io import write_timeline
from tests.fixtures_otio import RT, TR, edit, make_mp4, media_clip, save, touch, video_track

NTSC = 30000 / 1001


def _edl(path: Path, title: str, events: list[tuple[str, str, str, str, str]],
         extra: dict[int, str] | None = None) -> Path:
    """A CMX 3600 EDL: events of (reel, src in, src out, rec in, rec out), picture cuts."""
    lines = [f"TITLE: {title}", "FCM: NON-DROP FRAME", ""]
    for i, (reel, si, so, ri, ro) in enumerate(events, 1):
        lines.append(f"{i:03d}  {reel:<8} V     C        {si} {so} {ri} {ro}")
        lines.extend((extra or {}).get(i, "").splitlines())
        lines.append(f"* FROM CLIP NAME:  {reel}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. the picture's own rate, whatever rate the edit's clip ranges carry ----------------------

@pytest.fixture(scope="module")
def ntsc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 29.97 fps picture whose every frame carries its index as a barcode."""
    path = tmp_path_factory.mktemp("cut") / "A001C003.mp4"
    render_scene(SceneSpec(kind="static", fps=NTSC, duration_s=3.0, size=(320, 180),
                           barcode=True), path)
    return path


def _proxy_frames(shot: ShotSpec, out: Path) -> list[int]:
    """Cut the shot's proxy as the proxy stage does and read back which source frames it holds."""
    info = media.probe(shot.source_path, scan_packets=False)
    start = file_time(info, shot.source_in_s, shot.duration_s)
    media.make_proxy(shot.source_path, start, shot.duration_s, shot.source_rate, out, width=160)
    return [read_barcode(f) for f in media.iter_frames(out)]


def test_edl_and_aaf_shots_run_at_the_media_rate(ntsc_clip: Path, tmp_path: Path) -> None:
    """A 29.97 clip in a 24 fps OTIO (which carries the media's rate), in EDLs at 24 and 59.94
    and in an AAF (whose ranges carry the edit's rate): one source rate, one proxy of the same
    60 source frames, each once — no frame dropped (24) nor doubled (59.94)."""
    folder = ntsc_clip.parent
    clip = media_clip("A001C003", ntsc_clip, 15, 60, NTSC, media_duration=90)  # 0.5 s in, 2 s
    otio_path = save(edit("r1", [video_track([clip])], 24, 86400), folder / "r1.otio")
    edl24 = _edl(folder / "r1_24.edl", "r1", [
        ("A001C003", "00:00:00:12", "00:00:02:12", "01:00:00:00", "01:00:02:00")])
    edl5994 = _edl(folder / "r1_5994.edl", "r1", [
        ("A001C003", "00:00:00:30", "00:00:02:30", "01:00:00:00", "01:00:02:00")])
    tl, _ = read_timeline(otio_path)
    aaf = folder / "r1.aaf"
    write_timeline(tl, aaf)

    reads = {"otio": read_timeline(otio_path)[1], "edl 24": read_timeline(edl24, fps=24)[1],
             "edl 59.94": read_timeline(edl5994, fps=59.94)[1], "aaf": read_timeline(aaf)[1]}
    for label, reel in reads.items():
        (shot,) = reel.shots
        assert shot.skipped_reason is None, (label, shot.skipped_reason)
        assert shot.source_path == str(ntsc_clip), label
        assert shot.source_rate == pytest.approx(NTSC), (label, shot.source_rate)
        assert shot.source_in_s == pytest.approx(0.5, abs=0.5 / NTSC), label  # the edit's in
        assert shot.duration_s == pytest.approx(2.0, abs=0.01), label
        got = _proxy_frames(shot, tmp_path / f"{label.replace(' ', '_')}.mp4")
        assert got == list(range(15, 75)), (label, got)


# --- 2. speed changes, freeze frames, reverse: reported, never analysed at 100 % -------------

def test_retimed_clips_are_skipped_with_the_reason_and_the_rest_stay_put(tmp_path: Path) -> None:
    touch(tmp_path, "A.mov", "B.mov", "C.mov", "D.mov", "E.mov", "F.mov")

    def clip(name: str, *effects: otio.schema.Effect, frames: int = 24) -> otio.schema.Clip:
        c = media_clip(name, tmp_path / f"{name}.mov", 48, frames, 24, media_duration=480)
        c.effects.extend(effects)
        return c

    track = video_track([
        clip("A"),
        clip("B", otio.schema.LinearTimeWarp(time_scalar=2.0)),
        clip("C", otio.schema.FreezeFrame()),
        clip("D", otio.schema.LinearTimeWarp(time_scalar=-1.0)),
        clip("E", otio.schema.LinearTimeWarp(time_scalar=1.001)),  # 0.02 frame over the shot
        clip("F"),
    ])
    save(edit("speed", [track], 24, 86400), tmp_path / "speed.otio")
    _, reel = read_timeline(tmp_path / "speed.otio")
    assert [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        (n, 24 * i, 24) for i, n in enumerate("ABCDEF")]
    why = [s.skipped_reason for s in reel.shots]
    assert why[0] is None and why[4] is None and why[5] is None
    assert why[1].startswith("speed change 200 % (LinearTimeWarp on clip 'B') — ")
    assert "100 %" in why[1]
    assert why[2].startswith("freeze frame (FreezeFrame on clip 'C') — ")
    assert why[3].startswith("reverse clip (-100 %, LinearTimeWarp on clip 'D') — ")
    assert all("re-export" in w or "by hand" in w for w in why[1:4])


def test_edl_m2_speed_lines_are_skipped_with_the_reason(tmp_path: Path) -> None:
    touch(tmp_path / "media", "BOUNCE.mov", "PASS.mov")
    edl = _edl(tmp_path / "fx.edl", "fx", [
        ("BOUNCE", "00:00:01:00", "00:00:02:00", "01:00:00:00", "01:00:02:00"),
        ("BOUNCE", "00:00:01:00", "00:00:01:01", "01:00:02:00", "01:00:03:00"),
        ("PASS", "00:00:00:06", "00:00:01:06", "01:00:03:00", "01:00:04:00"),
    ], extra={1: "M2   BOUNCE       012.0                00:00:01:00",
              2: "M2   BOUNCE       000.0                00:00:01:00"})
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path / "media")
    assert [(s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        (0, 48), (48, 24), (72, 24)]
    assert reel.shots[0].skipped_reason.startswith("speed change 50 % (M2) — foleyflow "
                                                   "analyses clips at 100 %")
    assert reel.shots[1].skipped_reason.startswith("freeze frame (M2) — ")
    assert reel.shots[2].skipped_reason is None


# --- 3. sound-only media ----------------------------------------------------------------------

def _wav(path: Path, seconds: float = 5.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.linspace(0, 2000, int(48000 * seconds))), 48000)
    return path


def test_dual_system_picture_clips_take_the_movie(tmp_path: Path) -> None:
    root = tmp_path / "shoot"
    movie = make_mp4(root / "video" / "A001C003.mp4", 4)
    _wav(root / "audio" / "A001C003.wav")  # walked first: audio/ sorts before video/
    _wav(tmp_path / "B002C001.wav")  # beside the edit; the movie is under the media root
    movie_b = make_mp4(root / "video" / "B002C001.mp4", 4)
    edl = _edl(tmp_path / "dual.edl", "dual", [
        ("A001C003", "00:00:00:12", "00:00:02:12", "01:00:00:00", "01:00:02:00"),
        ("B002C001", "00:00:00:12", "00:00:01:12", "01:00:02:00", "01:00:03:00")])
    _, reel = read_timeline(edl, fps=24, media_root=root)
    assert [s.source_path for s in reel.shots] == [str(movie), str(movie_b)]
    assert all(s.skipped_reason is None and s.source_rate == 24 for s in reel.shots)


def test_sound_only_media_is_a_skipped_shot_not_a_crash(tmp_path: Path) -> None:
    wav = _wav(tmp_path / "media" / "AUDONLY.wav")
    make_mp4(tmp_path / "media" / "BOUNCE.mp4", 4)
    edl = _edl(tmp_path / "mix.edl", "mix", [
        ("BOUNCE", "00:00:00:12", "00:00:01:12", "01:00:00:00", "01:00:01:00"),
        ("AUDONLY", "00:00:00:00", "00:00:01:00", "01:00:01:00", "01:00:02:00")])
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path / "media")
    assert reel.shots[0].skipped_reason is None
    assert reel.shots[1].source_path == str(wav)
    assert reel.shots[1].skipped_reason.startswith(f"no video stream in {wav} (sound only) — ")
    # and the proxy stage, should such a shot reach it, says the same instead of dividing by 0
    with pytest.raises(media.MediaError, match=re.escape(f"no video stream in {wav}")):
        file_time(media.probe(wav, scan_packets=False), 0.0, 1.0)


# --- 4. FCP7 XML markers on media with camera timecode ----------------------------------------

def test_fcp7_clip_marker_on_camera_timecode_media_keeps_its_hint(tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "media" / "A001.mp4", 4)
    cam = media_clip("A001", movie, 12, 48, 24, media_start=86400, media_duration=96,
                     markers=[("FOLEY: door slam", 24)])
    plain = media_clip("B002", movie, 0, 24, 24, media_duration=96,
                       markers=[("FOLEY: glass set down", 6)])
    tl = edit("x7", [video_track([cam, plain])], 24, 86400)
    xml = tmp_path / "x7.xml"
    otio.adapters.write_to_file(tl, str(xml), adapter_name="fcp_xml")
    # Final Cut Pro 7 counts a clip marker from the media's first frame, not in its timecode
    text = xml.read_text()
    assert text.count("<in>86424</in>") == 1
    xml.write_text(text.replace("<in>86424</in>", "<in>24</in>")
                   .replace("<out>86424</out>", "<out>24</out>"))
    _, reel = read_timeline(xml)
    assert [(s.clip_name, s.foley_hint) for s in reel.shots] == [
        ("A001", "door slam"), ("B002", "glass set down")]
    assert reel.shots[0].source_in_s == pytest.approx(0.5)


# --- 5, 6. ranges OTIO cannot place: one clear error, exit 2, nothing written ---------------

def _broken(kind: str) -> otio.schema.Clip:
    if kind == "rate 0":
        rng = TR(RT(5, 0), RT(50, 0))
    elif kind == "nan":
        rng = TR(RT(float("nan"), 24), RT(24, 24))
    else:
        rng = TR(RT(15, NTSC), RT(-30, NTSC))
    return otio.schema.Clip(name="BROKEN", source_range=rng,
                            media_reference=otio.schema.MissingReference())


@pytest.mark.parametrize("kind, expected", [
    ("rate 0", r"frame rate 0 in its range .* — re-export the edit"),
    ("nan", r"a range that is not a number .* — re-export the edit"),
    ("negative", r"a negative duration \(-30 frames at 29.97 fps.* — fix its in and out points"),
])
def test_unplaceable_clip_range_refuses_the_edit_naming_the_clip(tmp_path: Path, kind: str,
                                                                 expected: str) -> None:
    track = video_track([media_clip("A", None, 0, 48, 24), _broken(kind),
                         media_clip("B", None, 0, 48, 24)])
    path = save(edit("bad", [track], 24, 86400), tmp_path / "bad.otio")
    with pytest.raises(TimelineError) as err:
        read_timeline(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: clip 'BROKEN' (track 'V1', item 2, record 01:00:02:00) has ")
    assert re.search(expected, msg), msg

    from flows.cli import app  # the command refuses it on one line, exit 2, writing nothing

    out = tmp_path / "delivery"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.output.strip().splitlines() == [f"error: {msg}"]
    assert not out.exists()


# --- 7. timecode past midnight ----------------------------------------------------------------

@pytest.mark.parametrize("frames, num, den, drop, expected", [
    (24 * 86400 + 24, 24, 1, False, "00:00:01:00"),
    (25 * 86400 * 2 + 25 * 3600, 25, 1, False, "01:00:00:00"),
    (2589408 + 1800, 30000, 1001, True, "00:01:00;02"),  # a day of 29.97 DF is 2 589 408
    (30 * 86400 + 30, 30000, 1001, False, "00:00:01:00"),
])
def test_timecode_wraps_at_24_hours(frames: int, num: int, den: int, drop: bool,
                                    expected: str) -> None:
    assert timecode(frames, num, den, drop) == expected
    assert timecode(24 * 86400 - 1, 24, 1, False) == "23:59:59:23"  # the last frame of a day


def test_edl_running_past_midnight_reads_as_smpte(tmp_path: Path) -> None:
    touch(tmp_path, "BOUNCE.mov", "PASS.mov")
    edl = _edl(tmp_path / "late.edl", "late", [
        ("BOUNCE", "00:00:00:12", "00:00:02:12", "23:59:59:00", "24:00:01:00"),
        ("PASS", "00:00:00:06", "00:00:01:06", "24:00:01:00", "24:00:02:00")])
    _, reel = read_timeline(edl, fps=24)
    assert [timecode(reel.start_frame + s.record_in_frame, 24, 1, False)
            for s in reel.shots] == ["23:59:59:00", "00:00:01:00"]


@pytest.mark.parametrize("default", ["Timeline 1", "Sequence 01", "Untitled Sequence.01",
                                     "untitled", "Project 2"])
def test_a_default_sequence_name_gives_way_to_the_files(tmp_path: Path, default: str) -> None:
    """Editing systems name every new sequence "Timeline 1": two shows' reels sent as
    showA_reel1.otio and showB_reel1.otio must not become one reel in the database."""
    from tasks.ingest import reel_name

    tl = otio.schema.Timeline(name=default)
    assert reel_name(tl, tmp_path / "showA_reel1.otio") == "showA_reel1"
    assert reel_name(otio.schema.Timeline(name="R1 Timeline 3 LOCK"),
                     tmp_path / "x.otio") == "R1 Timeline 3 LOCK"  # a name someone gave it
