"""tasks.ingest_formats: CMX 3600 reverse clips, the EDL's drop flag, OTIO starts in seconds.

Real EDLs as editing systems write them and real OTIO files written with OTIO, read by
`read_timeline`; media are placeholders (what is checked is the reading of the edit)."""
from __future__ import annotations

from pathlib import Path

import opentimelineio as otio
import pytest

from tasks.ingest import ReelSpec, TimelineError, read_timeline, timecode
from tests.fixtures_otio import RT, edit, gap, media_clip, save, touch, video_track

NTSC_23976 = 24000 / 1001


def _edl(path: Path, body: str, fcm: str = "FCM: NON-DROP FRAME") -> Path:
    path.write_text(f"TITLE: REVERSE\n{fcm}\n\n{body}")
    return path


def _tc(reel: ReelSpec, frame: int) -> str:
    return timecode(reel.start_frame + frame, reel.rate_num, reel.rate_den, reel.drop_frame)


def _warps(tl: otio.schema.Timeline) -> list[float | None]:
    """Each clip's LinearTimeWarp scalar (None: plays at 100 %)."""
    return [next((fx.time_scalar for fx in c.effects
                  if isinstance(fx, otio.schema.LinearTimeWarp)), None)
            for c in tl.find_clips()]


# --- 6. reverse (M2) with source and record durations that match ------------------------------

NEXT = """002  PASS     V     C        00:00:04:00 00:00:05:00 01:00:01:00 01:00:02:00
* FROM CLIP NAME:  PASS
"""


@pytest.mark.parametrize("fps, fcm, event, speed, scalar", [
    # Avid's reverse: source in before out, both sides 24 frames, M2 at -24 fps
    (24, "FCM: NON-DROP FRAME",
     "001  REV      V     C        00:00:01:00 00:00:02:00 01:00:00:00 01:00:01:00",
     "-024.0", -1.0),
    # drop-frame, the source out on a minute's first frame (00:00:59;29 + 1 = 00:01:00;02)
    (29.97, "FCM: DROP FRAME",
     "001  REV      V     C        00:00:58;29 00:00:59;29 01:00:00;00 01:00:01;00",
     "-029.9", -29.9 / (30000 / 1001)),
    # a speed change written with both sides the same length
    (24, "FCM: NON-DROP FRAME",
     "001  REV      V     C        00:00:01:00 00:00:02:00 01:00:00:00 01:00:01:00",
     "012.0", 0.5),
], ids=["reverse-24", "reverse-2997df", "slow-24"])
def test_m2_with_matching_durations_is_a_retimed_shot(tmp_path: Path, fps: float, fcm: str,
                                                     event: str, speed: str,
                                                     scalar: float) -> None:
    """The adapter applies an M2 only where the durations differ: here they match, and the
    clip still carries LinearTimeWarp(speed / rate), so the shot is skipped with the reason
    (as a reverse whose source in is after its out already was), its range unchanged."""
    touch(tmp_path / "media", "REV.mov", "PASS.mov")
    rec_out = event.split()[-1]
    nxt = NEXT.replace("01:00:01:00", rec_out).replace("01:00:02:00", rec_out[:6] + "02" +
                                                       rec_out[8:])
    path = _edl(tmp_path / "rev.edl", f"{event}\nM2   REV          {speed}                "
                f"{event.split()[-4]}\n* FROM CLIP NAME:  REV\n{nxt}", fcm)
    tl, reel = read_timeline(path, fps=fps, media_root=tmp_path / "media")
    rev, after = reel.shots
    assert _warps(tl) == [pytest.approx(scalar), None]
    kind = "reverse clip (" if scalar < 0 else "speed change "
    assert rev.skipped_reason is not None and rev.skipped_reason.startswith(kind), \
        rev.skipped_reason
    assert "M2" in rev.skipped_reason and "re-export" in rev.skipped_reason
    assert after.skipped_reason is None
    frame_s = 1 / fps if fps == 24 else 1001 / 30000
    src_in = 24 if fps == 24 else 1769  # 00:00:58;29: no label is dropped in minute 0
    assert rev.source_in_s == pytest.approx(src_in * frame_s)
    assert rev.record_in_frame == 0 and after.record_in_frame == rev.duration_frames


