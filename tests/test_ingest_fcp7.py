"""tasks.ingest_fcp7: Final Cut Pro 7 XML read as Final Cut plays it — nested sequences,
disabled clips and tracks, Time Remap, and clips whose `<out>` disagrees with their record side.

Small xmeml documents written here as FCP7 / Premiere write them, over a real barcoded movie
(`models.scenes`, ffmpeg): a shot's proxy is cut as the proxy stage cuts it and its frames read
back, so "the right source times" means the right picture."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.scenes import SceneSpec, read_barcode, render_scene
from tasks import media
from tasks.ingest import ReelSpec, ShotSpec, TimelineError, read_timeline
from tasks.prepare import file_time

SAMPLES = Path(os.environ.get("FOLEY_ADAPTER_SAMPLES",
                              Path(__file__).resolve().parents[1] / ".cache" / "adapter-samples"))


# --- xmeml, as FCP7 writes it -----------------------------------------------------------------

def _rate(timebase: int = 24) -> str:
    return f"<rate><timebase>{timebase}</timebase><ntsc>FALSE</ntsc></rate>"


def _file(movie: Path, frames: int = 192) -> str:
    return (f'<file id="file-{movie.stem}"><name>{movie.name}</name>'
            f"<pathurl>file://localhost{movie}</pathurl>{_rate()}<duration>{frames}</duration>"
            f"<media><video><samplecharacteristics><width>160</width><height>90</height>"
            f"</samplecharacteristics></video></media></file>")


def _time_remap(speed: float, reverse: bool = False, variable: bool = False) -> str:
    def param(pid: str, value: object) -> str:
        return f"<parameter><parameterid>{pid}</parameterid><name>{pid}</name>" \
               f"<value>{value}</value></parameter>"

    return ("<filter><effect><name>Time Remap</name><effectid>timeremap</effectid>"
            "<effectcategory>motion</effectcategory><effecttype>motion</effecttype>"
            "<mediatype>video</mediatype>" + param("variablespeed", int(variable))
            + param("speed", speed) + param("reverse", "TRUE" if reverse else "FALSE")
            + param("frameblending", "FALSE") + "</effect></filter>")


def _clip(name: str, start: int, end: int, in_: int, out: int, source: str, *,
          enabled: bool = True, extra: str = "") -> str:
    """A clipitem; `source` is a `<file>` (a shot) or a `<sequence>` (a nest)."""
    return (f'<clipitem id="{name}"><name>{name}</name>'
            f"<enabled>{'TRUE' if enabled else 'FALSE'}</enabled><duration>192</duration>"
            f"{_rate()}<start>{start}</start><end>{end}</end><in>{in_}</in><out>{out}</out>"
            f"{source}{extra}</clipitem>")


def _track(*items: str, enabled: bool = True) -> str:
    return f"<track>{''.join(items)}<enabled>{'TRUE' if enabled else 'FALSE'}</enabled></track>"


def _sequence(name: str, *tracks: str, sid: str = "sequence-1", audio: str = "") -> str:
    """A sequence starting at 01:00:00:00, 24 fps."""
    return (f'<sequence id="{sid}"><name>{name}</name><duration>192</duration>{_rate()}'
            f"<timecode>{_rate()}<string>01:00:00:00</string><frame>86400</frame>"
            f"<displayformat>NDF</displayformat></timecode>"
            f"<media><video>{''.join(tracks)}</video>{audio}</media></sequence>")


def _xml(path: Path, sequence: str) -> Path:
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>\n'
                    f'<xmeml version="5">{sequence}</xmeml>\n')
    return path


@pytest.fixture(scope="module")
def movie(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 24 fps picture whose every frame carries its index as a barcode."""
    path = tmp_path_factory.mktemp("media") / "A001.mp4"
    render_scene(SceneSpec(kind="static", fps=24, duration_s=8.0, size=(160, 90),
                           barcode=True), path)
    return path


def _shots(reel: ReelSpec) -> list[tuple[str, int, int]]:
    return [(s.clip_name, s.record_in_frame, s.duration_frames) for s in reel.shots]


def _proxy_frames(shot: ShotSpec, out: Path) -> list[int]:
    """Cut the shot's proxy as the proxy stage does; the source frames it holds."""
    info = media.probe(shot.source_path, scan_packets=False)
    start = file_time(info, shot.source_in_s, shot.duration_s)
    media.make_proxy(shot.source_path, start, shot.duration_s, shot.source_rate, out, width=160)
    return [read_barcode(f) for f in media.iter_frames(out)]


# --- nested sequences -------------------------------------------------------------------------

