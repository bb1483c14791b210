"""tasks.ingest_formats: FCPX XML clocks read exactly, CMX 3600 EDLs read as the editor meant.

Real edit files, written here as the editing systems write them, read by `read_timeline`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ingest import ReelSpec, TimelineError, read_timeline, timecode

REPO = Path(__file__).resolve().parents[1]


def _tc(reel: ReelSpec, frame: int) -> str:
    """The record timecode of a frame counted from the reel start."""
    return timecode(reel.start_frame + frame, reel.rate_num, reel.rate_den, reel.drop_frame)


def _shots(reel: ReelSpec) -> list[tuple[str, int, int]]:
    return [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]


# --- FCPX XML ---------------------------------------------------------------------------------

def _fcpxml(frame_duration: str, tc_start: str, tc_format: str, spine: str) -> str:
    """A library → event → project export, as Final Cut Pro writes it."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE fcpxml>
<fcpxml version="1.8">
    <resources>
        <format id="r1" frameDuration="{frame_duration}" name="FFVideoFormat1080p"/>
        <asset id="r2" name="A001" src="media/A001.mov" start="0s" duration="600s" hasVideo="1"
               hasAudio="1" format="r1"/>
        <asset id="r3" name="B002" src="media/B002.mov" start="0s" duration="600s" hasVideo="1"
               hasAudio="1" format="r1"/>
    </resources>
    <library>
        <event name="Day 1">
            <project name="Reel 1">
                <sequence format="r1" tcStart="{tc_start}" tcFormat="{tc_format}">
                    <spine>
{spine}
                    </spine>
                </sequence>
            </project>
        </event>
    </library>
</fcpxml>
"""


def test_fcpx_tc_start_starts_the_reel(tmp_path: Path) -> None:
    """tcStart="3600s" is 01:00:00:00: every record timecode (and BWF time stamp) follows."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="2s" start="1/2s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="2s" duration="3s" start="5s" format="r1">
            <marker start="6s" duration="1/24s" value="FOLEY: door slam"/>
        </asset-clip>"""
    path = tmp_path / "reel.fcpxml"
    path.write_text(_fcpxml("100/2400s", "3600s", "NDF", spine))
    _, reel = read_timeline(path)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (24, 1, False)
    assert (reel.start_frame, reel.start_timecode) == (86400, "01:00:00:00")
    assert _shots(reel) == [("A001", 0, 48), ("B002", 48, 72)]
    assert _tc(reel, reel.shots[1].record_in_frame) == "01:00:02:00"
    assert [s.source_in_s for s in reel.shots] == pytest.approx([0.5, 5.0])
    assert reel.shots[1].foley_hint == "door slam"


def test_fcpx_at_23976_is_read_at_23976(tmp_path: Path) -> None:
    """frameDuration 1001/24000s is 24000/1001 fps, not 23: frames, seconds and the
    86486400/24000s start (01:00:00:00) all come out exact."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="72072/24000s"
                    start="12012/24000s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="72072/24000s" duration="48048/24000s"
                    start="6006/24000s" format="r1"/>"""
    path = tmp_path / "ntsc23976.fcpxml"
    path.write_text(_fcpxml("1001/24000s", "86486400/24000s", "NDF", spine))
    _, reel = read_timeline(path)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (24000, 1001, False)
    assert (reel.start_frame, reel.start_timecode) == (86400, "01:00:00:00")
    assert _shots(reel) == [("A001", 0, 72), ("B002", 72, 48)]
    assert reel.duration_s == pytest.approx(120 * 1001 / 24000)
    assert [s.source_in_s for s in reel.shots] == pytest.approx([0.5005, 0.25025])
    assert [s.source_rate for s in reel.shots] == pytest.approx([24000 / 1001] * 2)


def test_fcpx_at_2997_drop_frame(tmp_path: Path) -> None:
    """frameDuration 1001/30000s with tcFormat="DF": 29.97 drop-frame, starting 01:00:00;00
    (107892 frames); a cut 1800 frames in is at 01:01:00;02, as the editor sees it."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="1801800/30000s" start="0s"
                    format="r1"/>
        <asset-clip name="B002" ref="r3" offset="1801800/30000s" duration="90090/30000s"
                    start="30030/30000s" format="r1"/>"""
    path = tmp_path / "df.fcpxml"
    path.write_text(_fcpxml("1001/30000s", "107999892/30000s", "DF", spine))
    _, reel = read_timeline(path)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (30000, 1001, True)
    assert (reel.start_frame, reel.start_timecode) == (107892, "01:00:00;00")
    assert _shots(reel) == [("A001", 0, 1800), ("B002", 1800, 90)]
    assert _tc(reel, reel.shots[1].record_in_frame) == "01:01:00;02"
    assert reel.shots[1].source_in_s == pytest.approx(1.001)


def test_fcpx_clip_sound_is_not_a_second_picture_clip(tmp_path: Path) -> None:
    """A <clip> holding <video> and <audio>: the sound lies under the picture, it does not
    follow it as a second copy that pushes the next shot back."""
    spine = """
        <clip name="A001" offset="0s" duration="2s" start="1s" format="r1">
            <video ref="r2" offset="0s" duration="600s"/>
            <audio ref="r2" lane="-1" offset="0s" duration="600s"/>
        </clip>
        <asset-clip name="B002" ref="r3" offset="2s" duration="1s" start="0s" format="r1"/>"""
    path = tmp_path / "av.fcpxml"
    path.write_text(_fcpxml("1/25s", "0s", "NDF", spine))
    _, reel = read_timeline(path)
    assert _shots(reel) == [("A001", 0, 50), ("B002", 50, 25)]


# --- CMX 3600 EDL -----------------------------------------------------------------------------

def _edl(tmp_path: Path, text: str, name: str = "cut.edl") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


DF_COLON = """TITLE: DF COLON
FCM: DROP FRAME

