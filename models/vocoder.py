"""Mel → 48 kHz waveform: a Vocos-style vocoder trained in the project.

The network never generates samples one by one: a 1-D ConvNeXt stack over the mel frames
predicts a log-magnitude and a phase (as an unnormalized 2-D vector) for each of the
n_fft/2 + 1 bins of an STFT; an inverse STFT turns them into audio. That is a few hundred
kFLOPs per output frame (50 frames per second) instead of a transposed-conv upsampler's
per-sample cost, so it runs faster than real time on one CPU core.

Time resolution (phase 3): every mel frame (20 ms) yields `sub_frames` STFT frames, so the
synthesis STFT runs at hop HOP / sub_frames with an n_fft-point Hann window. The `tiny` and
`base` presets use 4 sub-frames of a 960-point window: 20 ms grains every 5 ms (75 % overlap,
COLA), 481 bins. The phase-2 geometry (one 3840-point, 80 ms frame per mel frame) spread an
attack over ±40 ms of pre-echo and lost a third of the onsets even from the true mel; a grain
can now smear an attack over ±10 ms at most. Sub-frame s of mel frame k is centred at
k·HOP + (s − 1)·HOP/sub_frames (−5, 0, 5, 10 ms): the one before the frame centre is dropped
for k = 0 and the last two grains of the signal are silent (the iSTFT trims half a window at
each end). Shapes: mel (B, N_MELS, T) → spec (B, n_fft/2+1, T·sub_frames + 1) complex →
audio (B, T · HOP).

Training loss (`stft_loss`): multi-resolution STFT loss (spectral convergence + L1 of log
magnitudes) at five resolutions from 128-point / 32-hop (0.7 ms: pre-echo before an attack
costs) to 8192 / 2048, plus an L1 on the normalized log-mel of the output. No adversarial
loss yet (an L1 on the 5 ms log-RMS envelope was tried and lowered onset recall on the
validation scenes; docs/BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models import synth_ckpt
from models.audio_repr import HOP, N_MELS, log_mel

CHECKPOINT_KIND = "synth_vocoder@2"  # @1: one 3840-point frame per mel frame (phase 2)
_MAX_LOG_MAG = 6.0  # exp(6) ≈ 400: clamps a runaway magnitude early in training


@dataclass(frozen=True)
class VocoderConfig:
    preset: str
    channels: int = 128
    blocks: int = 4
    kernel: int = 7
    mult: int = 3
    n_fft: int = 960      # synthesis STFT window (20 ms)
    sub_frames: int = 4   # STFT frames per mel frame: hop HOP / sub_frames (5 ms)

    @property
    def hop(self) -> int:
        return HOP // self.sub_frames


PRESETS = {
    "tiny": VocoderConfig("tiny", channels=128, blocks=4),
    "base": VocoderConfig("base", channels=512, blocks=8),
    "debug": VocoderConfig("debug", channels=32, blocks=1),
}


def get_config(name: str, **overrides) -> VocoderConfig:
    """Preset `name` (tiny: CPU, base: GPU, debug: unit tests) with fields overridden."""
    return synth_ckpt.preset(PRESETS, name, "vocoder", **overrides)


class ConvNeXt1d(nn.Module):
    """Depthwise conv · LayerNorm · pointwise MLP · layer scale, residual."""

    def __init__(self, channels: int, kernel: int, mult: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, mult * channels)
        self.pw2 = nn.Linear(mult * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(x).transpose(1, 2)                 # (B, T, C)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))   # (B, T, C)
        return x + (self.scale * h).transpose(1, 2)   # (B, C, T)


class Vocoder(nn.Module):
    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.embed = nn.Conv1d(N_MELS, c, config.kernel, padding=config.kernel // 2)
        self.norm = nn.LayerNorm(c)
        self.blocks = nn.ModuleList(ConvNeXt1d(c, config.kernel, config.mult)
                                    for _ in range(config.blocks))
        self.final_norm = nn.LayerNorm(c)
        assert HOP % config.sub_frames == 0 and config.n_fft >= 2 * config.hop, config
        self.bins = config.n_fft // 2 + 1
        # per sub-frame: log-magnitude, phase x, phase y
        self.head = nn.Linear(c, config.sub_frames * 3 * self.bins)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, T) normalized log-mel → (B, bins, T·sub_frames + 1) complex STFT whose
        frame j is centred on sample j·hop (see module doc)."""
        assert mel.ndim == 3 and mel.shape[1] == N_MELS, f"{mel.shape=}, expected (B, {N_MELS}, T)"
        h = self.embed(mel)                                    # (B, C, T)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        h = self.head(self.final_norm(h.transpose(1, 2)))      # (B, T, S·3·bins)
        b, t, s = h.shape[0], h.shape[1], self.config.sub_frames
        h = h.reshape(b, t * s, 3, self.bins).permute(0, 2, 3, 1)  # (B, 3, bins, T·S)
        # grain k·S + s is centred at (k·S + s − 1)·hop: drop the first, two silent at the end
        h = F.pad(h[..., 1:], (0, 2))
        logmag, px, py = h.unbind(1)                             # 3 × (B, bins, T·S + 1)
        mag = torch.exp(logmag.clamp(max=_MAX_LOG_MAG))
        silent = torch.arange(mag.shape[-1], device=mag.device) >= mag.shape[-1] - 2
        mag = mag.masked_fill(silent, 0.0)  # the two grains past the last mel frame
        phase = torch.atan2(py, px)
        return torch.polar(mag, phase)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, T) → (B, T · HOP) audio at 48 kHz."""
        spec = self.spectrum(mel)
        t = mel.shape[-1]
        # centred iSTFT: frame j is centred on sample j·hop (mel frame k on sample k·HOP)
        audio = torch.istft(spec, self.config.n_fft, self.config.hop, window=self.window,
                            center=True, length=t * HOP)
        return audio


def build(config: VocoderConfig) -> Vocoder:
    return Vocoder(config)


_RESOLUTIONS = ((128, 32), (256, 64), (512, 128), (2048, 512), (8192, 2048))


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    return torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1) + log-mel L1.

    pred, target (B, n) audio at 48 kHz of equal length."""
    assert pred.shape == target.shape, f"{pred.shape=} {target.shape=}"
    total = pred.new_zeros(())
    for n_fft, hop in _RESOLUTIONS:
        p, t = _stft_mag(pred, n_fft, hop), _stft_mag(target, n_fft, hop)
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp_min(1e-5)
        total = total + sc + F.l1_loss(torch.log(p), torch.log(t))
    mel_l1 = F.l1_loss(log_mel(pred), log_mel(target))
    return total / len(_RESOLUTIONS) + mel_l1
