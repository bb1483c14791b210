"""Broadcast WAV: samples round-trip through libsndfile, bext through our reader and ffmpeg."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf

from tasks.bwf import BwfWriter, read_bwf_info, time_reference_from_timecode, write_bwf

SR = 48000
LSB = 2.0**-23
HOUR = 172_800_000  # 01:00:00:00 at 48 kHz


def _audio(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.9, 0.9, (frames, channels))
    return x[:, 0] if channels == 1 else x


def _ffmpeg_metadata(path: Path) -> str:
    run = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True)
    return run.stderr


def test_time_reference_of_one_hour() -> None:
    assert time_reference_from_timecode("01:00:00:00", 24, SR) == HOUR
    assert time_reference_from_timecode("01:00:00:00", 25, SR) == HOUR
    assert time_reference_from_timecode("00:00:01:12", 24, SR) == SR + SR // 2
    # 23.976: timecode counts frames, the reference counts real samples
    assert time_reference_from_timecode("01:00:00:00", 24000 / 1001, SR) == 172_972_800


@pytest.mark.parametrize(("timecode", "fps", "num", "den"), [
    ("01:00:00:00", 23.976, 24000, 1001),
    ("01:00:00;00", 29.97, 30000, 1001),   # drop-frame: 01:00:00;00 is frame 107 892
    ("01:00:00;00", 59.94, 60000, 1001),
    ("00:10:00:00", 23.98, 24000, 1001),
])
def test_time_reference_of_the_rates_people_type(timecode: str, fps: float, num: int,
                                                 den: int) -> None:
    """23.976, 29.97 and 59.94 as typed (not 24000/1001 to the last digit) are the NTSC rates:
    the same reference as the exact fraction (OTIO refuses the typed float)."""
    import opentimelineio as otio

    frames = round(otio.opentime.from_timecode(timecode, num / den).value)
    assert time_reference_from_timecode(timecode, fps, SR) == round(frames * den * SR / num)
    assert time_reference_from_timecode(timecode, fps, SR) == \
        time_reference_from_timecode(timecode, num / den, SR)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_round_trip_within_one_lsb(tmp_path: Path, channels: int) -> None:
    audio = _audio(SR + 1, channels)  # odd frame count: mono data needs a pad byte
    path = tmp_path / "mix.wav"
    write_bwf(path, audio, SR, time_reference=HOUR, description="SH010 foley")
    back, sr = sf.read(path, dtype="float64")
    assert sr == SR
    assert back.shape == audio.shape
    assert np.max(np.abs(back - audio)) <= LSB
    assert sf.info(path).subtype == "PCM_24"


def test_ixml_names_the_channels_and_the_timecode_rate(tmp_path: Path) -> None:
    """The iXML a delivered file carries parses as XML, escapes names, and splits a time stamp
    past 2^32 samples (at 96 kHz, after 12:25:39) into HI / LO as the spec's readers join it."""
    import xml.etree.ElementTree as ET

    from tasks.bwf import ixml

    stamp = 23 * 3600 * 96000 + 5  # 23:00:00 and 5 samples at 96 kHz: more than 32 bits
    doc = ixml(project="Reel <1> & co", scene="SH010", note="a note", rate_num=30000,
               rate_den=1001, drop_frame=True, time_reference=stamp, sr=96000,
               tracks=[(c, f"{c}-5.1") for c in ("L", "R", "C", "LFE", "Ls", "Rs")])
    path = tmp_path / "s.wav"
    write_bwf(path, _audio(100, 6), 96000, time_reference=stamp, ixml=doc, channel_mask=0x3F)
    root = ET.fromstring(read_bwf_info(path)["ixml"])
    assert root.findtext("PROJECT") == "Reel <1> & co" and root.findtext("SCENE") == "SH010"
    speed = root.find("SPEED")
    assert speed is not None
    assert (speed.findtext("TIMECODE_RATE"), speed.findtext("TIMECODE_FLAG")) == ("30000/1001", "DF")
    hi, lo = (int(speed.findtext(f"TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_{k}") or -1) for k in ("HI", "LO"))
    assert hi == 1 and (hi << 32) + lo == stamp
    tracks = [(t.findtext("CHANNEL_INDEX"), t.findtext("NAME"), t.findtext("FUNCTION"))
              for t in root.iter("TRACK")]
    assert tracks[0] == ("1", "L", "L-5.1") and tracks[3] == ("4", "LFE", "LFE-5.1")
    assert root.findtext("TRACK_LIST/TRACK_COUNT") == "6" and len(tracks) == 6