001  STEPS    V     C        00:00:00:15 00:00:02:15 01:00:58:00 01:01:00:02
* FROM CLIP NAME:  steps_2997
002  STEPS    V     C        00:00:01:00 00:00:02:00 01:01:00:02 01:01:01:02
* FROM CLIP NAME:  steps_2997
003  STEPS    V     C        00:00:01:00 00:00:02:00 01:09:59:28 01:10:00:28
* FROM CLIP NAME:  steps_2997
"""


def test_drop_frame_edl_with_colons_is_drop_frame(tmp_path: Path) -> None:
    """Under FCM: DROP FRAME, 01:00:58:00 is drop-frame 01:00:58;00 (frame 109632), not the
    non-drop label 3.6 s later."""
    _, reel = read_timeline(_edl(tmp_path, DF_COLON), fps=29.97)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (30000, 1001, True)
    assert (reel.start_frame, reel.start_timecode) == (109632, "01:00:58;00")
    assert _shots(reel) == [("steps_2997", 0, 60), ("steps_2997", 60, 30),
                            ("steps_2997", 16240, 30)]
    assert [_tc(reel, s.record_in_frame) for s in reel.shots] == [
        "01:00:58;00", "01:01:00;02", "01:09:59;28"]
    # the same EDL written with ';' reads the same
    _, semi = read_timeline(_edl(tmp_path, DF_COLON.replace(":00 ", ";00 ").replace(
        ":02 ", ";02 ").replace(":15 ", ";15 ").replace(":28", ";28"), "semi.edl"), fps=29.97)
    assert (semi.start_frame, _shots(semi)) == (reel.start_frame, _shots(reel))


def test_fcm_lines_switch_per_event(tmp_path: Path) -> None:
    """Each event is read in the frame code mode of the FCM line above it: 00:01:00:00 under
    NON-DROP and 00:01:00:02 under DROP FRAME are both frame 1800 (60.06 s)."""
    text = """TITLE: SWITCH
