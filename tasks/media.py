"""Probing and shot decode with ffmpeg, streaming (no ffprobe: `ffmpeg -i` is parsed).

- `probe` reads the container header from `ffmpeg -i` and, by default, scans the video
  packets (`-c copy -f framemd5`, no decoding) for the exact frame count, duration, frame
  rate and variable-rate detection. A damaged or truncated file fails here.
- `make_proxy` decodes exactly one shot's source range onto the clip's own frame grid
  (constant frame rate, so variable-rate sources are resampled) and checks the frame count.
- `iter_frames` streams decoded frames through a pipe, one frame in memory at a time.
- `extract_audio` cuts the shot's production audio to a 24-bit WAV of exact length.
- `decode_only_seconds` times a plain decode of a file: the benchmark reference.

Every failure a person will read is a `MediaError` naming the file and the problem.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import numpy as np

NTSC_RATES = (24, 30, 48, 60, 120)
PREROLL_S = 0.25   # decode this much before a shot so its first frame can be the nearest one
_DAMAGE = re.compile(r"partial file|invalid nal|corrupt|error while decoding|invalid data|"
                     r"truncat|missing picture|decoding error|error splitting", re.IGNORECASE)


class MediaError(ValueError):
    """Media that cannot be read, is damaged, or does not cover the requested range."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds. fps is the average video rate; n_frames None if not scanned."""

    path: str
    duration_s: float
    fps: float
    width: int
    height: int
    n_frames: int | None
    has_video: bool
    has_audio: bool
    timecode: str | None = None
    is_vfr: bool = False
    start_s: float = 0.0
    video_codec: str | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_streams: tuple[int | None, ...] = ()   # channels of each audio stream, in file order


@dataclass(frozen=True)
class ProxyInfo:
    """A decoded shot proxy: constant frame rate, exactly n_frames frames."""

    n_frames: int
    fps: float
    width: int
    height: int


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def rate_fraction(fps: float) -> Fraction:
    """The exact rational behind a float rate (29.97002997 → 30000/1001, 21.5 → 43/2)."""
    return Fraction(fps).limit_denominator(1001)


def _run(args: list[str], path: Path | str, what: str) -> str:
    """Run ffmpeg, return its stderr; MediaError naming the file if it fails."""
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise MediaError(f"{path}: {what} failed: {_last_error(err)}")
    return err


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    damage = [ln for ln in lines if _DAMAGE.search(ln)]
    return (damage or lines or ["ffmpeg gave no reason"])[-1][:300]


# ---------------------------------------------------------------- probe

def _header(path: Path) -> dict:
    """Parse the stream summary ffmpeg prints when opening `path`."""
    args = (ffmpeg.input(str(path)).output("-", f="null", t=0)
            .global_args("-hide_banner", "-nostdin").compile(cmd=ffmpeg_exe()))
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    if "Input #0" not in err:
        raise MediaError(f"{path}: not readable media: {_last_error(err)}")
    head: dict = {"duration": None, "start": 0.0, "video": None, "audio": None, "timecode": None,
                  "audio_streams": []}
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)(?:, start: (-?[\d.]+))?", err)
    if m:
        hh, mm, ss = int(m[1]), int(m[2]), float(m[3])
        head["duration"] = hh * 3600 + mm * 60 + ss
        head["start"] = float(m[4] or 0.0)
    inputs = re.split(r"\n(?:Stream mapping:|Output #0)", err, maxsplit=1)[0]   # not the null output's
    for line in inputs.splitlines():
        s = re.search(r"Stream #\d+:\d+\S*: (Video|Audio): (\w+)(.*)", line)
        if not s:
            continue
        if s[1] == "Video" and head["video"] is None and "attached pic" not in line:
            dims = re.search(r", (\d{2,5})x(\d{2,5})", s[3])
            fps = re.search(r"([\d.]+)(k?) fps", s[3]) or re.search(r"([\d.]+)(k?) tbr", s[3])
            head["video"] = {"codec": s[2], "w": int(dims[1]) if dims else 0,
                             "h": int(dims[2]) if dims else 0,
                             "fps": float(fps[1]) * (1000 if fps[2] else 1) if fps else 0.0}
        elif s[1] == "Audio":
            sr = re.search(r"(\d+) Hz, ([^,]+)", s[3])
            stream = {"codec": s[2], "sr": int(sr[1]) if sr else None,
                      "channels": _channels(sr[2].strip() if sr else "")}
            head["audio_streams"].append(stream["channels"])
            head["audio"] = head["audio"] or stream
    rot = re.search(r"rotation of (-?[\d.]+) degrees", err)
    if head["video"] and rot and round(abs(float(rot[1]))) % 180 == 90:   # decoded upright
        head["video"]["w"], head["video"]["h"] = head["video"]["h"], head["video"]["w"]
    tc = re.search(r"timecode\s*:\s*(\d\d:\d\d:\d\d[:;.]\d\d)", err)
    head["timecode"] = tc[1] if tc else None
    return head