def test_bext_read_back_and_placed_before_data(tmp_path: Path) -> None:
    path = tmp_path / "mix.wav"
    when = datetime(2024, 5, 17, 9, 30, 5)
    write_bwf(path, _audio(1000, 2), SR, time_reference=HOUR, description="REEL1 foley mix",
              originator_reference="run-42", origination_datetime=when,
              ixml="<BWFXML><PROJECT>REEL1</PROJECT></BWFXML>")
    info = read_bwf_info(path)
    assert info["samplerate"] == SR and info["channels"] == 2 and info["bits"] == 24
    assert info["frames"] == 1000
    assert info["time_reference"] == HOUR
    assert info["description"] == "REEL1 foley mix"
    assert info["originator"] == "foleyflow"
    assert info["originator_reference"] == "run-42"
    assert (info["origination_date"], info["origination_time"]) == ("2024-05-17", "09:30:05")
    assert info["version"] == 1
    assert info["coding_history"].startswith("A=PCM,F=48000,W=24,M=stereo")
    # 41 bytes as given: a newline inside the document makes the chunk even (see the RF64 test)
    assert info["ixml"] == "<BWFXML><PROJECT>REEL1</PROJECT></BWFXML>\n"
    raw = path.read_bytes()
    assert raw.index(b"bext") < raw.index(b"data")
    assert raw.index(b"iXML") < raw.index(b"data")
    assert len(raw) == int.from_bytes(raw[4:8], "little") + 8


def test_ffmpeg_reads_the_bext_chunk(tmp_path: Path) -> None:
    path = tmp_path / "mix.wav"
    write_bwf(path, _audio(4800, 2), SR, time_reference=HOUR, description="REEL1 foley mix")
    meta = _ffmpeg_metadata(path)
    assert re.search(r"time_reference\s*:\s*172800000", meta), meta
    assert re.search(r"comment\s*:\s*REEL1 foley mix", meta), meta
    assert "pcm_s24le" in meta and "48000 Hz" in meta


def test_ffmpeg_reads_four_channel_ambix(tmp_path: Path) -> None:
    path = tmp_path / "foa.wav"
    write_bwf(path, _audio(4800, 4), SR, time_reference=0)
    meta = _ffmpeg_metadata(path)
    assert "pcm_s24le" in meta and re.search(r"48000 Hz, (4 channels|4\.0)", meta), meta


def test_streaming_writer_equals_one_shot_write(tmp_path: Path) -> None:
    audio = _audio(10_007, 2, seed=3)
    when = datetime(2024, 1, 1)
    write_bwf(tmp_path / "a.wav", audio, SR, time_reference=7, origination_datetime=when)
    with BwfWriter(tmp_path / "b.wav", SR, 2, time_reference=7,
                   origination_datetime=when) as writer:
        for start in range(0, len(audio), 999):
            writer.write(audio[start : start + 999])
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "mix.wav"
    write_bwf(path, _audio(100, 1), SR, time_reference=0)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="mixer died"):
        with BwfWriter(path, SR, 1, time_reference=0) as writer:
            writer.write(_audio(5000, 1, seed=9))
            raise RuntimeError("mixer died")
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["mix.wav"]  # no temp file left
    with pytest.raises(ValueError, match="NaN"):
        write_bwf(tmp_path / "nan.wav", np.array([0.0, np.nan]), SR, time_reference=0)
    assert not (tmp_path / "nan.wav").exists()


def test_overs_are_clipped_not_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "hot.wav"
    write_bwf(path, np.array([1.5, -1.5, 1.0, -1.0, 0.5]), SR, time_reference=0)
    back, _ = sf.read(path, dtype="float64")
    assert np.allclose(back, [1 - LSB, -1.0, 1 - LSB, -1.0, 0.5])


