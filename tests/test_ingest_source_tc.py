"""Where an EDL shot starts in its media file: the source timecode against the file's own.

An EDL gives each event's source in on the source *timecode* clock; a camera file begins at
its embedded timecode. The media are barcoded (every frame carries its index), so each test
reads back which frames of the file the proxy stage would analyse.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from models.scenes import SceneSpec, read_barcode, render_scene
from tasks import media
from tasks.ingest import ShotSpec, read_timeline
from tasks.prepare import file_time


def _media(folder: Path, name: str, seconds: float, tc: str | None) -> Path:
    """A barcoded 24 fps file of `seconds`, with an embedded start timecode if `tc`."""
    plain = folder / f".{name}.mp4"
    render_scene(SceneSpec(kind="static", fps=24, duration_s=seconds, size=(160, 90),
                           barcode=True), plain)
    out = folder / name
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(plain), "-c", "copy"]
    subprocess.run(cmd + (["-timecode", tc] if tc else []) + [str(out)], check=True)
    plain.unlink()
    return out


def _first_frames(shot: ShotSpec, tmp_path: Path) -> list[int]:
    """The file frames the proxy stage decodes for the shot."""
    assert shot.source_path is not None
    info = media.probe(shot.source_path, scan_packets=False)
    start = file_time(info, shot.source_in_s, shot.duration_s)
    out = tmp_path / f"{shot.name}.mp4"
    media.make_proxy(shot.source_path, start, shot.duration_s, shot.source_rate, out, width=160)
    return [read_barcode(f) for f in media.iter_frames(out)]


def _edl(tmp_path: Path, events: str) -> Path:
    path = tmp_path / "reel.edl"
    path.write_text(f"TITLE: REEL\nFCM: NON-DROP FRAME\n\n{events}")
    return path


def test_a_small_camera_timecode_is_subtracted_even_when_the_raw_one_fits(tmp_path: Path) -> None:
    """A 10 s file starting at 00:00:02:00: source 00:00:05:00 is 3 s into it (frame 72), not
    5 s (frame 120) — the raw time fitted the file too, and used to be taken."""
    _media(tmp_path, "SMALLTC.mov", 10, "00:00:02:00")
    _media(tmp_path, "NOTC.mov", 10, None)
    edl = _edl(tmp_path, (
        "001  SMALLTC  V     C        00:00:05:00 00:00:06:00 01:00:00:00 01:00:01:00\n"
        "* FROM CLIP NAME:  SMALLTC\n"
        "002  NOTC     V     C        00:00:05:00 00:00:06:00 01:00:01:00 01:00:02:00\n"
        "* FROM CLIP NAME:  NOTC\n"))
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path)
    small, plain = reel.shots
    assert small.skipped_reason is None and small.source_in_s == pytest.approx(3.0)
    assert _first_frames(small, tmp_path)[:2] == [72, 73]
    # a file with no timecode of its own: the source timecode is its time
    assert plain.skipped_reason is None and plain.source_in_s == pytest.approx(5.0)
    assert _first_frames(plain, tmp_path)[0] == 120


def test_a_range_outside_camera_media_is_skipped_in_timecode(tmp_path: Path) -> None:
    """Past the end of a camera file, or before its start: the shot is skipped at ingest (the
    rest of the reel goes on), and the reason is in timecode, not in seconds of the file."""
    _media(tmp_path, "CAM.mov", 4, "10:00:00:00")
    edl = _edl(tmp_path, (
        "001  CAM      V     C        10:00:03:00 10:00:05:00 01:00:00:00 01:00:02:00\n"
        "* FROM CLIP NAME:  CAM\n"
        "002  CAM      V     C        09:59:59:00 10:00:01:00 01:00:02:00 01:00:04:00\n"
        "* FROM CLIP NAME:  CAM\n"
        "003  CAM      V     C        10:00:01:00 10:00:02:00 01:00:04:00 01:00:05:00\n"
        "* FROM CLIP NAME:  CAM\n"))
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path)
    late, early, inside = reel.shots
    assert late.skipped_reason is not None and late.skipped_reason.startswith(
        "source range 10:00:03:00–10:00:05:00 lies outside media CAM.mov "
        "(10:00:00:00–10:00:04:00, duration 4.00 s)"), late.skipped_reason
    assert early.skipped_reason is not None and early.skipped_reason.startswith(
        "source range 09:59:59:00–10:00:01:00 lies outside media CAM.mov"), early.skipped_reason
    assert inside.skipped_reason is None and _first_frames(inside, tmp_path)[0] == 24


def test_a_shot_after_an_odd_length_dissolve_starts_on_its_own_frame(tmp_path: Path) -> None:
    """An 11-frame dissolve cuts at its midpoint, 5.5 frames in: the shot starts on the record
    frame that rounds to, and its source follows — frame 126 of TB, not 125 (one frame early
    for every event in it)."""
    _media(tmp_path, "TA.mov", 10, None)
    _media(tmp_path, "TB.mov", 10, None)
    edl = _edl(tmp_path, (
        "001  TA       V     C        00:00:01:00 00:00:03:00 01:00:00:00 01:00:02:00\n"
        "* FROM CLIP NAME:  TA\n"
        "002  TA       V     C        00:00:03:00 00:00:03:00 01:00:02:00 01:00:02:00\n"
        "002  TB       V     D    011 00:00:05:00 00:00:07:00 01:00:02:00 01:00:04:00\n"
        "* FROM CLIP NAME:  TA\n"
        "* TO CLIP NAME:  TB\n"))
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path)
    before, after = reel.shots
    assert after.record_in_frame == before.record_in_frame + before.duration_frames == 54
    assert after.source_in_s == pytest.approx(126 / 24)
    frames = _first_frames(after, tmp_path)
    assert frames[0] == 126 and len(frames) == after.duration_frames == 42