FCM: NON-DROP FRAME
001  A001     V     C        00:01:00:00 00:01:01:00 00:00:10:00 00:00:11:00
FCM: DROP FRAME
002  B002     V     C        00:01:00:02 00:01:01:02 00:00:11:00 00:00:12:00
"""
    _, reel = read_timeline(_edl(tmp_path, text), fps=29.97)
    assert [(s.record_in_frame, s.duration_frames) for s in reel.shots] == [(0, 30), (30, 30)]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([1800 * 1001 / 30000] * 2)


def test_impossible_drop_frame_timecode_is_refused(tmp_path: Path) -> None:
    """01:01:00;00 does not exist in drop-frame: refused, naming the event, not read as the
    frame before it."""
    text = DF_COLON.replace("01:01:00:02 01:01:01:02", "01:01:00:00 01:01:01:00")
    with pytest.raises(TimelineError, match=r"cut\.edl: event 002: 01:01:00:00 is not a "
                                            r"drop-frame timecode .* — fix"):
        read_timeline(_edl(tmp_path, text), fps=29.97)


@pytest.mark.parametrize("fps, num, first, frame_sep", [
    (29.97, 30000, "02", ";"),
    (29.97, 30000, "02", ":"),  # FCM: DROP FRAME makes ':' drop-frame too
    (59.94, 60000, "04", ";"),
])
def test_drop_frame_locators_keep_their_foley_hints(tmp_path: Path, fps: float, num: int,
                                                   first: str, frame_sep: str) -> None:
    """`* LOC:` lines in a drop-frame EDL are read (the adapter only reads ':' locators) at
    the drop-frame time they name: 01:01:01;00 lies in the second shot, which starts at the
    minute's first frame (01:01:00;02 at 29.97, ;04 at 59.94). Read as non-drop it would lie
    past the reel's end."""
    text = f"""TITLE: DF LOC
FCM: DROP FRAME

001  A001     V     C        13:00:00;00 13:00:02;00 01:00:58;00 01:01:00;{first}
* FROM CLIP NAME:  A001
* LOC: 01:00:58;10 RED     FOLEY: cloth rustle
002  B002     V     C        14:00:00;00 14:00:02;00 01:01:00;{first} 01:01:02;{first}
* FROM CLIP NAME:  B002
* LOC: 01:01:01;00 YELLOW  FOLEY: door slam
""".replace(";", frame_sep)
    _, reel = read_timeline(_edl(tmp_path, text), fps=fps)
    assert (reel.rate_num, reel.drop_frame) == (num, True)
    assert [_tc(reel, s.record_in_frame) for s in reel.shots] == [
        "01:00:58;00", f"01:01:00;{first}"]
    assert [s.foley_hint for s in reel.shots] == ["cloth rustle", "door slam"]


def test_fade_up_from_black_on_the_first_event(tmp_path: Path) -> None:
    """Avid's fade from black opening a reel (001 BL C + 001 AX D 024) is read as the clip
    cut in at its record in, for its whole record range."""
    text = """TITLE: FADE IN
FCM: NON-DROP FRAME

001  BL       V     C        00:00:00:00 00:00:00:00 01:00:00:00 01:00:00:00
001  BOUNCE   V     D    024 00:00:00:12 00:00:02:12 01:00:00:00 01:00:02:00
* FROM CLIP NAME:  bounce_24
002  PASS     V     C        00:00:00:06 00:00:01:06 01:00:02:00 01:00:03:00
* FROM CLIP NAME:  pass_24
"""
    _, reel = read_timeline(_edl(tmp_path, text), fps=24)
    assert reel.start_timecode == "01:00:00:00"
    assert _shots(reel) == [("bounce_24", 0, 48), ("pass_24", 48, 24)]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([0.5, 0.25])


DF_SEMI = """TITLE: DROP
FCM: DROP FRAME

001  A001     V     C        13:00:00;00 13:00:02;00 01:00:00;00 01:00:02;00
"""


@pytest.mark.parametrize("text, fps, want", [
    (DF_SEMI, 30, "--fps 29.97"),
    (DF_SEMI, 24, "--fps 29.97"),
    (DF_SEMI, 23.976, "--fps 29.97"),
    (DF_SEMI.replace(";", ":"), 30, "--fps 29.97"),  # FCM: DROP FRAME alone says it
    (DF_SEMI.replace("FCM: DROP FRAME\n", ""), 25, "--fps 29.97"),  # ';' alone says it
    (DF_SEMI.replace("13:00:02;00", "13:00:01;30").replace("01:00:02;00", "01:00:01;30"),
     29.97, "--fps 59.94"),
    (DF_SEMI.replace("FCM: DROP FRAME", "FCM: NON-DROP FRAME").replace(";", ":").replace(
        "13:00:02:00", "13:00:01:28").replace("01:00:02:00", "01:00:01:28"), 24,
     "--fps 29.97 or 30"),
], ids=["df-30", "df-24", "df-23.976", "fcm-df-colons-30", "semicolons-25", "df-59.94-at-29.97",
        "ndf-29.97-at-24"])