@pytest.mark.parametrize("fps, fcm, tcs, speed", [
    (24, "FCM: NON-DROP FRAME", "00:00:01:00 00:00:02:00 01:00:00:00 01:00:01:00", "024.0"),
    (29.97, "FCM: DROP FRAME", "00:00:01;00 00:00:02;00 01:00:00;00 01:00:01;00", "029.9"),
    (29.97, "FCM: DROP FRAME", "00:00:01;00 00:00:02;00 01:00:00;00 01:00:01;00", "030.0"),
], ids=["24", "2997-cut", "2997-rounded"])
def test_m2_at_the_edit_rate_is_100_percent(tmp_path: Path, fps: float, fcm: str, tcs: str,
                                            speed: str) -> None:
    """An M2 at the edit's rate as EDLs print it (029.9 or 030.0 for 29.97) is no retime."""
    touch(tmp_path / "media", "A001.mov")
    path = _edl(tmp_path / "m2.edl", f"001  A001     V     C        {tcs}\n"
                f"M2   A001         {speed}                {tcs.split()[0]}\n", fcm)
    tl, reel = read_timeline(path, fps=fps, media_root=tmp_path / "media")
    assert _warps(tl) == [None]
    assert [(s.duration_frames, s.skipped_reason) for s in reel.shots] == [
        (24 if fps == 24 else 30, None)]


def test_an_m2_line_without_a_speed_is_refused(tmp_path: Path) -> None:
    """An M2 whose speed cannot be read was ignored when the durations matched: now one
    error naming the event and the line."""
    path = _edl(tmp_path / "bad.edl", "001  A001     V     C        00:00:00:00 00:00:01:00 "
                "01:00:00:00 01:00:01:00\nM2   A001       abc                00:00:00:00\n")
    with pytest.raises(TimelineError) as err:
        read_timeline(path, fps=24)
    msg = str(err.value)
    assert msg.startswith(f"{path}: event 001 (A001): M2 line 'M2   A001       abc"), msg
    assert "speed in frames per second" in msg and msg.endswith("re-export the EDL")
    assert "\n" not in msg


# --- taste: record out before record in -------------------------------------------------------

def test_record_out_before_in_names_the_event_once_without_an_m2_hint(tmp_path: Path) -> None:
    path = _edl(tmp_path / "back.edl", "001  REV      V     C        00:00:01:00 00:00:02:00 "
                "01:00:01:00 01:00:00:00\n* FROM CLIP NAME:  REV\n")
    with pytest.raises(TimelineError) as err:
        read_timeline(path, fps=24)
    msg = str(err.value)
    assert msg.startswith(f"{path}: event 001 (REV) ends before it starts on the record side "
                          f"(01:00:01:00–01:00:00:00) — "), msg
    assert "M2" not in msg and "REV (REV)" not in msg and "\n" not in msg


# --- 9. OTIO global_start_time not at a picture rate ------------------------------------------

def _otio(tmp_path: Path, rate: float, start: otio.opentime.RationalTime) -> Path:
    track = video_track([media_clip("OA", None, 12, 36, rate), gap(12, rate),
                         media_clip("OB", None, 24, 37, rate)])
    tl = edit("start", [track], rate, None)
    tl.global_start_time = start
    return save(tl, tmp_path / "start.otio")


@pytest.mark.parametrize("rate, start, num, den, frame, label", [
    (24, otio.opentime.from_seconds(3600), 24, 1, 86400, "01:00:00:00"),
    (24, RT(3_600_000, 1000), 24, 1, 86400, "01:00:00:00"),  # a millisecond clock
    (NTSC_23976, otio.opentime.from_seconds(3603.6), 24000, 1001, 86400, "01:00:00:00"),
    (24, RT(86400, 24), 24, 1, 86400, "01:00:00:00"),  # the clips' own rate: as it was
], ids=["seconds-24", "milliseconds-24", "seconds-23976", "frames-24"])
def test_otio_start_in_seconds_keeps_the_clips_rate(tmp_path: Path, rate: float,
                                                    start: otio.opentime.RationalTime, num: int,
                                                    den: int, frame: int, label: str) -> None:
    """A start given in seconds (what `opentime.from_seconds` makes, rate 1) made the whole reel
    1 fps; the reel runs at the clips' rate and the start is rescaled to it exactly. A start
    at a picture rate is the reel's rate, as before (a 24 fps edit may hold only 29.97 media:
    `test_ingest_edge.test_edl_and_aaf_shots_run_at_the_media_rate`)."""
    _, reel = read_timeline(_otio(tmp_path, rate, start))
    assert (reel.rate_num, reel.rate_den, reel.start_frame, reel.start_timecode) == (
        num, den, frame, label)
    assert [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        ("OA", 0, 36), ("OB", 48, 37)]
    assert reel.shots[0].duration_s == pytest.approx(36 * den / num)


