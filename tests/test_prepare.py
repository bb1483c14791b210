"""Shot preparation: where a shot starts in its file when the edit gives source timecode."""
from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from tasks import media
from tasks.prepare import file_time


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s camera-style clip whose embedded start timecode is 01:00:00:00 at 24 fps."""
    out = tmp_path_factory.mktemp("cam") / "A001 C003.mov"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x36:rate=24", "-t", "3", "-pix_fmt", "yuv420p",
                    "-timecode", "01:00:00:00", str(out)], check=True)
    return out


def test_source_timecode_is_moved_into_file_time(camera_file: Path) -> None:
    info = media.probe(camera_file, scan_packets=False)
    assert info.timecode == "01:00:00:00"
    assert file_time(info, 3600.5, 1.0) == pytest.approx(0.5)


def test_file_time_is_kept_when_it_fits(camera_file: Path) -> None:
    info = media.probe(camera_file, scan_packets=False)
    assert file_time(info, 0.5, 1.0) == 0.5
    assert file_time(info, 3700.0, 1.0) == 3700.0  # fits neither way: media stage reports it
