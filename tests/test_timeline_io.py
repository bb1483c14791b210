"""tasks.timeline_io: a FOLEY track added, written by the real adapters, read back by ingest."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import aaf2
import opentimelineio as otio
import pytest

from tasks.ingest import ReelSpec, TimelineError, read_timeline
from tasks.timeline_io import (FoleyClip, TimelineWriteError, add_foley_track, relink_picture,
                               write_timeline)
from tests.fixtures_otio import edit, gap, media_clip, save, touch, video_track

NTSC = 30000 / 1001


def _cut(folder: Path, rate: float, start: int, *, drop: bool = False,
         camera_tc: bool = True) -> tuple[otio.schema.Timeline, ReelSpec]:
    """A two-track edit with a dissolve, mixed source rates and (optionally) camera timecode."""
    a, b, c, d = touch(folder / "media", "A001 café.mov", "B002.mov", "C003.mov", "D004.mov")
    tc = 86400 if camera_tc else 0
    v1 = video_track([
        media_clip("A001", a, 12, 48, 24, media_start=tc, media_duration=480),
        otio.schema.Transition(in_offset=otio.opentime.RationalTime(6, rate),
                               out_offset=otio.opentime.RationalTime(6, rate)),
        media_clip("B002", b, 30, 30, 15, media_duration=300),
        gap(12, rate),
        media_clip("C003", c, 60, 90, NTSC, media_duration=900),
    ])
    v2 = video_track([gap(24, rate), media_clip("D004", d, 24, 12, rate, media_duration=240)],
                     name="V2")
    tl = edit("Reel 7", [v1, v2], rate, start)
    if drop:
        tl.metadata["foleyflow"] = {"drop_frame": True}
    return read_timeline(save(tl, folder / "cut.otio"))


def _foley(delivery: Path, reel: ReelSpec) -> list[FoleyClip]:
    clips = []
    for s in reel.shots:
        rel = f"shots/{s.name}/{reel.name}_{s.name}_foley_stereo.wav"
        touch(delivery, rel)
        clips.append(FoleyClip(s.name, s.record_in_frame, s.duration_frames, rel,
                               metadata={"envelope_version": 1}))
    return clips


def _foley_clips(tl: otio.schema.Timeline) -> list[tuple[str, int, str]]:
    """(clip name, record frame, media path) of the audio track holding our stems.

    The AAF reader turns the relative locator "shots/…" into "file://shots/…"."""
    rate = tl.global_start_time.rate if tl.global_start_time else 24
    best: list[tuple[str, int, str]] = []
    for track in tl.audio_tracks():
        found = [(c.name, round(c.range_in_parent().start_time.value_rescaled_to(rate)),
                  c.media_reference.target_url.removeprefix("file://"))
                 for c in track.find_clips()
                 if c.name.endswith(" Foley")]
        best = max(best, found, key=len)
    return best


@pytest.mark.parametrize("ext", [".otio", ".xml", ".aaf", ".edl"])
@pytest.mark.parametrize("rate, start, drop", [(24, 86400, False), (NTSC, 107892, True),
                                               (NTSC, 108000, False), (24000 / 1001, 0, False)])
def test_round_trip(tmp_path: Path, ext: str, rate: float, start: int, drop: bool) -> None:
    timeline, reel = _cut(tmp_path, rate, start, drop=drop, camera_tc=ext != ".edl")
    delivery = tmp_path / "delivery"
    clips = _foley(delivery, reel)
    out = delivery / f"{reel.name}{ext}"
    write_timeline(add_foley_track(timeline, clips, rate_num=reel.rate_num,
                                   rate_den=reel.rate_den), out)
    back_tl, back = read_timeline(out, fps=reel.fps)

    assert (back.rate_num, back.rate_den, back.start_timecode, back.drop_frame) == (
        reel.rate_num, reel.rate_den, reel.start_timecode, reel.drop_frame)
    assert back.name == reel.name
    assert [(s.name, s.clip_name, s.record_in_frame, s.duration_frames) for s in back.shots] == [
        (s.name, s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]
    half_frame = 0.5 / reel.fps
    for got, want in zip(back.shots, reel.shots, strict=True):
        assert got.source_in_s == pytest.approx(want.source_in_s, abs=half_frame), got.name
        assert got.source_path == want.source_path and got.skipped_reason is None
    if ext != ".edl":  # the EDL writer is picture-only
        assert _foley_clips(back_tl) == [
            (f"{c.shot} Foley", c.record_in_frame, c.media_path) for c in clips]
    if ext in (".otio", ".xml"):  # each stem starts where its BWF time stamp says: record TC
        starts = {c.name: round(c.media_reference.available_range.start_time
                                .value_rescaled_to(reel.fps))
                  for track in back_tl.audio_tracks() for c in track.find_clips()
                  if c.name.endswith(" Foley")}
        assert starts == {f"{c.shot} Foley": reel.start_frame + c.record_in_frame
                          for c in clips}
    if ext == ".xml":  # …labelled as the reel counts: drop-frame at 29.97 DF
        doc = ET.parse(out)
        labels = {f.findtext("name"): f.findtext("timecode/displayformat")
                  for f in doc.iter("file") if (f.findtext("name") or "").endswith(".wav")}
        assert len(labels) == len(clips) and set(labels.values()) == {"DF" if drop else "NDF"}


def test_fcpxml_stems_play_from_their_first_sample(tmp_path: Path) -> None:
    """FCPX counts a clip's media from 0 on the clip's own clock: a stem whose range sat on
    its record timecode (01:00:00:00) would play an hour into a 3 s file — nothing."""
    timeline, reel = _cut(tmp_path, 24, 86400)
    out = tmp_path / "delivery" / "reel.fcpxml"
    clips = _foley(out.parent, reel)
    write_timeline(add_foley_track(timeline, clips, rate_num=24, rate_den=1), out)
    foley = [c for c in ET.parse(out).iter("clip") if c.get("name", "").endswith(" Foley")]
    assert len(foley) == len(clips)
    assert {c.get("start", "0s") for c in foley} == {"0s"}, [c.attrib for c in foley]


def test_round_trip_fcpxml_at_24fps(tmp_path: Path) -> None:
    timeline, reel = _cut(tmp_path, 24, 0)
    out = tmp_path / "delivery" / "reel.fcpxml"
    write_timeline(add_foley_track(timeline, _foley(out.parent, reel), rate_num=24, rate_den=1),
                   out)
    _, back = read_timeline(out)
    assert [(s.name, s.record_in_frame, s.duration_frames, s.source_path) for s in back.shots] \
        == [(s.name, s.record_in_frame, s.duration_frames, s.source_path) for s in reel.shots]


def test_add_foley_track_places_clips_and_leaves_the_edit_alone(tmp_path: Path) -> None:
    timeline, _ = _cut(tmp_path, 24, 86400)
    n_tracks = len(timeline.tracks)
    clips = [FoleyClip("SH020", 30, 10, "shots/SH020/b.wav", channels=6),
             FoleyClip("SH010", 5, 20, "shots/SH010/a.wav")]
    out = add_foley_track(timeline, clips, rate_num=24, rate_den=1)
    assert len(timeline.tracks) == n_tracks and len(out.tracks) == n_tracks + 1
    track = out.tracks[-1]
    assert track.name == "FOLEY" and track.kind == otio.schema.TrackKind.Audio
    assert [type(c).__name__ for c in track] == ["Gap", "Clip", "Gap", "Clip"]
    first, second = track[1], track[3]
    assert first.range_in_parent().start_time.value == 5
    assert second.range_in_parent().start_time.value == 30
    assert second.metadata["foleyflow"]["shot"] == "SH020"
    assert second.metadata["foleyflow"]["channels"] == 6
    assert second.media_reference.target_url == "shots/SH020/b.wav"
    assert second.media_reference.available_range.duration.value == 10
    # the stem's media begins at its record timecode (01:00:00:00 + 30 frames), all of it used
    assert second.media_reference.available_range.start_time.value == 86400 + 30
    assert second.source_range == second.media_reference.available_range
    with pytest.raises(ValueError, match="overlaps"):
        add_foley_track(timeline, [FoleyClip("SH010", 0, 20, "a.wav"),
                                   FoleyClip("SH020", 10, 20, "b.wav")], rate_num=24, rate_den=1)


def test_aaf_carries_stable_mob_ids_and_24bit_stereo_stems(tmp_path: Path) -> None:
    timeline, reel = _cut(tmp_path, 24, 86400)
    edit_ = add_foley_track(timeline, _foley(tmp_path, reel), rate_num=24, rate_den=1)
    ids = []
    for name in ("one.aaf", "two.aaf"):
        write_timeline(edit_, tmp_path / name)
        with aaf2.open(str(tmp_path / name), "r") as f:
            masters = list(f.content.mastermobs())
            ids.append(sorted(str(m.mob_id) for m in masters))
            pcm = [m.descriptor for m in f.content.sourcemobs()
                   if isinstance(m.descriptor, aaf2.essence.PCMDescriptor)]
            assert pcm and all(d["Channels"].value == 2 for d in pcm)
            assert all(d["QuantizationBits"].value == 24 for d in pcm)
    assert ids[0] == ids[1]
    assert len(ids[0]) == len(set(ids[0])) >= 4 + len(reel.shots)  # picture media + stems
    assert all(mob_id.int != 0 for mob_id in [aaf2.mobid.MobID(u) for u in ids[0]])


def test_a_stems_new_sound_gets_a_new_mob_id(tmp_path: Path) -> None:
    """A re-conform after a retake writes the shot's new sound under the same file name; its
    AAF clip must not carry the MobID of the sound an editor's bin already holds (it would
    link to the old one). The other shots' stems, unchanged, keep theirs."""
    import dataclasses

    timeline, reel = _cut(tmp_path, 24, 86400)
    first = [dataclasses.replace(c, sha256=f"{i:064x}")
             for i, c in enumerate(_foley(tmp_path, reel))]
    retake = [dataclasses.replace(first[0], sha256="f" * 64), *first[1:]]
    ids = []
    for name, clips in (("first.aaf", first), ("retake.aaf", retake)):
        write_timeline(add_foley_track(timeline, clips, rate_num=24, rate_den=1), tmp_path / name)
        with aaf2.open(str(tmp_path / name), "r") as f:
            ids.append({m.name: str(m.mob_id) for m in f.content.mastermobs()})
    assert ids[0].keys() == ids[1].keys()
    changed = {n for n in ids[0] if ids[0][n] != ids[1][n]}
    assert changed == {f"{first[0].shot} Foley"}, changed


