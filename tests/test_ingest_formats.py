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

def _fcpxml(frame_duration: str, tc_start: str, tc_format: str, spine: str,
            resources: str = "") -> str:
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
{resources}
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


def _fcpx_reel(tmp_path: Path, spine: str, resources: str = "", tc_start: str = "0s") -> ReelSpec:
    """A 24 fps project read with its media present (empty files: found, header unread)."""
    (tmp_path / "media").mkdir(exist_ok=True)
    for name in ("A001.mov", "B002.mov", "S003.wav"):
        (tmp_path / "media" / name).write_bytes(b"")
    path = tmp_path / "reel.fcpxml"
    path.write_text(_fcpxml("100/2400s", tc_start, "NDF", spine, resources))
    return read_timeline(path)[1]


_SOUND = """<asset id="r4" name="S003" src="media/S003.wav" start="0s" duration="600s" hasVideo="0"
               hasAudio="1"/>"""


def test_fcpx_tc_start_starts_the_reel(tmp_path: Path) -> None:
    """tcStart="3600s" is 01:00:00:00 and the spine's offsets run on that clock (the first clip
    at offset 3600s, as Final Cut Pro and Resolve write it): every record timecode (and BWF
    time stamp) follows."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="3600s" duration="2s" start="1/2s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="3602s" duration="3s" start="5s" format="r1">
            <marker start="6s" duration="1/24s" value="FOLEY: door slam"/>
        </asset-clip>"""
    path = tmp_path / "reel.fcpxml"
    path.write_text(_fcpxml("100/2400s", "3600s", "NDF", spine))
    _, reel = read_timeline(path)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (24, 1, False)
    assert (reel.start_frame, reel.start_timecode) == (86400, "01:00:00:00")
    assert _shots(reel) == [("A001", 0, 48), ("B002", 48, 72)]
    assert reel.duration_s == pytest.approx(5.0)
    assert _tc(reel, reel.shots[1].record_in_frame) == "01:00:02:00"
    assert [s.source_in_s for s in reel.shots] == pytest.approx([0.5, 5.0])
    assert reel.shots[1].foley_hint == "door slam"


def test_an_fcpxmld_bundle_is_read_from_its_info_fcpxml(tmp_path: Path) -> None:
    """Final Cut Pro 10.6+ exports a folder, `Reel 1.fcpxmld/Info.fcpxml`: it reads as the
    .fcpxml it holds (drop-frame from its tcFormat too); one without it is refused by name."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="3600s" duration="2s" start="1/2s" format="r1"/>"""
    bundle = tmp_path / "Reel 1.fcpxmld"
    bundle.mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "A001.mov").write_bytes(b"")
    (bundle / "Info.fcpxml").write_text(_fcpxml("100/2400s", "3600s", "NDF", spine).replace(
        'src="media/', f'src="{(tmp_path / "media").as_uri()}/'))
    _, reel = read_timeline(bundle)
    assert reel.name == "Reel 1" and reel.start_timecode == "01:00:00:00"
    assert _shots(reel) == [("A001", 0, 48)]
    assert reel.shots[0].source_path == str(tmp_path / "media" / "A001.mov")
    # the Info.fcpxml itself (what an inbox finds inside the bundle) is named by the bundle
    # when the project has a name every new one gets
    info = bundle / "Info.fcpxml"
    info.write_text(info.read_text().replace('project name="Reel 1"', 'project name="Timeline 1"'))
    assert read_timeline(info)[1].name == "Reel 1"
    empty = tmp_path / "Empty.fcpxmld"
    empty.mkdir()
    with pytest.raises(TimelineError, match=r"Empty\.fcpxmld: an \.fcpxmld bundle without its "
                                            r"Info\.fcpxml — export the project"):
        read_timeline(empty)


def test_fcpx_clip_before_tc_start_is_refused(tmp_path: Path) -> None:
    """An offset before tcStart is before the sequence starts: refused, naming the clip."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="3599s" duration="2s" start="0s" format="r1"/>"""
    with pytest.raises(TimelineError, match=r"reel\.fcpxml: clip 'A001' is at offset 3599s "
                                            r"\(00:59:59:00\), before the sequence starts at "
                                            r"its tcStart \(01:00:00:00\) — .*re-export"):
        _fcpx_reel(tmp_path, spine, tc_start="3600s")