def _channels(layout: str) -> int:
    """Channel count from an ffmpeg layout name: mono, stereo, 5.1(side), 6 channels."""
    if layout in ("mono", "stereo"):
        return 1 if layout == "mono" else 2
    if m := re.match(r"(\d+) channels", layout):
        return int(m[1])
    if m := re.match(r"(\d+)\.(\d+)", layout):
        return int(m[1]) + int(m[2])
    return 2


def _snap_rate(fps: float) -> float:
    """ffmpeg prints rates to 2 decimals: map 29.97 back to 30000/1001 and friends."""
    for base in NTSC_RATES:
        if abs(fps - base * 1000 / 1001) < 0.006:
            return base * 1000 / 1001
    return fps


def _scan_packets(path: Path) -> dict:
    """Video packet timestamps without decoding: exact count, span and frame intervals."""
    args = (ffmpeg.input(str(path)).output("-", map="0:v:0", c="copy", f="framemd5")
            .global_args("-hide_banner", "-nostdin", "-v", "error").compile(cmd=ffmpeg_exe()))
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or err:
        raise MediaError(f"{path}: damaged or truncated media: {_last_error(err)}")
    tb = Fraction(1)
    pts: list[tuple[int, int]] = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            cols = [c.strip() for c in line.split(",")]
            if cols[2].lstrip("-").isdigit():
                pts.append((int(cols[2]), int(cols[3])))
    if not pts:
        raise MediaError(f"{path}: no video frames could be read")
    pts.sort()
    ticks = np.array([p for p, _ in pts], np.int64)
    span = Fraction(int(ticks[-1] - ticks[0] + max(pts[-1][1], 0)), 1) * tb
    diffs = np.diff(ticks)
    out = {"n": len(pts), "span": float(span), "vfr": False, "fps": None}
    if len(diffs):
        med = int(np.median(diffs))
        out["vfr"] = bool(np.any(np.abs(diffs - med) > max(1, 0.02 * med)))
        if not out["vfr"] and med > 0:
            out["fps"] = float(1 / (med * tb))
    if out["fps"] is None and span > 0:
        out["fps"] = len(pts) / float(span)
    return out


