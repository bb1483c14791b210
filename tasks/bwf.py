"""Broadcast WAV (EBU Tech 3285) writing and reading: 24-bit PCM with `bext` and `iXML`.

soundfile writes no `bext` chunk, so the RIFF is written by hand. `BwfWriter` streams frames
to a temporary file next to the target and patches the sizes on close, then renames it into
place (os.replace), so a reel mix never has to fit in memory and a failed write leaves no
half-written file. Samples are rounded to the nearest 24-bit step (optionally TPDF dithered)
after clipping to full scale; clipped samples are counted and logged.

Layout: RIFF/WAVE · JUNK · fmt · bext · [iXML] · data. The JUNK chunk is the 28-byte place
of a `ds64` chunk (EBU Tech 3306): a file that outgrows the 32-bit sizes of RIFF — a 5.1 mix
of a reel over 82 minutes, FOA over 124 — is closed as RF64 (`RF64` · `ds64` with the 64-bit
sizes, the 32-bit fields set to 0xFFFFFFFF): the EBU's large-file Broadcast WAV, which
libsndfile and ffmpeg read back sample-exact (tests/test_bwf.py; not tried in Pro Tools on
this machine). Any smaller file stays a plain RIFF, its JUNK chunk skipped by readers.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

BEXT_STRUCT = struct.Struct("<256s32s32s10s8sQH64s5H180s")  # 602 bytes, EBU Tech 3285 v1/v2
BITS = 24
_FULL_SCALE = 2 ** (BITS - 1)  # 8388608
_MAX_CODE = _FULL_SCALE - 1
_RIFF_LIMIT = 2**32 - 1  # the largest RIFF; past it the file is closed as RF64
_DS64 = struct.Struct("<QQQI")  # riff size, data size, sample count, table length (none)
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_SUBTYPE_PCM = bytes.fromhex("0100000000001000800000aa00389b71")


def time_reference(frames: int, rate_num: int, rate_den: int, sr: int = 48000) -> int:
    """bext TimeReference (samples since midnight) of a timecode given as frames since midnight
    at rate num/den: exact rational arithmetic, so 01:00:00:00 at 24 fps is 172 800 000 and at
    24000/1001 is 172 972 800."""
    return round(frames * rate_den * sr / rate_num)


def time_reference_from_timecode(timecode: str, fps: float, sr: int = 48000) -> int:
    """`time_reference` of a SMPTE timecode string at `fps` (drop-frame ';' understood); a rate
    typed as 23.976, 29.97 or 59.94 is the NTSC rate (OTIO accepts only the exact fraction)."""
    import opentimelineio as otio

    from tasks.ingest_formats import rational_rate

    num, den = rational_rate(fps)  # 23.976 → 24000/1001
    frames = round(otio.opentime.from_timecode(timecode, num / den).value)
    return time_reference(frames, num, den, sr)


def _fixed(text: str, size: int, field: str) -> bytes:
    data = text.encode("ascii", errors="replace")
    if len(data) > size:
        log.warning("bext %s truncated to %d bytes: %r", field, size, text)
    return data[:size]


def _bext_payload(
    *,
    description: str,
    originator: str,
    originator_reference: str,
    origination: datetime,
    time_reference: int,
    coding_history: str,
) -> bytes:
    fixed = BEXT_STRUCT.pack(
        _fixed(description, 256, "Description"),
        _fixed(originator, 32, "Originator"),
        _fixed(originator_reference, 32, "OriginatorReference"),
        origination.strftime("%Y-%m-%d").encode("ascii"),
        origination.strftime("%H:%M:%S").encode("ascii"),
        int(time_reference),
        1,  # BWF version 1: UMID present (zeroed), loudness fields reserved (zero)
        b"",
        0, 0, 0, 0, 0,
        b"",
    )
    history = coding_history.encode("ascii", errors="replace")
    # NUL-terminated to an even size: no pad byte after the chunk, which libsndfile's RF64
    # reader does not skip ("No 'data' chunk marker")
    return fixed + history + b"\x00" * (2 - len(history) % 2)


def _fmt_payload(sr: int, channels: int, channel_mask: int | None) -> bytes:
    block_align = channels * BITS // 8
    common = struct.pack("<HIIHH", channels, sr, sr * block_align, block_align, BITS)
    if channels <= 2 and channel_mask is None:
        return struct.pack("<H", _WAVE_FORMAT_PCM) + common
    # >2 channels: WAVE_FORMAT_EXTENSIBLE; mask 0 = no speaker layout (right for AmbiX B-format)
    mask = 0 if channel_mask is None else channel_mask
    extension = struct.pack("<HHI", 22, BITS, mask) + _KSDATAFORMAT_SUBTYPE_PCM
    return struct.pack("<H", _WAVE_FORMAT_EXTENSIBLE) + common + extension


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + pad


IXML_VERSION = "1.61"


def ixml(*, project: str, note: str, rate_num: int, rate_den: int, drop_frame: bool,
         time_reference: int, sr: int, tracks: list[tuple[str, str | None]],
         scene: str | None = None) -> str:
    """An iXML document (iXML 1.61, gallery.co.uk/ixml) for a delivered file: the reel as
    PROJECT, the shot as SCENE, the picture's timecode rate and drop-frame flag with the time
    stamp in SPEED (what "spot to original time stamp" needs beside bext's sample count), and
    each channel's NAME and FUNCTION in TRACK_LIST (`tracks`: (name, function or None), in
    channel order; functions from iXML's dictionary, e.g. L-5.1, L-MIX, MIX)."""
    from xml.sax.saxutils import escape

    def el(tag: str, value: object) -> str:
        return f"<{tag}>{escape(str(value))}</{tag}>"

    rate = f"{rate_num}/{rate_den}"
    speed = "".join([
        el("NOTE", "foleyflow conform"), el("MASTER_SPEED", rate), el("CURRENT_SPEED", rate),
        el("TIMECODE_RATE", rate), el("TIMECODE_FLAG", "DF" if drop_frame else "NDF"),
        el("FILE_SAMPLE_RATE", sr), el("AUDIO_BIT_DEPTH", BITS), el("DIGITIZER_SAMPLE_RATE", sr),
        el("TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI", time_reference >> 32),
        el("TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO", time_reference & 0xFFFFFFFF),
        el("TIMESTAMP_SAMPLE_RATE", sr)])
    track_list = el("TRACK_COUNT", len(tracks)) + "".join(
        "<TRACK>" + el("CHANNEL_INDEX", i) + el("INTERLEAVE_INDEX", i) + el("NAME", name)
        + (el("FUNCTION", function) if function else "") + "</TRACK>"
        for i, (name, function) in enumerate(tracks, start=1))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<BWFXML>'
            + el("IXML_VERSION", IXML_VERSION) + el("PROJECT", project)
            + (el("SCENE", scene) if scene else "") + el("NOTE", note)
            + f"<SPEED>{speed}</SPEED><TRACK_LIST>{track_list}</TRACK_LIST></BWFXML>")