def test_wrong_fps_says_which_fps_to_pass(tmp_path: Path, text: str, fps: float,
                                          want: str) -> None:
    with pytest.raises(TimelineError) as err:
        read_timeline(_edl(tmp_path, text), fps=fps)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'cut.edl'}: ") and msg.endswith(want), msg
    assert "re-export" not in msg


MISMATCH = """TITLE: MISMATCH
FCM: NON-DROP FRAME

001  BOUNCE   V     C        00:00:00:12 00:00:02:12 01:00:00:00 01:00:01:00
* FROM CLIP NAME:  bounce_24
002  PASS     V     C        00:00:00:06 00:00:01:06 01:00:01:00 01:00:02:00
* FROM CLIP NAME:  pass_24
"""


def test_record_and_source_durations_must_agree(tmp_path: Path) -> None:
    """Event 001 is 24 record frames but 48 source frames: one error naming the event and
    both durations, instead of the source duration moving every later shot."""
    with pytest.raises(TimelineError) as err:
        read_timeline(_edl(tmp_path, MISMATCH), fps=24)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'cut.edl'}: event 001 (BOUNCE (bounce_24))"), msg
    assert "24 frames on the record side (01:00:00:00–01:00:01:00)" in msg
    assert "48 frames on the source side (00:00:00:12–00:00:02:12)" in msg
    assert "M2" in msg and " — " in msg


def test_speed_changes_and_freezes_keep_their_record_range(tmp_path: Path) -> None:
    """An M2 line (speed change, freeze frame) explains a duration difference: accepted,
    the record side as the EDL says."""
    text = """TITLE: SPEED
FCM: NON-DROP FRAME

001  BOUNCE   V     C        00:00:00:12 00:00:01:12 01:00:00:00 01:00:01:00
* FROM CLIP NAME:  bounce_24
002  BOUNCE   V     C        00:00:01:00 00:00:02:00 01:00:01:00 01:00:03:00
M2   BOUNCE       012.0                00:00:01:00
* FROM CLIP NAME:  bounce_24
003  BOUNCE   V     C        00:00:01:00 00:00:01:01 01:00:03:00 01:00:04:00
M2   BOUNCE       000.0                00:00:01:00
* FROM CLIP NAME:  bounce_24
004  PASS     V     C        00:00:00:06 00:00:01:06 01:00:04:00 01:00:05:00
* FROM CLIP NAME:  pass_24
"""
    _, reel = read_timeline(_edl(tmp_path, text), fps=24)
    assert [(s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        (0, 24), (24, 48), (72, 24), (96, 24)]


def test_events_out_of_record_order_are_refused(tmp_path: Path) -> None:
    """A B-mode list (event 002 before 001) is not silently re-timed."""
    text = """TITLE: BMODE
002  PASS     V     C        00:00:00:06 00:00:01:06 01:00:02:00 01:00:03:00
001  BOUNCE   V     C        00:00:00:12 00:00:02:12 01:00:00:00 01:00:02:00
"""
    with pytest.raises(TimelineError, match=r"event 001 \(BOUNCE\) starts at 01:00:00:00 on "
                                            r"track V.* — export the EDL in record order"):
        read_timeline(_edl(tmp_path, text), fps=24)


def test_record_side_past_midnight_runs_on(tmp_path: Path) -> None:
    """23:59:59:00 → 00:00:01:00 is two seconds, and the next event follows it."""
    text = """TITLE: MIDNIGHT
001  BOUNCE   V     C        00:00:00:12 00:00:02:12 23:59:59:00 00:00:01:00
002  PASS     V     C        00:00:00:06 00:00:01:06 00:00:01:00 00:00:02:00
"""
    _, reel = read_timeline(_edl(tmp_path, text), fps=24)
    assert reel.start_timecode == "23:59:59:00"
    assert [(s.record_in_frame, s.duration_frames) for s in reel.shots] == [(0, 48), (48, 24)]


def test_cli_refuses_a_mismatched_edl_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "delivery"
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(_edl(tmp_path, MISMATCH)), "--fps", "24",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "event 001" in run.stderr and "48 frames on the source side" in run.stderr
    assert not out.exists()