def test_nested_sequence_picture_becomes_shots_at_its_record_and_source_times(
        movie: Path, tmp_path: Path) -> None:
    """Z, then the nest (record 24–72, used from its frame 24): X's frames 24–47, then Y's
    100–123 — the nest's own timecode (01:00:00:00) does not move its <in>."""
    nest = _sequence("Nest 1", _track(_clip("X", 0, 48, 0, 48, _file(movie)),
                                      _clip("Y", 48, 96, 100, 148, _file(movie))),
                     sid="nest-1")
    xml = _xml(tmp_path / "nest.xml", _sequence("Reel Nest", _track(
        _clip("Z", 0, 24, 0, 24, _file(movie)), _clip("Nest 1", 24, 72, 24, 72, nest))))
    _, reel = read_timeline(xml)
    assert _shots(reel) == [("Z", 0, 24), ("X", 24, 24), ("Y", 48, 24)]
    assert all(s.skipped_reason is None for s in reel.shots), reel.shots
    assert [s.source_in_s for s in reel.shots] == pytest.approx([0.0, 1.0, 100 / 24])
    assert _proxy_frames(reel.shots[1], tmp_path / "x.mp4") == list(range(24, 48))
    assert _proxy_frames(reel.shots[2], tmp_path / "y.mp4") == list(range(100, 124))


def test_the_adapters_premiere_sample_keeps_its_nest() -> None:
    """premiere_example.xml's clipitem-5 nests 320 frames (two clips) at record 636."""
    sample = SAMPLES / "otio_fcp_adapter" / "premiere_example.xml"
    if not sample.exists():
        pytest.skip(f"no adapter samples in {SAMPLES}: run scripts/fetch_adapter_samples.sh")
    _, reel = read_timeline(sample)
    assert ("sc01_sh010_anim.mov", 636, 100) in _shots(reel)
    assert ("sc01_sh030_anim.mov", 736, 220) in _shots(reel)


@pytest.mark.parametrize("media_xml", [
    "",  # a <sequence> with no <media> at all
    "<media><audio><track>__CLIP__</track></audio></media>",  # sound only
], ids=["no media", "sound only"])
def test_a_nest_without_readable_picture_is_refused_by_name(movie: Path, tmp_path: Path,
                                                            media_xml: str) -> None:
    inner = media_xml.replace("__CLIP__", _clip("S", 0, 48, 0, 48, _file(movie)))
    nest = f'<sequence id="nest-2"><name>Nest 2</name><duration>48</duration>{_rate()}' \
           f"{inner}</sequence>"
    xml = _xml(tmp_path / "empty_nest.xml", _sequence("Reel", _track(
        _clip("Z", 0, 24, 0, 24, _file(movie)), _clip("Nest 2", 24, 72, 0, 48, nest))))
    with pytest.raises(TimelineError) as err:
        read_timeline(xml)
    msg = str(err.value)
    assert msg.startswith(f"{xml}: nested sequence 'Nest 2' (V1, record 01:00:01:00) "), msg
    assert "flatten nested sequence 'Nest 2'" in msg and "\n" not in msg


# --- disabled clips and tracks ----------------------------------------------------------------

def test_a_disabled_clip_shows_what_lies_beneath(movie: Path, tmp_path: Path) -> None:
    xml = _xml(tmp_path / "clip_off.xml", _sequence(
        "Reel", _track(_clip("A", 0, 48, 24, 72, _file(movie))),
        _track(_clip("D", 0, 48, 0, 48, _file(movie), enabled=False))))
    _, reel = read_timeline(xml)
    assert _shots(reel) == [("A", 0, 48)]
    assert reel.shots[0].source_in_s == pytest.approx(1.0)


def test_a_disabled_track_shows_what_lies_beneath(movie: Path, tmp_path: Path) -> None:
    xml = _xml(tmp_path / "track_off.xml", _sequence(
        "Reel", _track(_clip("A", 0, 48, 24, 72, _file(movie))),
        _track(_clip("B", 0, 48, 0, 48, _file(movie)), enabled=False)))
    timeline, reel = read_timeline(xml)
    assert _shots(reel) == [("A", 0, 48)]
    assert [t.enabled for t in timeline.video_tracks()] == [True, False]


def test_a_disabled_clip_inside_a_nest_shows_nothing(movie: Path, tmp_path: Path) -> None:
    nest = _sequence("Nest", _track(_clip("X", 0, 24, 0, 24, _file(movie)),
                                    _clip("Y", 24, 48, 48, 72, _file(movie), enabled=False)),
                     sid="nest-3")
    xml = _xml(tmp_path / "nest_off.xml", _sequence("Reel", _track(
        _clip("Nest", 0, 48, 0, 48, nest))))
    _, reel = read_timeline(xml)
    assert _shots(reel) == [("X", 0, 24)]


# --- Time Remap -------------------------------------------------------------------------------

