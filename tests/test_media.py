"""Probe, proxy, frame streaming and audio cut against real ffmpeg on real files."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.scenes import SceneSpec, read_barcode, render_scene
from tasks.media import (MediaError, decode_only_seconds, extract_audio, ffmpeg_exe,
                         iter_frames, make_proxy, probe)


def _barcoded(directory: Path, fps: float, seconds: float = 3.0) -> Path:
    path = directory / f"src_{fps:.3f}.mp4"
    render_scene(SceneSpec(kind="static", fps=fps, duration_s=seconds, size=(320, 180), barcode=True), path)
    return path


def _indices(path: Path) -> list[int]:
    return [read_barcode(f) for f in iter_frames(path)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def with_audio(media_dir: Path) -> Path:
    """A QuickTime file with 29.97 fps picture, a 1 kHz stereo tone and a start timecode."""
    path = media_dir / "tc.mov"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=r=30000/1001:d=3:s=320x240",
                    "-f", "lavfi", "-i", "sine=f=1000:d=3:r=44100", "-ac", "2", "-metadata", "timecode=01:00:00:00",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    return path


@pytest.mark.parametrize("fps", [24.0, 30000 / 1001, 15.0], ids=lambda r: f"{r:.3f}")
def test_proxy_is_frame_exact_from_a_nonzero_start(media_dir: Path, tmp_path: Path, fps: float) -> None:
    src = _barcoded(media_dir, fps)
    start_frame, n = 13, 20
    info = make_proxy(src, start_frame / fps, n / fps, fps, tmp_path / "proxy.mp4", width=160)
    assert (info.n_frames, info.width, info.height) == (n, 160, 90)
    assert probe(tmp_path / "proxy.mp4").n_frames == n
    got = _indices(tmp_path / "proxy.mp4")
    assert got == list(range(start_frame, start_frame + n)), f"seek/decoded frames {got}"


def test_proxy_start_between_frames_takes_the_nearest(media_dir: Path, tmp_path: Path) -> None:
    src = _barcoded(media_dir, 24.0)
    for offset, first in [(0.3, 10), (0.7, 11)]:
        make_proxy(src, (10 + offset) / 24, 5 / 24, 24.0, tmp_path / "p.mp4")
        assert _indices(tmp_path / "p.mp4")[0] == first, offset


def test_proxy_resamples_a_vfr_source_onto_the_clip_grid(media_dir: Path, tmp_path: Path) -> None:
    src = _barcoded(media_dir, 30.0)
    vfr = tmp_path / "vfr.mp4"      # every 5th frame dropped, timestamps kept: irregular intervals
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf", r"select=not(eq(mod(n\,5)\,2))",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr)], check=True)
    info = probe(vfr)
    assert info.is_vfr and info.n_frames == 72
    proxy = make_proxy(vfr, 0.5, 2.0, 30.0, tmp_path / "proxy.mp4")
    got = _indices(tmp_path / "proxy.mp4")
    assert proxy.n_frames == len(got) == 60
    expected = list(range(15, 75))
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected)), got
    assert got == sorted(got) and len(set(got)) == 48      # the 12 dropped frames are held


def test_truncated_file_is_detected(media_dir: Path, tmp_path: Path) -> None:
    data = _barcoded(media_dir, 24.0).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MediaError, match="cut.mp4"):
        probe(cut)
    with pytest.raises(MediaError, match="cut.mp4"):
        make_proxy(cut, 0.0, 2.9, 24.0, tmp_path / "proxy.mp4")
    assert not (tmp_path / "proxy.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]   # temp cleaned up


@pytest.mark.parametrize("start,duration", [(2.5, 1.0), (-0.5, 1.0), (1.0, 0.0)])
def test_range_outside_the_media_is_refused(media_dir: Path, tmp_path: Path, start: float, duration: float) -> None:
    with pytest.raises(MediaError, match="src_24.000.mp4"):
        make_proxy(_barcoded(media_dir, 24.0), start, duration, 24.0, tmp_path / "p.mp4")


@pytest.mark.parametrize("content", [b"", b"not a movie at all" * 100])
def test_unreadable_files_raise_media_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match="bad.mp4"):
        probe(bad)
    with pytest.raises(MediaError, match="missing.mov"):
        probe(tmp_path / "missing.mov")


def test_probe_reads_timecode_audio_and_ntsc_rate(with_audio: Path) -> None:
    info = probe(with_audio)
    assert info.has_video and info.has_audio
    assert info.timecode == "01:00:00:00"
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-9)
    assert (info.audio_rate, info.audio_channels) == (44100, 2)
    assert info.n_frames == 90 and (info.width, info.height) == (320, 240)


def test_extract_audio_cuts_exact_samples(with_audio: Path, media_dir: Path, tmp_path: Path) -> None:
    assert extract_audio(with_audio, 0.5, 1.25, tmp_path / "shot.wav")
    data, sr = sf.read(tmp_path / "shot.wav")
    assert sr == 48000 and data.shape == (60000, 2)
    assert sf.info(tmp_path / "shot.wav").subtype == "PCM_24"
    assert np.sqrt(np.mean(data**2)) > 0.05                # the tone is there
    assert extract_audio(_barcoded(media_dir, 24.0), 0.0, 1.0, tmp_path / "none.wav") is False
    assert not (tmp_path / "none.wav").exists()


def test_iter_frames_streams_scales_and_stops_early(media_dir: Path) -> None:
    src = _barcoded(media_dir, 24.0)
    frames = iter_frames(src, width=160, gray=True)
    first = next(frames)
    assert first.shape == (90, 160) and first.dtype == np.uint8
    frames.close()                                          # kills ffmpeg, no hang, no error
    assert next(iter_frames(src, height=90)).shape == (90, 160, 3)


def test_decode_only_seconds_measures_a_decode(media_dir: Path) -> None:
    assert decode_only_seconds(_barcoded(media_dir, 24.0)) > 0.0
