"""Audio → the MiniLM sentence space, so a recording can stand in for a prompt ("like this").

Network: normalized log-mel (B, N_MELS, T) → four Conv1d blocks (k = 5, GELU, BatchNorm-free
GroupNorm; stride 2 in the last three) → mean and max over the frames that hold audio
(`mask`) → MLP → 384-d, L2-normalized. Trained CLAP-style against the frozen MiniLM
embeddings of the recordings' catalog captions with a symmetric InfoNCE loss; since many
recordings share a caption ("a footstep on snow"), the targets of each row are spread evenly
over every column with the same caption instead of a one-hot diagonal:

    logits = exp(τ) · A Tᵀ,   L = ½ [CE(logits, P) + CE(logitsᵀ, P)],  P_ij ∝ [cap_i = cap_j]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models import synth_ckpt
from models.audio_repr import N_MELS
from models.diffusion import SEMANTIC_DIM

CHECKPOINT_KIND = "synth_audio_encoder@1"


@dataclass(frozen=True)
class EncoderConfig:
    preset: str
    channels: int = 128
    hidden: int = 256
    dropout: float = 0.1
    out_dim: int = SEMANTIC_DIM


PRESETS = {
    "tiny": EncoderConfig("tiny", channels=128, hidden=256),
    "base": EncoderConfig("base", channels=384, hidden=768),
    "debug": EncoderConfig("debug", channels=32, hidden=64),
}


def get_config(name: str, **overrides) -> EncoderConfig:
    """Preset `name` (tiny: CPU, base: GPU, debug: unit tests) with fields overridden."""
    return synth_ckpt.preset(PRESETS, name, "audio-encoder", **overrides)


class AudioEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        layers: list[nn.Module] = []
        prev = N_MELS
        for stride in (1, 2, 2, 2):
            layers += [nn.Conv1d(prev, c, 5, stride=stride, padding=2), nn.GroupNorm(8, c),
                       nn.GELU()]
            prev = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c, config.hidden), nn.GELU(),
                                  nn.Dropout(config.dropout), nn.Linear(config.hidden, config.out_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # ln(1/0.07), as CLIP

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N_MELS, T) → (B, 384) unit vectors; `mask` (B, T) 1 where the clip has audio."""
        assert mel.ndim == 3 and mel.shape[1] == N_MELS, f"{mel.shape=}"
        h = self.convs(mel)                                        # (B, C, T/8)
        if mask is None:
            mask = torch.ones(mel.shape[0], mel.shape[-1], device=mel.device)
        m = F.adaptive_max_pool1d(mask[:, None].float(), h.shape[-1])  # (B, 1, T/8)
        m = torch.maximum(m, (m.sum(-1, keepdim=True) == 0).float())  # never an empty clip
        mean = (h * m).sum(-1) / m.sum(-1)
        peak = h.masked_fill(m == 0, float("-inf")).amax(-1)
        return F.normalize(self.head(torch.cat([mean, peak], dim=1)), dim=-1)


def build(config: EncoderConfig) -> AudioEncoder:
    return AudioEncoder(config)


def contrastive_loss(audio_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with targets shared among equal captions (see module docstring).

    audio_emb, text_emb (B, D) unit vectors; caption_ids (B,) integer ids of the captions."""
    logits = logit_scale.clamp(max=4.6052).exp() * audio_emb @ text_emb.T   # (B, B), τ ≤ ln 100
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