def test_time_remapped_clips_are_skipped_with_the_reason_and_the_rest_stay_put(
        movie: Path, tmp_path: Path) -> None:
    """FCP7 writes a reverse clip as speed -100 / reverse TRUE, Premiere as 100 / TRUE; a ramp
    (variablespeed 1) carries its average speed. A remap left at 100 % is no retime."""
    f = _file(movie)
    xml = _xml(tmp_path / "remap.xml", _sequence("Reel", _track(
        _clip("A", 0, 48, 24, 72, f),
        _clip("B", 48, 96, 24, 48, f, extra=_time_remap(50)),
        _clip("C", 96, 144, 24, 72, f, extra=_time_remap(-100, reverse=True)),
        _clip("P", 144, 168, 24, 48, f, extra=_time_remap(100, reverse=True)),
        _clip("E", 168, 192, 24, 72, f, extra=_time_remap(200)),
        _clip("R", 192, 216, 0, 36, f, extra=_time_remap(150, variable=True)),
        _clip("F", 216, 240, 0, 24, f, extra=_time_remap(100)))))
    _, reel = read_timeline(xml)
    assert _shots(reel) == [("A", 0, 48), ("B", 48, 48), ("C", 96, 48), ("P", 144, 24),
                            ("E", 168, 24), ("R", 192, 24), ("F", 216, 24)]
    why = [s.skipped_reason or "" for s in reel.shots]
    assert why[0] == "" and why[6] == "", why
    assert why[1].startswith("speed change 50 % (Time Remap on clip 'B') — ")
    assert why[2].startswith("reverse clip (-100 %, Time Remap on clip 'C') — ")
    assert why[3].startswith("reverse clip (-100 %, Time Remap on clip 'P') — ")
    assert why[4].startswith("speed change 200 % (Time Remap on clip 'E') — ")
    assert why[5].startswith("speed change 150 % (Time Remap (variable speed) on clip 'R') — ")


# --- <out> against the record side: refused like an EDL event without M2 ------------------------

@pytest.mark.parametrize("clip, expected", [
    (_clip("B", 48, 96, 24, 96, "__FILE__"),
     "clip 'B' (V1, record 01:00:02:00) lasts 48 frames on the record side (<start> 48, <end> "
     "96) but 72 frames on the source side (<in> 24, <out> 96), with no Time Remap (speed) "
     "filter — fix its in and out points"),
    (_clip("B", 48, 96, 72, 24, "__FILE__"),
     "clip 'B' (V1, record 01:00:02:00) has <out> 24 before <in> 72 and no reverse Time "
     "Remap — fix its in and out points"),
    (_clip("B", 48, 96, 0, 48, "__FILE__", extra=_time_remap(100, variable=True)),
     "clip 'B' (V1, record 01:00:02:00) has a variable-speed Time Remap (a speed ramp "
     "averaging 100 %), which foleyflow cannot follow — render the ramp"),
], ids=["lengths differ", "out before in", "ramp averaging 100 %"])
def test_a_clip_whose_out_disagrees_is_refused_naming_the_clip_and_fields(
        movie: Path, tmp_path: Path, clip: str, expected: str) -> None:
    xml = _xml(tmp_path / "bad.xml", _sequence("Reel", _track(
        _clip("A", 0, 48, 0, 48, _file(movie)), clip.replace("__FILE__", _file(movie)))))
    with pytest.raises(TimelineError) as err:
        read_timeline(xml)
    assert str(err.value).startswith(f"{xml}: {expected}"), str(err.value)


def test_cli_refuses_out_before_in_with_exit_2_and_writes_nothing(movie: Path,
                                                                  tmp_path: Path) -> None:
    from flows.cli import app

    xml = _xml(tmp_path / "outin.xml", _sequence("Reel", _track(
        _clip("A", 0, 48, 72, 24, _file(movie)))))
    out = tmp_path / "delivery"
    res = CliRunner().invoke(app, ["run", str(xml), "--out", str(out)])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {xml}: clip 'A' "), lines
    assert "<out> 24 before <in> 72" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("a_out, b_in, b_out", [(48, 12, 60), (60, 0, 60)])
def test_clips_at_a_dissolve_are_not_refused(movie: Path, tmp_path: Path, a_out: int,
                                             b_in: int, b_out: int) -> None:
    """A centred dissolve over record 36–60 (cut at 48): A (start 0, end -1) and B (start -1,
    end 96) count <in>–<out> from cut to cut, as Resolve writes them, or over the whole
    dissolve; neither is a length mismatch."""
    dissolve = ("<transitionitem><start>36</start><end>60</end><alignment>center</alignment>"
                "<effect><name>Cross Dissolve</name><effectid>Cross Dissolve</effectid>"
                "<effecttype>transition</effecttype><mediatype>video</mediatype></effect>"
                "</transitionitem>")
    xml = _xml(tmp_path / "dissolve.xml", _sequence("Reel", _track(
        _clip("A", 0, -1, 0, a_out, _file(movie)), dissolve,
        _clip("B", -1, 96, b_in, b_out, _file(movie)))))
    _, reel = read_timeline(xml)
    assert [s.clip_name for s in reel.shots] == ["A", "B"]
    assert reel.shots[0].record_in_frame == 0 and reel.shots[1].record_in_frame == 48
