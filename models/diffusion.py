"""The denoiser: a 1-D U-Net over normalized log-mel frames that predicts a flow velocity.

Input x_t (B, N_MELS, T) on the straight path between noise (t = 0) and data (t = 1)
(`models.flow_sampler`), the time t (B,) and a semantic vector s (B, 384) in the MiniLM space
(text through `models.text_embed`, audio through `models.audio_encoder`; all zeros = "no
semantic condition", the null vector of classifier-free guidance). Output: the velocity
v ≈ x_1 − x_0, (B, N_MELS, T).

Conditioning: c = MLP(sinusoid(1000 t)) + Linear(s) (B, D) modulates every residual block by
FiLM (per-channel scale and shift after the first conv). Layout (tiny, channels 64/128/128):

    in 1×1 conv ─ L0 ResBlock ─skip0─ ↓2 ─ L1 ResBlock ─skip1─ ↓2 ─ L2 ResBlock ─skip2─ mid
    out ◀─ ResBlock(cat skip0) ◀─ ↑2 ─ ResBlock(cat skip1) ◀─ ↑2 ─ ResBlock(cat skip2) ◀─┘

The encoder half (in conv, levels, mid) is its own module so `models.controlnet` can copy it;
`forward(..., control=[r_0, …, r_L-1, r_mid])` adds the ControlNet's residuals to the skips
and the mid features. Residual blocks use dilated convs (1, 2, 4 …) so the receptive field at
the lowest level covers a few seconds; `base` adds self-attention in the mid block.
T is padded to a multiple of 2^(levels-1) inside `forward` and the output cropped back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models import synth_ckpt
from models.audio_repr import N_MELS
from models.text_embed import EMBED_DIM

CHECKPOINT_KIND = "synth_denoiser@1"
SEMANTIC_DIM = EMBED_DIM  # the MiniLM sentence space


@dataclass(frozen=True)
class DenoiserConfig:
    preset: str
    channels: tuple[int, ...] = (64, 128, 128)
    blocks_per_level: int = 1
    cond_dim: int = 128
    attn_heads: int = 0
    dropout: float = 0.0
    semantic_dim: int = SEMANTIC_DIM
    n_mels: int = N_MELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def time_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)


PRESETS = {
    "tiny": DenoiserConfig("tiny", channels=(64, 128, 128), blocks_per_level=1, cond_dim=128),
    "base": DenoiserConfig("base", channels=(256, 512, 768, 768), blocks_per_level=2,
                           cond_dim=512, attn_heads=8, dropout=0.1),
    "debug": DenoiserConfig("debug", channels=(16, 32), cond_dim=32),
}


def get_config(name: str, **overrides) -> DenoiserConfig:
    """Preset `name` (tiny: CPU, base: GPU, debug: unit tests) with fields overridden."""
    return synth_ckpt.preset(PRESETS, name, "denoiser", **overrides)


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    """GroupNorm · SiLU · conv · FiLM(c) · GroupNorm · SiLU · dropout · dilated conv, residual."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, dilation: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=dilation, dilation=dilation)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                  # (B, C_out, T)
        scale, shift = self.film(cond)[:, :, None].chunk(2, 1)  # 2 × (B, C_out, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)                  # (B, T, C)
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2)


class Conditioning(nn.Module):
    """Time step and semantic vector → one conditioning vector (B, cond_dim)."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        d = config.cond_dim
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.semantic = nn.Linear(config.semantic_dim, d)
        self.dim = d

    def forward(self, t: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = 1000.0 * t[:, None].float() * freqs[None]               # (B, D/2)
        emb = torch.cat([angles.sin(), angles.cos()], dim=1)             # (B, D)
        return self.time_mlp(emb) + self.semantic(semantic)


class Encoder(nn.Module):
    """The U-Net's first half: in conv, one level per channel width, the mid block."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        ch, d, p = config.channels, config.cond_dim, config.dropout
        self.inp = nn.Conv1d(config.n_mels, ch[0], 1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = ch[0]
        for i, c in enumerate(ch):
            self.levels.append(nn.ModuleList(
                ResBlock(prev if j == 0 else c, c, d, 2 ** (j + i), p)
                for j in range(config.blocks_per_level)))
            prev = c
            if i < len(ch) - 1:
                self.downs.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
        self.mid1 = ResBlock(ch[-1], ch[-1], d, 2, p)
        self.attn = SelfAttention(ch[-1], config.attn_heads) if config.attn_heads else None
        self.mid2 = ResBlock(ch[-1], ch[-1], d, 4, p)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, hint: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, N_MELS, T) → mid features (B, C_last, T / 2^(L-1)) and one skip per level."""
        h = self.inp(x)
        if hint is not None:
            h = h + hint
        skips = []
        for i, level in enumerate(self.levels):
            for block in level:
                h = block(h, cond)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        h = self.mid1(h, cond)
        if self.attn is not None:
            h = self.attn(h)
        return self.mid2(h, cond), skips


class Decoder(nn.Module):
    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        ch, d, p = config.channels, config.cond_dim, config.dropout
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in reversed(range(len(ch))):
            self.levels.append(nn.ModuleList(
                ResBlock(2 * ch[i] if j == 0 else ch[i], ch[i], d, 2 ** j, p)
                for j in range(config.blocks_per_level)))
            if i > 0:
                self.ups.append(nn.Conv1d(ch[i], ch[i - 1], 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(ch[0]), ch[0])
        self.out = nn.Conv1d(ch[0], config.n_mels, 3, padding=1)

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor
                ) -> torch.Tensor:
        for k, level in enumerate(self.levels):
            h = torch.cat([h, skips[-1 - k]], dim=1)           # (B, 2·C_i, T_i)
            for block in level:
                h = block(h, cond)
            if k < len(self.ups):
                h = self.ups[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


def pad_time(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad the last axis (replicating the edge) to a multiple of `multiple`."""
    extra = (-x.shape[-1]) % multiple
    return F.pad(x, (0, extra), mode="replicate") if extra else x


class Denoiser(nn.Module):
    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.cond = Conditioning(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(self, x: torch.Tensor, t: torch.Tensor, semantic: torch.Tensor,
                control: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Velocity (B, N_MELS, T) for x_t (B, N_MELS, T), t (B,), semantic (B, 384), and
        optionally the ControlNet's residuals (one per level, then the mid block's)."""
        assert x.ndim == 3 and x.shape[1] == self.config.n_mels, f"{x.shape=}"
        assert semantic.shape == (x.shape[0], self.config.semantic_dim), f"{semantic.shape=}"
        n = x.shape[-1]
        cond = self.cond(t, semantic)
        h, skips = self.encoder(pad_time(x, self.config.time_multiple), cond)
        if control is not None:
            assert len(control) == len(skips) + 1, f"{len(control)=}, expected {len(skips) + 1}"
            skips = [s + r for s, r in zip(skips, control[:-1])]
            h = h + control[-1]
        return self.decoder(h, skips, cond)[..., :n]


def build(config: DenoiserConfig) -> Denoiser:
    return Denoiser(config)
