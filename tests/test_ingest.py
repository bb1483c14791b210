"""tasks.ingest: real edits written with OTIO (and by hand, for EDL), read back into shots."""
from __future__ import annotations

import itertools
import os
import unicodedata
from pathlib import Path

import opentimelineio as otio
import pytest

from tasks.ingest import ReelSpec, TimelineError, read_timeline, timecode
from tests.fixtures_otio import edit, gap, media_clip, save, touch, tr, video_track

SAMPLES = Path(os.environ.get("FOLEY_ADAPTER_SAMPLES",
                              Path(__file__).resolve().parents[1] / ".cache" / "adapter-samples"))


def shots_of(path: Path, **kw) -> list[tuple[str, str, int, int]]:
    _, reel = read_timeline(path, **kw)
    return [(s.name, s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]


# --- timecode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("frames, num, den, drop, expected", [
    (0, 24, 1, False, "00:00:00:00"),
    (86400, 24, 1, False, "01:00:00:00"),
    (86400 + 23, 24000, 1001, False, "01:00:00:23"),
    (1800, 30000, 1001, True, "00:01:00;02"),
    (1800, 30000, 1001, False, "00:01:00:00"),
    (17982, 30000, 1001, True, "00:10:00;00"),
    (107892, 30000, 1001, True, "01:00:00;00"),
    (3600, 60000, 1001, True, "00:01:00;04"),
    (90000, 25, 1, True, "01:00:00:00"),  # drop-frame means nothing at 25 fps
    (-24, 24, 1, False, "-00:00:01:00"),
])
def test_timecode(frames: int, num: int, den: int, drop: bool, expected: str) -> None:
    assert timecode(frames, num, den, drop) == expected


@pytest.mark.parametrize("num", [30000, 60000])
def test_drop_frame_timecode_matches_otio(num: int) -> None:
    rate = num / 1001
    for frames in range(0, 400_000, 997):
        want = otio.opentime.to_timecode(otio.opentime.RationalTime(frames, rate), rate, True)
        assert timecode(frames, num, 1001, True) == want


# --- what is a shot ---------------------------------------------------------------------------