def probe(path: Path | str, *, scan_packets: bool = True) -> MediaInfo:
    """Describe a media file; `scan_packets` reads all video packets (exact, detects damage)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such media file")
    head = _header(path)
    video, audio = head["video"], head["audio"]
    if video is None and audio is None:
        raise MediaError(f"{path}: no video or audio stream")
    fps = _snap_rate(video["fps"]) if video else 0.0
    duration, n_frames, vfr = head["duration"], None, False
    if video and scan_packets:
        scan = _scan_packets(path)
        n_frames, vfr = scan["n"], scan["vfr"]
        fps = _snap_rate(scan["fps"]) if scan["fps"] else fps
        if duration is not None and scan["span"] < duration - 2.0 / max(fps, 1.0) - 0.05:
            raise MediaError(f"{path}: truncated: video ends at {scan['span']:.3f} s "
                             f"but the header says {duration:.3f} s")
        duration = scan["span"]
    if duration is None:
        raise MediaError(f"{path}: duration unknown (stream without index?)")
    return MediaInfo(
        path=str(path), duration_s=float(duration), fps=float(fps),
        width=video["w"] if video else 0, height=video["h"] if video else 0,
        n_frames=n_frames, has_video=video is not None, has_audio=audio is not None,
        timecode=head["timecode"], is_vfr=vfr, start_s=head["start"],
        video_codec=video["codec"] if video else None,
        audio_rate=audio["sr"] if audio else None,
        audio_channels=audio["channels"] if audio else None,
        audio_streams=tuple(head["audio_streams"]),
    )


# ---------------------------------------------------------------- shot decode

def _check_range(info: MediaInfo, start_s: float, duration_s: float, slack_s: float) -> None:
    if duration_s <= 0:
        raise MediaError(f"{info.path}: empty range (duration {duration_s} s)")
    if start_s < -slack_s or start_s + duration_s > info.duration_s + slack_s:
        raise MediaError(f"{info.path}: range {start_s:.3f}–{start_s + duration_s:.3f} s lies "
                         f"outside the media (0–{info.duration_s:.3f} s); check the edit's source range")


def _scaled_size(info: MediaInfo, width: int | None, height: int | None) -> tuple[int, int]:
    """Target size with even sides, keeping aspect when one side is given."""
    if width and height:
        return width - width % 2, height - height % 2
    if width:
        return width - width % 2, max(2, 2 * round(width * info.height / info.width / 2))
    if height:
        return max(2, 2 * round(height * info.width / info.height / 2)), height - height % 2
    return info.width, info.height


def _atomic_target(out_path: Path, suffix: str) -> str:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}-", suffix=suffix, dir=out_path.parent)
    os.close(fd)
    return tmp


def _commit(tmp: str, out_path: Path) -> None:
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_path)


def make_proxy(src: Path | str, start_s: float, duration_s: float, fps: float, out_path: Path | str,
               *, width: int = 320) -> ProxyInfo:
    """Decode source range [start_s, start_s + duration_s) at `fps` (cfr) to an H.264 proxy."""
    src, out_path = Path(src), Path(out_path)
    info = probe(src, scan_packets=False)
    if not info.has_video:
        raise MediaError(f"{src}: no video stream to make a proxy from")
    _check_range(info, start_s, duration_s, 0.5 / fps)
    n = int(round(duration_s * fps))
    w, h = _scaled_size(info, width, None)
    rate = rate_fraction(fps)
    preroll = min(max(start_s, 0.0), PREROLL_S)
    tmp = _atomic_target(out_path, ".mp4")
    try:
        args = (
            ffmpeg.input(str(src), ss=f"{max(start_s, 0.0) - preroll:.6f}")
            .video.filter("setpts", f"PTS-{preroll:.6f}/TB")
            .filter("fps", fps=str(rate), round="near", start_time=0)
            .filter("scale", w, h, flags="area")
            .output(tmp, vcodec="libx264", crf=18, preset="veryfast", pix_fmt="yuv420p",
                    r=str(rate), fps_mode="cfr", **{"frames:v": n}, an=None,
                    movflags="+faststart", f="mp4")
            .global_args("-hide_banner", "-nostdin", "-v", "error")
            .compile(cmd=ffmpeg_exe(), overwrite_output=True)
        )
        err = _run(args, src, "proxy decode")
        got = probe(tmp).n_frames or 0
        if got != n:
            reason = f"; ffmpeg: {_last_error(err)}" if err.strip() else ""
            raise MediaError(f"{src}: decoded {got} of {n} frames for {start_s:.3f}+{duration_s:.3f} s "
                             f"(source truncated or damaged){reason}")
        if _DAMAGE.search(err):
            raise MediaError(f"{src}: damaged media in {start_s:.3f}+{duration_s:.3f} s: {_last_error(err)}")
        _commit(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ProxyInfo(n_frames=n, fps=float(rate), width=w, height=h)


def iter_frames(path: Path | str, *, width: int | None = None, height: int | None = None,
                gray: bool = False) -> Iterator[np.ndarray]:
    """Yield decoded frames (H, W, 3) RGB or (H, W) gray uint8, one at a time, from a pipe."""
    path = Path(path)
    info = probe(path, scan_packets=False)
    if not info.has_video:
        raise MediaError(f"{path}: no video stream")
    w, h = _scaled_size(info, width, height)
    stream = ffmpeg.input(str(path)).video
    if (w, h) != (info.width, info.height):
        stream = stream.filter("scale", w, h, flags="area")
    args = (stream.output("pipe:", format="rawvideo", pix_fmt="gray" if gray else "rgb24")
            .global_args("-hide_banner", "-nostdin", "-v", "error").compile(cmd=ffmpeg_exe()))
    shape = (h, w) if gray else (h, w, 3)
    size = int(np.prod(shape))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                buf = proc.stdout.read(size)
                if len(buf) < size:
                    break
                yield np.frombuffer(buf, np.uint8).reshape(shape)
            if proc.wait() != 0:
                err.seek(0)
                raise MediaError(f"{path}: decode failed: {_last_error(err.read().decode(errors='replace'))}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def extract_audio(src: Path | str, start_s: float, duration_s: float, out_path: Path | str,
                  sr: int = 48000, stream: int = 0) -> bool:
    """Cut the shot's production audio to a 24-bit WAV of exactly round(duration·sr) samples.

    `stream` picks the file's audio stream (0 = the first; a QuickTime of a past reel may
    carry the mix on one track and the Foley on another). Returns False (and writes nothing)
    when the source has no such audio stream. More than two channels are folded down to
    stereo.
    """
    src, out_path = Path(src), Path(out_path)
    info = probe(src, scan_packets=False)
    if stream >= len(info.audio_streams):
        return False
    _check_range(info, start_s, duration_s, 0.02)
    n = int(round(duration_s * sr))
    tmp = _atomic_target(out_path, ".wav")
    try:
        args = (
            ffmpeg.input(str(src), ss=f"{max(start_s, 0.0):.6f}")[f"a:{stream}"]
            .filter("aresample", sr).filter("apad", whole_len=n).filter("atrim", end_sample=n)
            .output(tmp, acodec="pcm_s24le", ac=1 if info.audio_streams[stream] == 1 else 2, ar=sr,
                    f="wav")
            .global_args("-hide_banner", "-nostdin", "-v", "error")
            .compile(cmd=ffmpeg_exe(), overwrite_output=True)
        )
        err = _run(args, src, "audio extract")
        if _DAMAGE.search(err):
            raise MediaError(f"{src}: damaged audio in {start_s:.3f}+{duration_s:.3f} s: {_last_error(err)}")
        _commit(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def decode_only_seconds(path: Path | str) -> float:
    """Wall time for ffmpeg to decode the whole file to null: the benchmark reference."""
    args = (ffmpeg.input(str(path)).output("-", f="null")
            .global_args("-hide_banner", "-nostdin", "-v", "error").compile(cmd=ffmpeg_exe()))
    t0 = time.perf_counter()
    _run(args, path, "decode")
    return time.perf_counter() - t0
