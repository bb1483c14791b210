"""Reel-length renders, streamed: the Foley mix from per-shot stems, and the preview movie.

Nothing here holds a reel in memory: the mix is summed block by block from the stems (read with
seeks), and the preview is assembled by one ffmpeg process from the shot proxies.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile as sf

from tasks.bwf import BwfWriter

BLOCK = 48000 * 10  # samples per mix block (10 s at 48 kHz)


@dataclass(frozen=True)
class Placed:
    """A stem file placed at a sample offset of the reel."""

    path: Path
    offset: int  # samples from the timeline start


def mix_reel(
    stems: Sequence[Placed],
    out: Path,
    *,
    frames: int,
    channels: int,
    sr: int,
    time_reference: int,
    description: str,
    made: datetime,
    channel_mask: int | None = None,
    ixml: str | None = None,
) -> None:
    """Sum stems into one reel-length 24-bit Broadcast WAV, `BLOCK` samples at a time
    (`channel_mask`: the speaker layout of WAVE_FORMAT_EXTENSIBLE, e.g. 0x3F for 5.1;
    `ixml`: its iXML chunk, `bwf.ixml`)."""
    opened = [(p, sf.SoundFile(p.path)) for p in stems]
    try:
        for p, f in opened:
            if f.channels != channels or f.samplerate != sr:
                raise ValueError(f"{p.path}: {f.channels} ch @ {f.samplerate} Hz, expected {channels} @ {sr}")
        with BwfWriter(out, sr, channels, time_reference=time_reference, description=description,
                       origination_datetime=made, channel_mask=channel_mask, ixml=ixml) as w:
            for start in range(0, frames, BLOCK):
                stop = min(start + BLOCK, frames)
                block = np.zeros((stop - start, channels), dtype=np.float32)
                for p, f in opened:
                    lo, hi = max(start, p.offset), min(stop, p.offset + f.frames)
                    if lo >= hi:
                        continue
                    f.seek(lo - p.offset)
                    block[lo - start : hi - start] += f.read(hi - lo, dtype="float32", always_2d=True)
                w.write(block)
    finally:
        for _, f in opened:
            f.close()


@dataclass(frozen=True)
class Segment:
    """A span of the reel's picture: a shot proxy, or black where there is none."""

    frames: int
    proxy: Path | None


PREVIEW_CHUNK = 16  # segments per ffmpeg process: it opens one decoder per proxy it reads


def render_preview(
    segments: Sequence[Segment],
    audio: Path,
    out: Path,
    *,
    rate: tuple[int, int],
    start_timecode: str | None = None,
    size: tuple[int, int] = (640, 360),
) -> None:
    """Picture (proxies, black for gaps and skipped shots) plus the stereo mix as H.264/AAC.

    The picture is encoded PREVIEW_CHUNK segments at a time into MPEG-TS parts (so memory
    does not grow with the number of shots), which one last ffmpeg joins without re-encoding
    (concat demuxer) and muxes with the mix, padded or cut to the picture's length to the
    sample. `start_timecode` (the reel's, "01:00:00:00", ';' before the frames for drop-frame)
    goes in a tmcd track, so an import to Pro Tools spots the picture where the mix is stamped."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    num, den = rate
    # no -shortest: it cuts the audio at an AAC frame (7.8 ms early at 23.976) or drops the
    # picture's last frames when the mix is a fraction of a sample shorter (29.97)
    samples = round(sum(s.frames for s in segments) * den * sf.info(audio).samplerate / num)
    stamp = ["-timecode", start_timecode] if start_timecode else []
    tmp = out.with_name(f".{out.name}.partial.mp4")
    with tempfile.TemporaryDirectory(prefix=".preview-", dir=out.parent) as work:
        parts = []
        for i in range(0, len(segments), PREVIEW_CHUNK):
            parts.append(Path(work) / f"part{i // PREVIEW_CHUNK:05d}.ts")
            _render_picture(segments[i:i + PREVIEW_CHUNK], parts[-1], rate=rate, size=size)
        listing = Path(work) / "parts.txt"
        listing.write_text("".join(f"file '{p.name}'\n" for p in parts))
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(audio),
               "-map", "0:v", "-map", "1:a", "-c:v", "copy",
               "-af", f"apad=whole_len={samples},atrim=end_sample={samples}",
               "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart",
               "-fflags", "+bitexact", "-flags:a", "+bitexact",
               "-map_metadata", "-1", *stamp, str(tmp)]
        try:
            _ffmpeg(cmd, "preview render")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


def _render_picture(segments: Sequence[Segment], out: Path, *, rate: tuple[int, int],
                    size: tuple[int, int]) -> None:
    """Encode `segments` back to back (reel rate, `size`, black where no proxy) to `out`."""
    num, den = rate
    w, h = size
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    filters, labels, n_in = [], [], 0
    for i, seg in enumerate(segments):
        dur = seg.frames * den / num
        if seg.proxy is not None:
            cmd += ["-i", str(seg.proxy)]
            filters.append(
                f"[{n_in}:v]fps={num}/{den},scale={w}:{h}:force_original_aspect_ratio=decrease,"
                f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p,"
                f"tpad=stop_mode=clone:stop_duration={dur:.6f},trim=end_frame={seg.frames},"
                f"setpts=PTS-STARTPTS[v{i}]"
            )
            n_in += 1
        else:
            filters.append(f"color=c=black:s={w}x{h}:r={num}/{den}:d={dur:.6f},format=yuv420p,"
                           f"trim=end_frame={seg.frames},setsar=1[v{i}]")
        labels.append(f"[v{i}]")
    filters.append(f"{''.join(labels)}concat=n={len(labels)}:v=1:a=0[vout]")
    cmd += [
        "-filter_complex", ";".join(filters), "-map", "[vout]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-threads", "2", "-f", "mpegts", str(out),
    ]
    _ffmpeg(cmd, "preview render")


def _ffmpeg(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-800:]}")
