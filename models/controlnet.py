"""The envelope ControlNet: a trainable copy of the denoiser's encoder half, fed the envelope.

    hint = Z_in(conv stack(control))          control (B, 2, T) from `models.audio_repr`
    h, skips = Encoder_copy(x_t, c, hint)     same weights as the base's encoder at creation
    residuals = [Z_0(skip_0), …, Z_{L-1}(skip_{L-1}), Z_mid(h)]

Every Z is a 1×1 convolution whose weights and bias start at zero, so right after
construction the branch returns exact zeros and the base behaves as before; training then
moves only the branch (`freeze` turns the base's gradients off). The base adds the residuals
to its skips and mid features (`models.diffusion.Denoiser.forward(control=…)`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.audio_repr import CONTROL_CHANNELS
from models.diffusion import Conditioning, Denoiser, DenoiserConfig, Encoder, pad_time

CHECKPOINT_KIND = "synth_controlnet@1"
HINT_CHANNELS = 32


def zero_conv(c_in: int, c_out: int) -> nn.Conv1d:
    conv = nn.Conv1d(c_in, c_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNet(nn.Module):
    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.cond = Conditioning(config)
        self.encoder = Encoder(config)
        self.hint = nn.Sequential(
            nn.Conv1d(CONTROL_CHANNELS, HINT_CHANNELS, 5, padding=2), nn.SiLU(),
            nn.Conv1d(HINT_CHANNELS, HINT_CHANNELS, 5, padding=2), nn.SiLU(),
            zero_conv(HINT_CHANNELS, config.channels[0]))
        self.zero = nn.ModuleList([zero_conv(c, c) for c in config.channels]
                                  + [zero_conv(config.channels[-1], config.channels[-1])])

    @classmethod
    def from_base(cls, base: Denoiser) -> "ControlNet":
        """A branch whose encoder and conditioning start as copies of the base's."""
        net = cls(base.config)
        net.cond.load_state_dict(base.cond.state_dict())  # copies into the branch's own tensors
        net.encoder.load_state_dict(base.encoder.state_dict())
        return net

    def forward(self, x: torch.Tensor, t: torch.Tensor, semantic: torch.Tensor,
                control: torch.Tensor) -> list[torch.Tensor]:
        """Residuals for the base: one (B, C_i, T_i) per level, then the mid block's."""
        assert control.shape == (x.shape[0], CONTROL_CHANNELS, x.shape[-1]), \
            f"{control.shape=}, expected ({x.shape[0]}, {CONTROL_CHANNELS}, {x.shape[-1]})"
        m = self.config.time_multiple
        cond = self.cond(t, semantic)
        hint = self.hint(pad_time(control, m))
        h, skips = self.encoder(pad_time(x, m), cond, hint)
        return [z(f) for z, f in zip(self.zero, skips + [h])]


def freeze(base: Denoiser) -> None:
    """No gradients for the base (and eval mode for its dropout) while the branch trains."""
    base.eval()
    for p in base.parameters():
        p.requires_grad_(False)


def build(config: DenoiserConfig) -> ControlNet:
    return ControlNet(config)


def controlled(base: Denoiser, branch: ControlNet | None) -> Callable[..., torch.Tensor]:
    """The velocity function fn(x, t, semantic, control, control_weight) the sampler calls:
    the base steered by `branch`, the residuals of row i scaled by control_weight[i] (0 = no
    envelope, the null condition of guidance; the branch only runs on rows with weight > 0)."""
    def fn(x: torch.Tensor, t: torch.Tensor, semantic: torch.Tensor, control: torch.Tensor,
           control_weight: torch.Tensor) -> torch.Tensor:
        rows = torch.nonzero(control_weight > 0).flatten()
        if branch is None or len(rows) == 0:
            return base(x, t, semantic)
        part = branch(x[rows], t[rows], semantic[rows], control[rows])
        residuals = []
        for r in part:                                  # (b, C_i, T_i) → (B, C_i, T_i)
            full = r.new_zeros((x.shape[0], *r.shape[1:]))
            full[rows] = r * control_weight[rows, None, None]
            residuals.append(full)
        return base(x, t, semantic, control=residuals)
    return fn