def test_edl_is_picture_only_flattened_with_fcm(tmp_path: Path) -> None:
    timeline, _ = _cut(tmp_path, NTSC, 107892, drop=True, camera_tc=False)
    out = tmp_path / "reel.edl"
    write_timeline(add_foley_track(timeline, [], rate_num=30000, rate_den=1001), out)
    text = out.read_text()
    assert text.splitlines()[1] == "FCM: DROP FRAME"
    assert "01:00:00;00" in text and "Foley" not in text


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    good, _ = _cut(tmp_path / "a", 24, 0)
    ntsc, _ = _cut(tmp_path / "b", 24000 / 1001, 0)
    out = tmp_path / "out" / "reel.fcpxml"
    write_timeline(good, out)
    before = out.read_bytes()
    with pytest.raises(TimelineWriteError, match=r"reel\.fcpxml.*23\.976"):
        write_timeline(ntsc, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["reel.fcpxml"]
    with pytest.raises(ValueError, match="cannot write"):
        write_timeline(good, tmp_path / "reel.mov")


SAMPLES = Path(__file__).resolve().parents[1] / ".cache" / "adapter-samples"
_AAF_TOO = {"premiere_example.xml", "nested_example.otio", "clip_example.otio",
            "empty_name_tags.xml", "dissolve_test_4.edl", "fcpx_project.fcpxml",
            "2997fps-DFTC.aaf", "transitions.aaf", "nested_stack.aaf", "speed_effects_small.edl"}


def _edl_fps(sample: Path) -> float | None:
    return (25 if "25fps" in sample.name else 24) if sample.suffix.lower() == ".edl" else None


def _sample_edits() -> list[Path]:
    """The adapter samples ingest accepts that have picture (the refused ones, and the exact
    message they get, are test_ingest's business)."""
    root = Path(os.environ.get("FOLEY_ADAPTER_SAMPLES", SAMPLES))
    accepted = []
    for p in sorted(p for p in root.glob("*/*") if p.is_file() and not p.name.startswith(".")):
        try:
            _, reel = read_timeline(p, fps=_edl_fps(p))
        except TimelineError:
            continue
        if any(s.duration_frames for s in reel.shots):
            accepted.append(p)
    return accepted


@pytest.mark.parametrize("sample", _sample_edits(), ids=lambda p: p.name)
def test_adapter_samples_survive_every_writer(tmp_path: Path, sample: Path) -> None:
    """Real edits (nested, layered, dissolves, generators, speed effects) written with a FOLEY
    track come back as the same shots; AAF (slow to write) for a varied subset."""
    timeline, reel = read_timeline(sample, fps=_edl_fps(sample))
    clips = [FoleyClip(s.name, s.record_in_frame, s.duration_frames, f"shots/{s.name}.wav")
             for s in reel.shots if s.duration_frames]
    edit_ = add_foley_track(timeline, clips, rate_num=reel.rate_num, rate_den=reel.rate_den)
    want = [(s.name, s.record_in_frame, s.duration_frames) for s in reel.shots
            if s.duration_frames]
    for ext in [".otio", ".xml", ".edl"] + ([".aaf"] if sample.name in _AAF_TOO else []):
        write_timeline(edit_, tmp_path / f"reel{ext}")
        back_tl, back = read_timeline(tmp_path / f"reel{ext}", fps=reel.fps)
        assert back.start_timecode == reel.start_timecode, ext
        assert [(s.record_in_frame, s.duration_frames) for s in back.shots
                if s.duration_frames] == [w[1:] for w in want], ext
        if ext != ".edl":
            assert [c[1] for c in _foley_clips(back_tl)] == [c.record_in_frame for c in clips]


@pytest.mark.parametrize("ext", [".xml", ".aaf", ".otio"])
def test_an_edl_s_picture_is_linked_in_the_delivered_edit(tmp_path: Path, ext: str) -> None:
    """An EDL names no file: the delivered edit points each picture clip at the file ingest
    found for its reel, on that file's timecode clock, so it opens online and re-reads to the
    same frames (it was offline: an empty <file> in the XML)."""
    from tests.test_ingest_source_tc import _edl, _media

    cam = _media(tmp_path, "CAM.mov", 4, "10:00:00:00")
    plain = _media(tmp_path, "PLAIN.mov", 4, None)
    edl = _edl(tmp_path, (
        "001  CAM      V     C        10:00:01:00 10:00:02:00 01:00:00:00 01:00:01:00\n"
        "* FROM CLIP NAME:  CAM\n"
        "002  PLAIN    V     C        00:00:02:00 00:00:03:00 01:00:01:00 01:00:02:00\n"))
    timeline, reel = read_timeline(edl, fps=24, media_root=tmp_path)
    assert [s.source_in_s for s in reel.shots] == pytest.approx([1.0, 2.0])
    assert relink_picture(timeline, [str(cam), str(plain)]) == 2
    out = tmp_path / "delivery" / f"reel{ext}"
    write_timeline(timeline, out)
    _, back = read_timeline(out)
    assert [(s.source_path, s.record_in_frame, s.duration_frames) for s in back.shots] == [
        (str(cam), 0, 24), (str(plain), 24, 24)]
    assert [s.source_in_s for s in back.shots] == pytest.approx([1.0, 2.0], abs=1e-6)
