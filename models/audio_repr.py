"""The audio representation the diffusion synthesizer works in, and its envelope control.

Audio is 48 kHz mono. The representation is a normalized log-mel spectrogram at 50 frames/s:
STFT with a 2048-point Hann window every HOP = 960 samples (20 ms, centred frames), 80 mel
bands from 0 to 24 kHz (Slaney), `log(max(mel, 1e-5))` mapped to roughly [-1, 1] by fixed
constants (so no statistics travel with a checkpoint):

    m = (ln(max(mel, 1e-5)) - LOG_MEL_CENTER) / LOG_MEL_SCALE       shape (N_MELS, T)

T = ceil(n_samples / HOP) frames, so a window of T frames is exactly T · HOP samples.

The time control fed to the ControlNet is derived from an envelope in exactly one function,
`control_from_envelope`, for training (envelopes measured on the training audio with the
project's one envelope, `models.audio_env.rms_envelope`, and its onsets,
`models.audio_env.detect_onsets`) and for inference (an approved envelope JSON). Two channels
at the mel frame rate:
  0. level: the curve resampled to 50 Hz, in dB mapped to [0, 1] over CONTROL_FLOOR_DB..0 dB;
  1. events: each event's strength placed as a unit-height bump (Gaussian, 15 ms) at its time.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from models.audio_env import detect_onsets, rms_envelope

SR = 48000
HOP = 960
N_FFT = 2048
N_MELS = 80
FRAME_RATE_HZ = SR / HOP  # 50.0
LOG_MEL_FLOOR = 1e-5
LOG_MEL_CENTER = -5.0
LOG_MEL_SCALE = 4.0
ENVELOPE_RATE_HZ = 100.0  # the envelope contract's usual rate; any rate is resampled
CONTROL_CHANNELS = 2
CONTROL_FLOOR_DB = -80.0
EVENT_WIDTH_S = 0.015


def n_frames(n_samples: int) -> int:
    """Mel frames for `n_samples` of audio (centred frames, one per HOP)."""
    return -(-int(n_samples) // HOP)


@lru_cache(maxsize=2)
def _mel_basis(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    import librosa

    basis = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SR / 2)
    return torch.from_numpy(basis).to(dtype)  # (N_MELS, N_FFT/2+1)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """(B, n) or (n,) float audio at SR → (B, N_MELS, T) or (N_MELS, T) normalized log-mel."""
    squeeze = audio.ndim == 1
    x = audio[None] if squeeze else audio
    assert x.ndim == 2, f"{audio.shape=}, expected (B, n) or (n,)"
    t = n_frames(x.shape[-1])
    window = torch.hann_window(N_FFT, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (B, F, n//HOP + 1)
    mel = _mel_basis().to(x.device, x.dtype) @ spec.abs()  # (B, N_MELS, frames)
    m = (torch.log(mel.clamp_min(LOG_MEL_FLOOR)) - LOG_MEL_CENTER) / LOG_MEL_SCALE
    m = m[..., :t]
    return m[0] if squeeze else m


def _resample_curve(curve: np.ndarray, rate_hz: float, frames: int) -> np.ndarray:
    """The curve's mean over each mel frame's span (linear RMS → power mean → RMS)."""
    c = np.asarray(curve, dtype=np.float64)
    if len(c) == 0:
        return np.zeros(frames)
    t_src = (np.arange(len(c)) + 0.5) / rate_hz
    t_dst = np.arange(frames) / FRAME_RATE_HZ  # frame centres (centred STFT)
    edges = np.concatenate([t_dst - 0.5 / FRAME_RATE_HZ, [t_dst[-1] + 0.5 / FRAME_RATE_HZ]])
    power = c * c
    cum = np.concatenate([[0.0], np.cumsum(power)])
    idx = np.clip(np.searchsorted(t_src, edges), 0, len(c))
    count = np.diff(idx)
    sums = np.diff(cum[idx])
    interp = np.interp(t_dst, t_src, power)  # frames with no source sample in them
    mean = np.where(count > 0, sums / np.maximum(count, 1), interp)
    return np.sqrt(np.maximum(mean, 0.0))


def control_from_envelope(curve: np.ndarray, rate_hz: float, events: list[dict],
                          frames: int) -> np.ndarray:
    """(CONTROL_CHANNELS, frames) float32 control from an envelope's curve and events."""
    level = _resample_curve(curve, rate_hz, frames)
    db = 20.0 * np.log10(np.maximum(level, 10 ** (CONTROL_FLOOR_DB / 20)))
    out = np.zeros((CONTROL_CHANNELS, frames), np.float32)
    out[0] = np.clip(1.0 - db / CONTROL_FLOOR_DB, 0.0, 1.0)
    t = np.arange(frames) / FRAME_RATE_HZ
    for ev in events:
        bump = float(ev.get("strength", 1.0)) * np.exp(
            -0.5 * ((t - float(ev["t"])) / EVENT_WIDTH_S) ** 2)
        out[1] = np.maximum(out[1], bump)
    return out


def control_from_audio(audio: np.ndarray) -> np.ndarray:
    """The control a recording would have had: its envelope (the project's one RMS envelope at
    ENVELOPE_RATE_HZ) and its detected onsets, through `control_from_envelope`."""
    curve = rms_envelope(audio, SR, ENVELOPE_RATE_HZ)
    events = [{"t": float(t), "strength": 1.0} for t in detect_onsets(audio, SR)]
    return control_from_envelope(curve, ENVELOPE_RATE_HZ, events, n_frames(len(audio)))

