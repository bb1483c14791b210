"""The reel's preview movie (start timecode, audio as long as the picture, real ffmpeg) and the
record timecode of an event in the manifest (the frame the review app shows)."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf

from tasks import mixdown
from tasks.conform import event_frame

FF = imageio_ffmpeg.get_ffmpeg_exe()
SR = 48000
SEGMENTS = (30, 18, 11)  # frames: a shot, black (a gap), a shot


def _render(root: Path, num: int, den: int, start: str) -> tuple[Path, int]:
    """A 59-frame preview at num/den (two shots of a real H.264 proxy around a gap) over a
    1 kHz mix as long as the picture, rounded to the sample as the conform rounds it."""
    work = root / f"r{num}_{den}"
    work.mkdir()
    proxy = work / "proxy.mp4"
    subprocess.run([FF, "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=64x36:rate={num}/{den}", "-t", "2", "-pix_fmt", "yuv420p",
                    str(proxy)], check=True)
    segments = [mixdown.Segment(SEGMENTS[0], proxy), mixdown.Segment(SEGMENTS[1], None),
                mixdown.Segment(SEGMENTS[2], proxy)]
    samples = round(sum(SEGMENTS) * den * SR / num)
    t = np.arange(samples) / SR
    mix = work / "mix.wav"
    sf.write(mix, np.stack([0.3 * np.sin(2 * np.pi * 1000 * t)] * 2, axis=1), SR, subtype="PCM_24")
    out = work / "preview.mp4"
    mixdown.render_preview(segments, mix, out, rate=(num, den), start_timecode=start, size=(64, 36))
    return out, samples


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory):
    """render(num, den, start) → (movie, mix samples), each rate rendered once."""
    root, done = tmp_path_factory.mktemp("preview"), {}

    def render(num: int, den: int, start: str) -> tuple[Path, int]:
        if (num, den, start) not in done:
            done[num, den, start] = _render(root, num, den, start)
        return done[num, den, start]

    return render


def _decoded_audio(movie: Path) -> np.ndarray:
    raw = subprocess.run([FF, "-v", "error", "-i", str(movie), "-map", "0:a", "-f", "f32le",
                          "-ac", "2", "-ar", str(SR), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, 2)


def _video_frames(movie: Path) -> int:
    raw = subprocess.run([FF, "-v", "error", "-i", str(movie), "-map", "0:v", "-vf",
                          "scale=8:8,format=gray", "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    return len(raw) // 64


@pytest.mark.parametrize(("num", "den", "start"), [
    (24, 1, "01:00:00:00"),
    (30000, 1001, "01:00:00;00"),  # drop-frame: ';' before the frames, as the reel writes it
])
def test_preview_carries_the_reel_start_timecode(preview, num: int, den: int,
                                                  start: str) -> None:
    """A tmcd track at the reel's start, so Pro Tools' Import Video spots the picture where the
    mix is stamped (it put the preview at 00:00:00:00)."""
    movie, _ = preview(num, den, start)
    info = subprocess.run([FF, "-hide_banner", "-i", str(movie)], capture_output=True,
                          text=True).stderr
    assert "tmcd" in info, info
    assert re.findall(r"timecode\s*:\s*(\S+)", info)[-1] == start, info


@pytest.mark.parametrize(("num", "den", "start"), [
    (24000, 1001, "01:00:00:00"),  # -shortest cut the audio at an AAC frame: 358 samples short
    (30000, 1001, "01:00:00;00"),  # the mix 0.4 sample short of the picture: -shortest cut 2 frames
])
def test_preview_audio_lasts_as_long_as_the_picture(preview, num: int, den: int,
                                                     start: str) -> None:
    movie, samples = preview(num, den, start)
    frames = _video_frames(movie)
    assert frames == sum(SEGMENTS)
    audio = _decoded_audio(movie)
    assert len(audio) == samples == round(frames * den * SR / num)
    tail = audio[-512:, 0].astype(np.float64)
    assert np.sqrt(np.mean(tail**2)) > 0.15  # the mix to the end, not padding (0.3 sine: 0.21)


def test_event_frame_on_a_boundary_is_that_frame_at_25() -> None:
    assert int(1.16 * 25 // 1) == 28  # the float floor the manifest used
    assert event_frame(1.16, 25, 1) == 29
    # every frame boundary the review app's nudge stores (f / fps to 4 decimals: exact at 25)
    assert [event_frame(round(f / 25, 4), 25, 1) for f in range(25 * 120)] == list(range(25 * 120))
    assert event_frame(1.1599, 25, 1) == 28 and event_frame(1.1999, 25, 1) == 29


def test_event_frame_at_2997() -> None:
    num, den = 30000, 1001
    assert int(1.001 * num // den) == 29  # the float floor: a frame early
    assert event_frame(1.001, num, den) == 30 and event_frame(4.3043, num, den) == 129
    assert event_frame(8.3083, num, den) == 249
    assert event_frame(1.0009, num, den) == 29


@pytest.mark.parametrize(("num", "den"), [(25, 1), (30000, 1001), (24000, 1001), (24, 1)])
def test_event_frame_agrees_with_the_review_app(num: int, den: int) -> None:
    """shot.js `frameAt(t)` = floor(t · num / den + 1e-4) in doubles: the manifest's record_tc
    and the TC the app shows agree for every time on a 0.1 ms grid (first 10 s), and every
    frame start, kept to the microsecond as the app stores an edit, is in its own frame."""
    for k in range(100_000):
        t = round(k * 1e-4, 4)
        assert event_frame(t, num, den) == math.floor(t * num / den + 1e-4), t
    for f in range(round(120 * num / den)):
        t = round(f * den / num, 6)
        assert event_frame(t, num, den) == math.floor(t * num / den + 1e-4) == f, (f, t)