def test_top_most_enabled_clip_wins(tmp_path: Path) -> None:
    a = media_clip("A", None, 0, 96, 24)
    v2 = video_track([gap(24, 24), media_clip("B", None, 0, 24, 24), gap(12, 24),
                      media_clip("C-disabled", None, 0, 12, 24, enabled=False)], name="V2")
    v3 = video_track([media_clip("D-track-off", None, 0, 96, 24)], name="V3", enabled=False)
    save(edit("stack", [video_track([a]), v2, v3], 24), tmp_path / "stack.otio")
    _, reel = read_timeline(tmp_path / "stack.otio")
    got = [(s.name, s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]
    assert got == [("SH010", "A", 0, 24), ("SH020", "B", 24, 24), ("SH030", "A", 48, 48)]
    assert reel.shots[2].source_in_s == pytest.approx(2.0)  # A resumes 48 frames in
    assert [s.index for s in reel.shots] == [0, 1, 2]


def test_gaps_make_no_shot(tmp_path: Path) -> None:
    track = video_track([gap(10, 24), media_clip("A", None, 0, 20, 24), gap(30, 24),
                         media_clip("B", None, 5, 14, 24)])
    save(edit("gaps", [track], 24), tmp_path / "gaps.otio")
    _, reel = read_timeline(tmp_path / "gaps.otio")
    assert shots_of(tmp_path / "gaps.otio") == [("SH010", "A", 10, 20), ("SH020", "B", 60, 14)]
    assert reel.duration_s == pytest.approx(74 / 24)
    assert reel.shots[1].record_in_s == pytest.approx(60 / 24)


@pytest.mark.parametrize("in_frames, out_frames, cut, b_source_in", [
    (6, 6, 48, 1.0),  # centred dissolve: the cut is where OTIO puts it
    (0, 12, 54, 1.25),  # EDL/AAF style (dissolve starts at the cut): cut at its midpoint
])
def test_transition_cuts_at_its_midpoint(tmp_path: Path, in_frames: int, out_frames: int,
                                         cut: int, b_source_in: float) -> None:
    dissolve = otio.schema.Transition(in_offset=otio.opentime.RationalTime(in_frames, 24),
                                      out_offset=otio.opentime.RationalTime(out_frames, 24))
    track = video_track([media_clip("A", None, 0, 48, 24), dissolve,
                         media_clip("B", None, 24, 48, 24)])
    save(edit("dissolve", [track], 24), tmp_path / "dissolve.otio")
    _, reel = read_timeline(tmp_path / "dissolve.otio")
    assert [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        ("A", 0, cut), ("B", cut, 96 - cut)]
    assert reel.shots[1].source_in_s == pytest.approx(b_source_in)


def test_nested_stack_is_flattened_with_its_time_mapping(tmp_path: Path) -> None:
    inner = otio.schema.Track(name="inner", kind=otio.schema.TrackKind.Video)
    inner.extend([media_clip("N1", None, 0, 24, 24), media_clip("N2", None, 100, 24, 24)])
    overlay = otio.schema.Track(name="inner V2", kind=otio.schema.TrackKind.Video)
    overlay.extend([gap(30, 24), media_clip("N3", None, 0, 6, 24)])
    nested = otio.schema.Stack(name="nest", children=[inner, overlay],
                               source_range=tr(12, 24, 24))  # shows nest frames 12..36
    track = video_track([media_clip("A", None, 0, 24, 24), nested,
                         media_clip("B", None, 0, 24, 24)])
    save(edit("nested", [track], 24), tmp_path / "nested.otio")
    _, reel = read_timeline(tmp_path / "nested.otio")
    got = [(s.clip_name, s.record_in_frame, s.duration_frames, round(s.source_in_s * 24))
           for s in reel.shots]
    assert got == [("A", 0, 24, 0), ("N1", 24, 12, 12), ("N2", 36, 6, 100),
                   ("N3", 42, 6, 0), ("B", 48, 24, 0)]


def test_generators_sit_beneath_picture_and_black_is_a_gap(tmp_path: Path) -> None:
    def generator(name: str, kind: str, frames: int) -> otio.schema.Clip:
        return otio.schema.Clip(name=name, source_range=tr(0, frames, 24),
                                media_reference=otio.schema.GeneratorReference(
                                    generator_kind=kind))

    v1 = video_track([media_clip("A", None, 0, 48, 24), generator("slug", "Slug", 24),
                      generator("bars", "SMPTEBars", 24)])
    v2 = video_track([generator("title", "Text", 60)], name="V2")  # a title over A and black
    save(edit("gen", [v1, v2], 24), tmp_path / "gen.otio")
    _, reel = read_timeline(tmp_path / "gen.otio")
    got = [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]
    assert got == [("A", 0, 48), ("title", 48, 12), ("bars", 72, 24)]
    assert "generator clip" in reel.shots[1].skipped_reason


def test_zero_length_clip_is_a_skipped_shot(tmp_path: Path) -> None:
    track = video_track([media_clip("A", None, 0, 24, 24), media_clip("Z", None, 5, 0, 24),
                         media_clip("B", None, 0, 24, 24)])
    save(edit("zero", [track], 24), tmp_path / "zero.otio")
    _, reel = read_timeline(tmp_path / "zero.otio")
    assert [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        ("A", 0, 24), ("Z", 24, 0), ("B", 24, 24)]
    assert "zero-length clip 'Z'" in reel.shots[1].skipped_reason


def test_foley_hints_from_markers_and_metadata(tmp_path: Path) -> None:
    a = media_clip("A", None, 100, 24, 24, markers=[("FOLEY: footsteps gravel", 110),
                                                    ("colour note", 105)])
    b = media_clip("B", None, 0, 24, 24)
    c = media_clip("C", None, 0, 24, 24)
    d = media_clip("D", None, 0, 24, 24, metadata={"foleyflow": {"foley": "cloth rustle"}})
    track = video_track([a, b, c, d])
    track.markers.append(otio.schema.Marker(name="note", marked_range=tr(30, 0, 24),
                                            comment="FOLEY: door slam"))
    tl = edit("hints", [track], 24, 86400)
    tl.tracks.markers.append(otio.schema.Marker(name="foley: glass set down",
                                                marked_range=tr(50, 1, 24)))
    save(tl, tmp_path / "hints.otio")
    _, reel = read_timeline(tmp_path / "hints.otio")
    assert [s.foley_hint for s in reel.shots] == [
        "footsteps gravel", "door slam", "glass set down", "cloth rustle"]


# --- clocks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rate, num, den, start, expected", [
    (24, 24, 1, 86400, "01:00:00:00"),
    (24000 / 1001, 24000, 1001, 86400, "01:00:00:00"),
    (23.976, 24000, 1001, 86400 + 12, "01:00:00:12"),
    (25, 25, 1, 90000, "01:00:00:00"),
])
def test_start_timecode_and_rate(tmp_path: Path, rate: float, num: int, den: int, start: int,
                                 expected: str) -> None:
    track = video_track([gap(24, rate), media_clip("A", None, 0, 48, rate)])
    save(edit("clock", [track], rate, start), tmp_path / "clock.otio")
    _, reel = read_timeline(tmp_path / "clock.otio")
    assert (reel.rate_num, reel.rate_den, reel.start_frame, reel.start_timecode) == (
        num, den, start, expected)
    assert reel.fps == pytest.approx(num / den)
    assert reel.shots[0].record_in_frame == 24
    assert reel.shots[0].record_in_s == pytest.approx(24 * den / num)