@pytest.mark.parametrize("rate, start", [
    (NTSC_23976, otio.opentime.from_seconds(3600)),  # 86313.686 frames at 23.976
    (24, otio.opentime.from_seconds(3600.01)),
], ids=["3600s-at-23976", "between-frames-24"])
def test_otio_start_between_frames_is_refused(tmp_path: Path, rate: float,
                                              start: otio.opentime.RationalTime) -> None:
    """A start that falls between the reel's frames is refused, not rounded (a rounded start
    would put every record timecode off the editor's), saying how to write it."""
    path = _otio(tmp_path, rate, start)
    with pytest.raises(TimelineError) as err:
        read_timeline(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: the edit's global_start_time "), msg
    assert "falls between frames" in msg and "whole number of frames" in msg
    assert "\n" not in msg


# --- 10. the reel's drop flag is the mode the first event was read in -------------------------

@pytest.mark.parametrize("header, cut, drop, start, label", [
    ("FCM: NON-DROP FRAME\n\nFCM: DROP FRAME", "01:01:00:02", True, 109632, "01:00:58;00"),
    ("FCM DROP FRAME", "01:01:00:02", True, 109632, "01:00:58;00"),
    ("FCM: DROP FRAME\nFCM: NON-DROP FRAME", "01:01:00:00", False, 109740, "01:00:58:00"),
], ids=["ndf-then-df", "no-colon", "df-then-ndf"])
def test_edl_drop_flag_follows_the_first_event(tmp_path: Path, header: str, cut: str,
                                               drop: bool, start: int, label: str) -> None:
    """The events were read under the FCM line above them, the reel's flag from the first FCM
    line with a colon: an NDF header then `FCM: DROP FRAME` gave drop-frame frames labelled
    non-drop (01:00:54:12). Now the first event's mode is the reel's."""
    path = tmp_path / "fcm.edl"
    path.write_text(f"""TITLE: FCM
{header}
001  A001     V     C        00:00:00:00 00:00:02:00 01:00:58:00 {cut}
002  B002     V     C        00:00:10:00 00:00:11:00 {cut} 01:01:01:{cut[-2:]}
""")
    _, reel = read_timeline(path, fps=29.97)
    assert (reel.drop_frame, reel.start_frame, reel.start_timecode) == (drop, start, label)
    second = f"{cut[:8]};{cut[9:]}" if drop else cut
    assert [_tc(reel, s.record_in_frame) for s in reel.shots] == [label, second]


def test_an_outgoing_clips_m2_under_a_dissolve_does_not_retime_the_incoming(
        tmp_path: Path) -> None:
    """Avid repeats the outgoing clip's M2 under the dissolve event: it names A001, so B002
    (which plays at 100 %) is not skipped as a 200 % speed change, while A001 is."""
    touch(tmp_path / "media", "A001.mov", "B002.mov")
    edl = _edl(tmp_path / "dissolve.edl", """\
001  A001     V     C        00:00:01:00 00:00:03:00 01:00:00:00 01:00:01:00
M2   A001       048.0                00:00:01:00
002  A001     V     C        00:00:03:00 00:00:03:00 01:00:01:00 01:00:01:00
002  B002     V     D    012 00:00:05:00 00:00:07:00 01:00:01:00 01:00:03:00
M2   A001       048.0                00:00:03:00
""")
    _, reel = read_timeline(edl, fps=24, media_root=tmp_path / "media")
    fast, after = reel.shots
    assert [Path(s.source_path or "").name for s in (fast, after)] == ["A001.mov", "B002.mov"]
    assert fast.skipped_reason is not None and fast.skipped_reason.startswith(
        "speed change 200 % (M2)")
    assert after.skipped_reason is None and after.source_in_s == pytest.approx(5.25)
