"""Mel → 48 kHz waveform: a Vocos-style vocoder trained in the project.

The network never generates samples one by one: a 1-D ConvNeXt stack over the mel frames
predicts, for every frame, a log-magnitude and a phase (as an unnormalized 2-D vector) for
each of the N_FFT/2 + 1 bins of an STFT with the representation's hop; an inverse STFT turns
them into audio. That is a few hundred kFLOPs per output frame (50 frames per second) instead
of a transposed-conv upsampler's per-sample cost, so it runs faster than real time on one CPU
core. Shapes: mel (B, N_MELS, T) → spec (B, N_FFT/2+1, T) complex → audio (B, T · HOP).

Training loss (`stft_loss`): multi-resolution STFT loss (spectral convergence + L1 of log
magnitudes at three resolutions) plus an L1 on the normalized log-mel of the output; a GAN is
left for the base preset (phase 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models import synth_ckpt
from models.audio_repr import HOP, N_MELS, log_mel

CHECKPOINT_KIND = "synth_vocoder@1"
VOC_N_FFT = 4 * HOP  # 3840: 80 ms window, 1921 bins
_MAX_LOG_MAG = 6.0  # exp(6) ≈ 400: clamps a runaway magnitude early in training


@dataclass(frozen=True)
class VocoderConfig:
    preset: str
    channels: int = 128
    blocks: int = 4
    kernel: int = 7
    mult: int = 3


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
        self.bins = VOC_N_FFT // 2 + 1
        self.head = nn.Linear(c, 3 * self.bins)  # log-magnitude, phase x, phase y
        self.register_buffer("window", torch.hann_window(VOC_N_FFT), persistent=False)

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, T) normalized log-mel → (B, bins, T) complex STFT."""
        assert mel.ndim == 3 and mel.shape[1] == N_MELS, f"{mel.shape=}, expected (B, {N_MELS}, T)"
        h = self.embed(mel)                                    # (B, C, T)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        h = self.head(self.final_norm(h.transpose(1, 2)))      # (B, T, 3·bins)
        logmag, px, py = h.transpose(1, 2).chunk(3, dim=1)     # 3 × (B, bins, T)
        mag = torch.exp(logmag.clamp(max=_MAX_LOG_MAG))
        phase = torch.atan2(py, px)
        return torch.polar(mag, phase)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, T) → (B, T · HOP) audio at 48 kHz."""
        spec = self.spectrum(mel)
        t = mel.shape[-1]
        # centred iSTFT: frame k is centred on sample k·HOP, like the analysis in log_mel
        audio = torch.istft(spec, VOC_N_FFT, HOP, window=self.window, center=True,
                            length=t * HOP)
        return audio


def build(config: VocoderConfig) -> Vocoder:
    return Vocoder(config)


_RESOLUTIONS = ((512, 128), (2048, 512), (8192, 2048))


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