DF_EDL = """TITLE: DROP REEL
FCM: DROP FRAME

001  A001     V     C        13:00:00;00 13:00:02;00 01:00:00;00 01:00:02;00
* FROM CLIP NAME:  A001
002  B002     V     C        14:00:00;00 14:01:00;02 01:00:59;28 01:02:00;02
* FROM CLIP NAME:  B002
"""


def test_drop_frame_edl(tmp_path: Path) -> None:
    (tmp_path / "df.edl").write_text(DF_EDL)
    _, reel = read_timeline(tmp_path / "df.edl", fps=29.97)
    assert (reel.rate_num, reel.rate_den, reel.drop_frame) == (30000, 1001, True)
    assert reel.start_timecode == "01:00:00;00" and reel.start_frame == 107892
    b = reel.shots[1]
    assert timecode(reel.start_frame + b.record_in_frame, 30000, 1001, True) == "01:00:59;28"
    assert timecode(reel.start_frame + b.record_in_frame + b.duration_frames,
                    30000, 1001, True) == "01:02:00;02"


def test_mixed_source_rates_in_a_24fps_edit(tmp_path: Path) -> None:
    track = video_track([
        media_clip("fifteen", None, 30, 30, 15),  # 2 s into the file, 2 s long
        media_clip("twenty-one-five", None, 43, 43, 21.5),
        media_clip("ntsc", None, 60, 60, 30000 / 1001),
        media_clip("camera-tc", "cam.mov", 24, 24, 24, media_start=86400, media_duration=2400),
    ])
    save(edit("mixed", [track], 24, 86400), tmp_path / "mixed.otio")
    _, reel = read_timeline(tmp_path / "mixed.otio")
    assert [(s.record_in_frame, s.duration_frames) for s in reel.shots] == [
        (0, 48), (48, 48), (96, 48), (144, 24)]
    assert [s.source_rate for s in reel.shots] == pytest.approx([15, 21.5, 30000 / 1001, 24])
    assert [s.source_in_s for s in reel.shots] == pytest.approx([2.0, 2.0, 2.002, 1.0])
    assert reel.shots[0].duration_s == pytest.approx(2.0)