def test_fcpx_at_23976_is_read_at_23976(tmp_path: Path) -> None:
    """frameDuration 1001/24000s is 24000/1001 fps, not 23: frames, seconds and the
    86486400/24000s start (01:00:00:00) all come out exact."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="86486400/24000s" duration="72072/24000s"
                    start="12012/24000s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="86558472/24000s" duration="48048/24000s"
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
        <asset-clip name="A001" ref="r2" offset="107999892/30000s" duration="1801800/30000s"
                    start="0s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="109801692/30000s" duration="90090/30000s"
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


def test_fcpx_sync_clip_shows_its_own_trim(tmp_path: Path) -> None:
    """A sync-clip (picture + separate sound) shows its inner clip from its own start for its
    own duration — not the inner clip's whole length, which pushed every later shot back."""
    spine = """
        <sync-clip name="A001 sync" offset="0s" duration="2s" start="11s" format="r1">
            <asset-clip name="A001" ref="r2" offset="10s" duration="30s" start="10s"
                        format="r1"/>
            <asset-clip name="S003" ref="r4" lane="-1" offset="10s" duration="30s" start="20s"/>
            <marker start="12s" duration="1/24s" value="FOLEY: cup down"/>
        </sync-clip>
        <asset-clip name="B002" ref="r3" offset="2s" duration="1s" start="0s" format="r1"/>"""
    reel = _fcpx_reel(tmp_path, spine, _SOUND)
    assert _shots(reel) == [("A001 sync", 0, 48), ("B002", 48, 24)]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([11.0, 0.0])
    assert reel.shots[0].source_path.endswith("A001.mov")
    assert reel.shots[0].foley_hint == "cup down"
    assert reel.duration_s == pytest.approx(3.0)


_MULTICAM = """
        <media id="m1" name="Scene 4 multicam">
            <multicam format="r1" tcStart="0s">
                <mc-angle name="Cam A" angleID="camA">
                    <asset-clip name="A001" ref="r2" offset="0s" duration="600s" start="0s"/>
                </mc-angle>
                <mc-angle name="Cam B" angleID="camB">
                    <gap name="Gap" offset="0s" duration="1s" start="0s"/>
                    <asset-clip name="B002" ref="r3" offset="1s" duration="599s" start="0s"/>
                </mc-angle>
            </multicam>
        </media>"""


def test_fcpx_multicam_clip_shows_its_active_video_angle(tmp_path: Path) -> None:
    """An mc-clip is picture: its video angle (mc-source srcEnable video, or all) from the
    multicam's clock; the angle that gives only sound is not shown."""
    spine = """
        <mc-clip name="Multicam 1" ref="m1" offset="0s" duration="2s" start="5s">
            <mc-source angleID="camA" srcEnable="audio"/>
            <mc-source angleID="camB" srcEnable="video"/>
        </mc-clip>
        <mc-clip name="Multicam 1" ref="m1" offset="2s" duration="1s" start="7s">
            <mc-source angleID="camA" srcEnable="all"/>
        </mc-clip>"""
    reel = _fcpx_reel(tmp_path, spine, _MULTICAM)
    assert _shots(reel) == [("Multicam 1", 0, 48), ("Multicam 1", 48, 24)]
    assert [Path(s.source_path).name for s in reel.shots] == ["B002.mov", "A001.mov"]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([4.0, 7.0])


def test_fcpx_multicam_angle_missing_is_refused(tmp_path: Path) -> None:
    spine = """
        <mc-clip name="Multicam 1" ref="m1" offset="0s" duration="2s" start="5s">
            <mc-source angleID="camC" srcEnable="all"/>
        </mc-clip>"""
    with pytest.raises(TimelineError, match=r"multicam clip 'Multicam 1' shows angle 'camC', "
                                            r"which multicam 'Scene 4 multicam' lacks — .*"
                                            r"break apart the multicam clip"):
        _fcpx_reel(tmp_path, spine, _MULTICAM)


