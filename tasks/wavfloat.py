"""32-bit float WAV for the stems stages hand to each other (synth → spatial → conform).

Written by hand rather than by soundfile: libsndfile adds a `PEAK` chunk to float WAVs that
carries the wall-clock time of writing, so the same samples made a different file — and a
different content-addressed object — on every run. Here the file is a function of the samples:
RIFF/WAVE · fmt (IEEE float, 18 bytes) · fact · data.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_WAVE_FORMAT_IEEE_FLOAT = 0x0003


def write_float_wav(path: str | Path, audio: np.ndarray, samplerate: int) -> None:
    """Write `audio` ((n,) or (n, channels), any float dtype) as a 32-bit float WAV."""
    a = np.asarray(audio, dtype="<f4")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {a.shape}")
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:  # a stem of NaN would reach every mix it is summed into
        raise ValueError(f"{Path(path).name}: {bad} of {a.size} samples are NaN or infinite; "
                         "nothing was written")
    frames, channels = a.shape
    data = np.ascontiguousarray(a).tobytes()
    block = 4 * channels
    fmt = struct.pack("<HHIIHHH", _WAVE_FORMAT_IEEE_FLOAT, channels, samplerate,
                      samplerate * block, block, 32, 0)
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
              + b"fact" + struct.pack("<II", 4, frames)
              + b"data" + struct.pack("<I", len(data)))
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(data)) + b"WAVE")
        f.write(chunks)
        f.write(data)