def test_source_range_outside_media_is_skipped(tmp_path: Path) -> None:
    (clip_file,) = touch(tmp_path, "A001.mov")
    late = media_clip("A001", clip_file, 14400, 24, 24, media_duration=240)
    save(edit("outside", [video_track([late])], 24), tmp_path / "outside.otio")
    _, reel = read_timeline(tmp_path / "outside.otio")
    why = reel.shots[0].skipped_reason
    assert why.startswith("source range 00:10:00:00–00:10:01:00 lies outside media A001.mov")
    assert "duration 10.00 s" in why


# --- media ------------------------------------------------------------------------------------

def test_media_resolution(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    root = tmp_path / "media root"
    touch(cut, "media/A001.mov")
    touch(root, "day 1/B002.mov", "day 2/card 3/c003.MOV", "D004.mxf")
    odd = unicodedata.normalize("NFD", "Szene 3 Übergang.mov")
    (uni,) = touch(tmp_path / "Drehtag 1 – Café", odd)
    track = video_track([
        media_clip("A001", "media/A001.mov", 0, 24, 24),  # relative to the timeline
        media_clip("B002", "/shoot/lost drive/B002.mov", 0, 24, 24),  # basename under root
        media_clip("C003", None, 0, 24, 24),  # by clip name, no extension, any case
        media_clip("x", None, 0, 24, 24, url="file:///elsewhere/D004.mxf"),
        media_clip("Übergang", uni.with_name(unicodedata.normalize("NFC", odd)), 0, 24, 24),
        media_clip("E005", "/shoot/E005.mov", 0, 24, 24),
    ])
    save(edit("media", [track], 24), cut / "media.otio")
    _, reel = read_timeline(cut / "media.otio", media_root=root)
    paths = [s.source_path for s in reel.shots]
    assert paths[0] == str(cut / "media/A001.mov")
    assert paths[1] == str(root / "day 1/B002.mov")
    assert paths[2] == str(root / "day 2/card 3/c003.MOV")
    assert paths[3] == str(root / "D004.mxf")
    assert paths[4] and unicodedata.normalize("NFC", paths[4]) == unicodedata.normalize(
        "NFC", str(uni))
    assert all(Path(p).is_absolute() for p in paths[:5])
    assert paths[5] is None
    why = reel.shots[5].skipped_reason
    assert why.startswith("media not found: E005.mov (looked in ") and str(root) in why
    assert all(s.skipped_reason is None for s in reel.shots[:5])


def test_edl_reel_names_find_media(tmp_path: Path) -> None:
    (tmp_path / "cut.edl").write_text(
        "TITLE: REEL 2\n\n"
        "001  A001     V     C        00:00:01:00 00:00:02:00 01:00:00:00 01:00:01:00\n"
        "* LOC: 00:00:01:06 RED     FOLEY: keys jingle\n"
        "002  B002     V     C        00:00:00:12 00:00:01:12 01:00:01:00 01:00:02:00\n"
        "* FROM CLIP NAME:  B002_take 2\n"
        "* LOC: 01:00:01:12 YELLOW  FOLEY: body fall\n")
    touch(tmp_path / "media", "A001.mov", "B002_take 2.mp4")
    _, reel = read_timeline(tmp_path / "cut.edl", fps=24, media_root=tmp_path / "media")
    assert reel.name == "REEL 2" and reel.start_timecode == "01:00:00:00"
    assert [Path(s.source_path).name for s in reel.shots] == ["A001.mov", "B002_take 2.mp4"]
    assert [s.source_in_s for s in reel.shots] == pytest.approx([1.0, 0.5])
    # locators: source timecode (OTIO's reading) or record timecode (Avid's)
    assert [s.foley_hint for s in reel.shots] == ["keys jingle", "body fall"]


def test_otioz_bundle_media_is_unpacked_and_found(tmp_path: Path) -> None:
    (clip_file,) = touch(tmp_path / "src", "A001.mov")
    tl = edit("bundle", [video_track([media_clip("A001", clip_file, 0, 24, 24)])], 24)
    otio.adapters.write_to_file(tl, str(tmp_path / "reel.otioz"))
    clip_file.unlink()
    _, reel = read_timeline(tmp_path / "reel.otioz")
    assert reel.shots[0].source_path == str(tmp_path / "reel.otioz.media/media/A001.mov")


def test_reel_name_is_safe_in_file_names(tmp_path: Path) -> None:
    save(edit("Reel 1/2: Größe", [video_track([media_clip("A", None, 0, 1, 24)])], 24),
         tmp_path / "r.otio")
    assert read_timeline(tmp_path / "r.otio")[1].name == "Reel 1_2_ Größe"
    save(edit("", [video_track([media_clip("A", None, 0, 1, 24)])], 24), tmp_path / "stem.otio")
    assert read_timeline(tmp_path / "stem.otio")[1].name == "stem"


# --- bad input --------------------------------------------------------------------------------

def test_edl_needs_fps(tmp_path: Path) -> None:
    (tmp_path / "cut.edl").write_text(DF_EDL)
    with pytest.raises(TimelineError, match=r"cut\.edl.*--fps"):
        read_timeline(tmp_path / "cut.edl")


def _audio_only(p: Path) -> None:
    tl = otio.schema.Timeline(name="sound")
    tl.tracks.append(otio.schema.Track(kind=otio.schema.TrackKind.Audio))
    save(tl, p)


@pytest.mark.parametrize("name, write, expected", [
    ("garbage.otio", lambda p: p.write_bytes(os.urandom(512)), "could not read"),
    ("garbage.aaf", lambda p: p.write_bytes(b"not a compound file" * 40), "could not read"),
    ("garbage.xml", lambda p: p.write_text("<html><body>hi</body></html>"), "not a Final Cut"),
    ("bad.xml", lambda p: p.write_text("<xmeml version='4'><sequence>"), "could not read"),
    ("garbage.edl", lambda p: p.write_text("hello world\n"), "could not read|no video track"),
    ("empty.otioz", lambda p: p.write_bytes(b""), "not an .otioz"),
    ("clip.otio", lambda p: save(media_clip("A", None, 0, 1, 24), p), "not an edit"),
    ("sound.otio", _audio_only, "no video track"),
    ("movie.mov", lambda p: p.write_bytes(b""), "not a timeline format"),
    ("missing.otio", lambda p: None, "not found"),
])
def test_bad_files_raise_one_timeline_error(tmp_path: Path, name: str, write,
                                            expected: str) -> None:
    p = tmp_path / name
    write(p)
    with pytest.raises(TimelineError, match=expected) as err:
        read_timeline(p, fps=24)
    assert str(p) in str(err.value)


def test_every_adapter_sample_parses_or_is_refused_clearly() -> None:
    samples = sorted(p for p in SAMPLES.glob("*/*") if p.is_file() and not p.name.startswith("."))
    assert samples, (f"no adapter sample files in {SAMPLES}: run "
                     f"scripts/fetch_adapter_samples.sh (the Makefile does before the tests)")
    parsed, refused = [], []
    for p in samples:
        fps = (25 if "25fps" in p.name else 24) if p.suffix.lower() == ".edl" else None
        try:
            _, reel = read_timeline(p, fps=fps)
        except TimelineError as exc:
            assert str(p) in str(exc) and " — " in str(exc), f"unclear message: {exc}"
            refused.append(p.name)
            continue
        assert isinstance(reel, ReelSpec), p
        assert all(s.duration_frames >= 0 and s.record_in_frame >= 0 for s in reel.shots), p
        ends = [(s.record_in_frame, s.record_in_frame + s.duration_frames) for s in reel.shots]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends)), f"{p}: shots overlap"
        assert len({s.name for s in reel.shots}) == len(reel.shots), p
        parsed.append(p.name)
    assert len(parsed) > len(refused)