def test_fcpx_overlapping_storyline_clips_are_refused(tmp_path: Path) -> None:
    """Clips of one storyline follow one another: one that starts half a frame or more
    before the previous one ends is refused (it used to be appended late, moving every later
    shot), naming the clip and its lane."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="2s" start="0s" format="r1"/>
        <asset-clip name="B002" ref="r3" offset="3/2s" duration="2s" start="0s" format="r1"/>"""
    with pytest.raises(TimelineError, match=r"clip 'B002' at 00:00:01:12 overlaps the clip "
                                            r"before it in lane 0 \('A001', which ends at "
                                            r"00:00:02:00\)"):
        _fcpx_reel(tmp_path, spine)
    connected = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="4s" start="100s" format="r1">
            <spine lane="1" offset="101s">
                <asset-clip name="B002" ref="r3" offset="0s" duration="1s" start="0s"/>
                <asset-clip name="B002" ref="r3" offset="1/2s" duration="1s" start="5s"/>
            </spine>
        </asset-clip>"""
    with pytest.raises(TimelineError, match=r"clip 'B002' at 00:00:01:12 overlaps the clip "
                                            r"before it in lane 1 "):
        _fcpx_reel(tmp_path, connected)


def test_cli_refuses_an_fcpx_clip_before_tc_start_with_exit_2(tmp_path: Path) -> None:
    """One line naming the file and the clip, exit 2, and no delivery folder."""
    path = tmp_path / "reel.fcpxml"
    path.write_text(_fcpxml("100/2400s", "3600s", "NDF", """
        <asset-clip name="A001" ref="r2" offset="0s" duration="2s" start="0s" format="r1"/>"""))
    out = tmp_path / "delivery"
    run = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "reel.fcpxml: clip 'A001' is at offset 0s" in run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


def test_fcpx_connected_storyline_starts_at_its_offset(tmp_path: Path) -> None:
    """A connected storyline sits at its offset on its parent's clock; its clips follow from
    there (each counted from the storyline's start)."""
    spine = """
        <asset-clip name="A001" ref="r2" offset="0s" duration="5s" start="100s" format="r1">
            <spine lane="1" offset="103s">
                <asset-clip name="B002" ref="r3" offset="0s" duration="1s" start="50s"/>
            </spine>
        </asset-clip>"""
    reel = _fcpx_reel(tmp_path, spine)
    assert _shots(reel) == [("A001", 0, 72), ("B002", 72, 24), ("A001", 96, 24)]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([100.0, 50.0, 104.0])


_COMPOUND = """
        <media id="c1" name="Compound 1">
            <sequence format="r1" tcStart="0s">
                <spine>
                    <asset-clip name="B002" ref="r3" offset="0s" duration="10s" start="0s"/>
                </spine>
            </sequence>
        </media>"""

_DISABLED = {
    "asset-clip": '<asset-clip name="X" ref="r3" offset="2s" duration="1s" start="0s" '
                  'enabled="0"/>',
    "clip": '<clip name="X" offset="2s" duration="1s" enabled="0">'
            '<video ref="r3" offset="0s" duration="600s"/></clip>',
    "ref-clip": '<ref-clip name="X" ref="c1" offset="2s" duration="1s" enabled="0"/>',
    "sync-clip": '<sync-clip name="X" offset="2s" duration="1s" enabled="0">'
                 '<asset-clip ref="r3" offset="0s" duration="600s"/></sync-clip>',
    "mc-clip": '<mc-clip name="X" ref="m1" offset="2s" duration="1s" enabled="0">'
               '<mc-source angleID="camA"/></mc-clip>',
}


@pytest.mark.parametrize("kind", list(_DISABLED))
def test_fcpx_disabled_clips_are_not_picture(tmp_path: Path, kind: str) -> None:
    """enabled="0" hides a clip: no shot where it sits in the spine, and connected above a
    clip it does not cover it (the clip below stays one shot)."""
    spine = f"""
        <asset-clip name="A001" ref="r2" offset="0s" duration="2s" start="0s" format="r1">
            {_DISABLED[kind].replace('offset="2s"', 'lane="1" offset="1/2s"')}
        </asset-clip>
        {_DISABLED[kind]}
        <asset-clip name="B002" ref="r3" offset="3s" duration="1s" start="0s" format="r1"/>"""
    reel = _fcpx_reel(tmp_path, spine, _COMPOUND + _MULTICAM)
    assert _shots(reel) == [("A001", 0, 48), ("B002", 72, 24)]


def test_fcpx_retimes_are_skipped_with_the_reason(tmp_path: Path) -> None:
    """A timeMap (speed, reverse, hold, ramp) or a scaling conform-rate is a speed effect
    (LinearTimeWarp): the shot is skipped with the reason, never analysed at 100 % forwards.
    `start` is on the timeMap's `time` axis; 100 % and unscaled conforms are analysed."""
    def clip(offset: int, name: str, start: str, timing: str) -> str:
        return (f'<asset-clip name="{name}" ref="r2" offset="{offset}s" duration="1s" '
                f'start="{start}" format="r1">{timing}</asset-clip>')

    def time_map(*points: tuple[str, str]) -> str:
        return "<timeMap>" + "".join(f'<timept time="{t}" value="{v}" interp="smooth2"/>'
                                     for t, v in points) + "</timeMap>"

    spine = "\n".join([
        clip(0, "HALF", "10s", time_map(("0s", "0s"), ("100s", "50s"))),
        clip(1, "BACK", "10s", time_map(("0s", "100s"), ("100s", "0s"))),
        clip(2, "HOLD", "10s", time_map(("0s", "3s"), ("100s", "3s"))),
        clip(3, "RAMP", "0s", time_map(("0s", "0s"), ("1/2s", "1/4s"), ("1s", "1s"))),
        clip(4, "PAL", "10s", '<conform-rate srcFrameRate="25"/>'),
        clip(5, "REAL", "10s", '<conform-rate scaleEnabled="0" srcFrameRate="25"/>'),
        clip(6, "SAME", "10s", time_map(("0s", "0s"), ("100s", "100s"))),
    ])
    path = tmp_path / "reel.fcpxml"
    reel = _fcpx_reel(tmp_path, spine)
    assert _shots(reel) == [(n, 24 * i, 24) for i, n in enumerate(
        ["HALF", "BACK", "HOLD", "RAMP", "PAL", "REAL", "SAME"])]
    why = {s.clip_name: s.skipped_reason for s in reel.shots}
    assert why["HALF"].startswith("speed change 50 % (FCPX speed change on clip 'HALF') — ")
    assert why["BACK"].startswith("reverse clip (-100 %, FCPX speed change on clip 'BACK') — ")
    assert why["HOLD"].startswith("freeze frame (FCPX speed change on clip 'HOLD') — ")
    assert why["RAMP"].startswith("speed change 150 % (FCPX variable speed (timeMap) on clip 'RAMP') — ")
    assert why["PAL"].startswith("speed change 96 % (FCPX speed change on clip 'PAL') — ")
    assert why["REAL"] is None and why["SAME"] is None
    assert {s.clip_name: s.source_in_s for s in reel.shots}["HALF"] == pytest.approx(5.0)
    timeline, _ = read_timeline(path)
    ramp = next(c for c in timeline.find_clips() if c.name == "RAMP")
    assert ramp.effects[0].metadata["foleyflow"]["retime"] == \
        "variable speed (timeMap) on FCPX clip 'RAMP'"


def test_fcpx_media_rep_locates_the_media(tmp_path: Path) -> None:
    """FCPXML 1.9 on names an asset's file in a <media-rep>, not in a src attribute."""
    resources = """<asset id="r5" name="C003" start="0s" duration="60s" hasVideo="1"
               format="r1"><media-rep kind="original-media" src="media/A001.mov"/></asset>"""
    spine = '<asset-clip name="C003" ref="r5" offset="0s" duration="1s" start="2s"/>'
    reel = _fcpx_reel(tmp_path, spine, resources)
    assert reel.shots[0].source_path == str(tmp_path / "media" / "A001.mov")
    assert reel.shots[0].skipped_reason is None


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