class BwfWriter:
    """Streaming 24-bit Broadcast WAV writer; use as a context manager, `write` blocks of frames.

    The file appears at `path` only when the block exits without error.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sr: int,
        channels: int,
        *,
        time_reference: int,
        description: str = "",
        originator: str = "foleyflow",
        originator_reference: str = "",
        origination_datetime: datetime | None = None,
        ixml: str | None = None,
        channel_mask: int | None = None,
        dither: bool = False,
        seed: int = 0,
        rf64_from: int = _RIFF_LIMIT,
    ) -> None:
        """`rf64_from`: the file size from which the file is closed as RF64 (the RIFF limit;
        smaller only to exercise RF64 on small files)."""
        assert channels >= 1 and sr > 0, f"{channels=} {sr=}"
        self.path = Path(path)
        self.sr, self.channels = int(sr), int(channels)
        self.frames = 0
        self.clipped = 0
        self._dither = np.random.default_rng(seed) if dither else None
        mode = "TPDF dither" if dither else "rounded"
        history = f"A=PCM,F={sr},W={BITS},M={_mode_name(channels)},T=foleyflow {mode}\r\n"
        bext = _bext_payload(
            description=description,
            originator=originator,
            originator_reference=originator_reference,
            origination=origination_datetime or datetime.now(),
            time_reference=time_reference,
            coding_history=history,
        )
        header = _chunk(b"fmt ", _fmt_payload(self.sr, self.channels, channel_mask))
        header += _chunk(b"bext", bext)
        if ixml is not None:
            doc = ixml.encode("utf-8")
            # a newline after the root element to an even size: as for CodingHistory, no pad
            # byte after the chunk for libsndfile's RF64 reader to trip on
            header += _chunk(b"iXML", doc + b"\n" * (len(doc) % 2))
        self._header = b"WAVE" + _chunk(b"JUNK", bytes(_DS64.size)) + header + b"data"
        self._rf64_from = int(rf64_from)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a unique sibling (same filesystem, so os.replace is atomic); open() honours the umask
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.part")
        self._fh: BinaryIO | None = open(self._tmp, "xb")
        self._fh.write(b"RIFF" + struct.pack("<I", 0) + self._header + struct.pack("<I", 0))

    def write(self, frames: np.ndarray) -> None:
        """Append float frames in [-1, 1]: shape (n,) for mono or (n, channels)."""
        assert self._fh is not None, "write() after close()"
        block = np.asarray(frames, dtype=np.float64)
        if block.ndim == 1:
            block = block[:, None]
        assert block.ndim == 2 and block.shape[1] == self.channels, (
            f"{block.shape=} but the file has {self.channels} channels"
        )
        if not np.all(np.isfinite(block)):
            raise ValueError(f"{self.path.name}: audio contains NaN or inf; refusing to write")
        scaled = block * _FULL_SCALE
        if self._dither is not None:  # TPDF, ±1 LSB peak
            scaled = scaled + self._dither.random(scaled.shape) - self._dither.random(scaled.shape)
        codes = np.rint(scaled)
        over = (codes > _MAX_CODE) | (codes < -_FULL_SCALE)
        self.clipped += int(over.sum())
        codes = np.clip(codes, -_FULL_SCALE, _MAX_CODE).astype("<i4")  # (n, ch)
        data = codes.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # little-endian 3 bytes
        self._fh.write(data)
        self.frames += block.shape[0]

    def close(self) -> None:
        """Patch the RIFF and data sizes and move the file into place."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            data_bytes = self.frames * self.channels * BITS // 8
            if data_bytes % 2:
                fh.write(b"\x00")
            riff_size = len(self._header) + 4 + data_bytes + data_bytes % 2
            if 8 + riff_size > self._rf64_from:  # RF64: the sizes go to ds64, in JUNK's place
                fh.seek(0)
                fh.write(b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"ds64"
                         + struct.pack("<I", _DS64.size)
                         + _DS64.pack(riff_size, data_bytes, self.frames, 0))
                riff_size = data_bytes = 0xFFFFFFFF
            fh.seek(4)
            fh.write(struct.pack("<I", riff_size))
            fh.seek(8 + len(self._header))
            fh.write(struct.pack("<I", data_bytes))
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            fh.close()
            self._tmp.unlink(missing_ok=True)
            raise
        if self.clipped:
            log.warning("%s: %d samples clipped to full scale", self.path.name, self.clipped)

    def abort(self) -> None:
        """Discard everything written; `path` is left untouched."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BwfWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _mode_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}ch")


def write_bwf(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sr: int,
    *,
    time_reference: int,
    description: str = "",
    originator: str = "foleyflow",
    originator_reference: str = "",
    origination_datetime: datetime | None = None,
    ixml: str | None = None,
    channel_mask: int | None = None,
    dither: bool = False,
    block_frames: int = 1 << 18,
) -> None:
    """Write `audio` ((n,) or (n, ch) float in [-1, 1]) as a 24-bit Broadcast WAV, atomically."""
    data = np.asarray(audio)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with BwfWriter(
        path,
        sr,
        channels,
        time_reference=time_reference,
        description=description,
        originator=originator,
        originator_reference=originator_reference,
        origination_datetime=origination_datetime,
        ixml=ixml,
        channel_mask=channel_mask,
        dither=dither,
    ) as writer:
        for start in range(0, len(data), block_frames):
            writer.write(data[start : start + block_frames])


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")


def read_bwf_info(path: str | os.PathLike[str]) -> dict:
    """Format and bext/iXML metadata of a WAV file, read from its chunks (no sample decoding).

    Keys: samplerate, channels, bits, frames, channel_mask (WAVE_FORMAT_EXTENSIBLE's speaker
    layout, None for plain PCM), time_reference, description, originator,
    originator_reference, origination_date, origination_time, version, coding_history, ixml,
    rf64 (True for an RF64 file: its sizes read from `ds64`).
    bext keys are None when the file has no bext chunk.
    """
    info: dict = dict.fromkeys(
        ["time_reference", "description", "originator", "originator_reference",
         "origination_date", "origination_time", "version", "coding_history", "ixml"]
    )
    with open(path, "rb") as fh:
        riff, _, wave = struct.unpack("<4sI4s", fh.read(12))
        if riff not in (b"RIFF", b"RF64") or wave != b"WAVE":
            raise ValueError(f"{path}: not a RIFF/WAVE or RF64 file")
        info["rf64"] = riff == b"RF64"
        data_bytes = ds64_data = None
        while header := fh.read(8):
            if len(header) < 8:
                break
            fourcc, size = struct.unpack("<4sI", header)
            if fourcc == b"data":
                data_bytes = size if size != 0xFFFFFFFF or ds64_data is None else ds64_data
                size = data_bytes
                fh.seek(size + size % 2, os.SEEK_CUR)
                continue
            payload = fh.read(size + size % 2)[:size]
            if fourcc == b"ds64":
                ds64_data = _DS64.unpack(payload[:_DS64.size])[1]
            elif fourcc == b"fmt ":
                tag, channels, sr, _, block_align, bits = struct.unpack("<HHIIHH", payload[:16])
                mask = struct.unpack("<I", payload[20:24])[0] \
                    if tag == _WAVE_FORMAT_EXTENSIBLE and len(payload) >= 24 else None
                info.update(samplerate=sr, channels=channels, bits=bits, block_align=block_align,
                            channel_mask=mask)
            elif fourcc == b"bext":
                fields = BEXT_STRUCT.unpack(payload[: BEXT_STRUCT.size])
                info.update(
                    description=_cstr(fields[0]),
                    originator=_cstr(fields[1]),
                    originator_reference=_cstr(fields[2]),
                    origination_date=_cstr(fields[3]),
                    origination_time=_cstr(fields[4]),
                    time_reference=fields[5],
                    version=fields[6],
                    coding_history=_cstr(payload[BEXT_STRUCT.size :]),
                )
            elif fourcc == b"iXML":
                info["ixml"] = payload.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    if "samplerate" not in info or data_bytes is None:
        raise ValueError(f"{path}: WAV without fmt or data chunk")
    info["frames"] = data_bytes // info.pop("block_align")
    return info