def test_dither_is_tpdf_within_one_lsb_and_reproducible(tmp_path: Path) -> None:
    audio = _audio(20_000, 1, seed=5) * 0.5
    write_bwf(tmp_path / "a.wav", audio, SR, time_reference=0, dither=True)
    write_bwf(tmp_path / "b.wav", audio, SR, time_reference=0, dither=True)
    back, _ = sf.read(tmp_path / "a.wav", dtype="float64")
    error = (back - audio) / LSB
    assert np.max(np.abs(error)) <= 1.5
    assert np.std(error) > 0.45  # TPDF (variance 1/6 + 1/12 of rounding) is noisier than rounding
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_a_file_past_the_riff_limit_is_closed_as_rf64(tmp_path: Path) -> None:
    """Every file carries the place of a ds64 chunk (JUNK); one past the RIFF limit is closed
    as RF64 there (EBU Tech 3306). The 4 GiB limit is lowered to 100 kB so the test writes
    600 kB, not 4 GiB: the same closing code. libsndfile and ffmpeg read it back as written."""
    audio = _audio(SR * 2, 2, seed=3)  # 2 s of stereo: 576 kB of 24-bit samples
    big, small = tmp_path / "mix_rf64.wav", tmp_path / "mix.wav"
    for path, limit in ((big, 100_000), (small, 1 << 32)):
        with BwfWriter(path, SR, 2, time_reference=HOUR, description="reel 1 mix",
                       rf64_from=limit) as w:
            w.write(audio[: SR])
            w.write(audio[SR:])
    head = big.read_bytes()[:48]
    assert head[:4] == b"RF64" and head[4:8] == b"\xff\xff\xff\xff" and head[12:16] == b"ds64"
    assert small.read_bytes()[:4] == b"RIFF" and small.read_bytes()[12:16] == b"JUNK"
    for path in (big, small):
        info = read_bwf_info(path)
        assert (info["frames"], info["channels"], info["time_reference"]) == (SR * 2, 2, HOUR)
        assert info["rf64"] == (path == big)
        back, sr = sf.read(path, dtype="float64")
        assert sr == SR and back.shape == audio.shape
        assert np.abs(back - audio).max() <= LSB
    raw_big, raw_small = big.read_bytes(), small.read_bytes()
    size_at = raw_small.index(b"data") + 4  # but the sizes (RIFF, ds64, data), the same file
    assert raw_big[48:size_at] == raw_small[48:size_at]
    assert raw_big[size_at:size_at + 4] == b"\xff\xff\xff\xff"
    assert raw_big[size_at + 4:] == raw_small[size_at + 4:]
    meta = _ffmpeg_metadata(big)
    assert "Duration: 00:00:02.00" in meta and "time_reference" in meta, meta


@pytest.mark.parametrize("pad", [0, 1])
def test_rf64_with_an_ixml_of_either_parity_opens_in_libsndfile(tmp_path: Path, pad: int) -> None:
    """An odd chunk is followed by a RIFF pad byte, which libsndfile's RF64 reader does not skip
    ("No 'data' chunk marker"): the iXML is padded to an even length inside the document, so
    the mix of a long reel opens in soundfile (and `foley eval spatial`) whatever its names."""
    import xml.etree.ElementTree as ET

    doc = f"<BWFXML><PROJECT>REEL{'1' * (1 + pad)}</PROJECT></BWFXML>"  # 41 or 42 bytes
    audio = _audio(SR // 2, 6, seed=4)
    path = tmp_path / "mix_51.wav"
    with BwfWriter(path, SR, 6, time_reference=HOUR, ixml=doc, channel_mask=0x3F,
                   rf64_from=100_000) as w:
        w.write(audio)
    back, sr = sf.read(path, dtype="float64")
    assert sr == SR and back.shape == audio.shape
    assert np.abs(back - audio).max() <= LSB
    raw = path.read_bytes()
    assert raw[:4] == b"RF64"
    at = raw.index(b"iXML")
    size = int.from_bytes(raw[at + 4:at + 8], "little")
    assert size % 2 == 0 and raw[at + 8 + size:at + 12 + size] == b"data"  # no pad byte
    info = read_bwf_info(path)
    assert info["rf64"] and info["frames"] == SR // 2
    assert ET.fromstring(info["ixml"]).findtext("PROJECT") == f"REEL{'1' * (1 + pad)}"
