"""RMS-Mapper (Stable-V2A stage 1): per-step visual inputs → 64-class µ-law RMS at 125 Hz.

Input (B, T_in, D) at 31.25 Hz (`models.v2a_inputs`), standardized by per-dimension mean and
std kept in the model (set from training data with `set_input_stats`, saved with it). Three
conv blocks, Conv1d(k=5) + BatchNorm + ReLU + dropout + nearest Upsample (×2, ×2, ×1: 125 Hz),
then a 2-layer bidirectional LSTM and a linear head: logits (B, 4 · T_in, 64) over the classes
of `models.rms_targets`. Presets since the second training round add an onset head (a linear
layer on the same LSTM states → one logit per 125 Hz frame: "a sounding contact starts
here", trained with `onset_loss` against `rms_targets.onset_target`); checkpoints without it
still load (`MapperConfig.onset_head` False) and are decoded from the curve alone.
Checkpoints are safetensors with the config and the caller's metadata as JSON in the header,
so `load_checkpoint` rebuilds the exact network without pickle.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from models.rms_targets import N_CLASSES, RATE_HZ
from models.v2a_inputs import CONTACT_DIM, IN_RATE_HZ, INPUT_DIM

CHECKPOINT_KIND = "rms_mapper@1"
_STD_FLOOR = 1e-6  # a dimension that never varied in training is left unscaled


@dataclass(frozen=True)
class MapperConfig:
    preset: str
    in_dim: int = INPUT_DIM
    channels: int = 64
    hidden: int = 64
    dropout: float = 0.1
    n_classes: int = N_CLASSES
    in_rate_hz: float = IN_RATE_HZ
    out_rate_hz: float = RATE_HZ
    upsample: tuple[int, ...] = (2, 2, 1)
    onset_head: bool = False  # False for checkpoints written before the head existed
    contact_inputs: bool = False  # inputs carry the tracker's contacts (v2a_inputs block D)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upsample", tuple(int(f) for f in self.upsample))  # JSON gives a list
        rate = self.in_rate_hz * math.prod(self.upsample)
        assert abs(rate - self.out_rate_hz) < 1e-9, f"{self.in_rate_hz=} × {self.upsample=} ≠ {self.out_rate_hz=}"


PRESETS = {
    "tiny": MapperConfig("tiny", in_dim=INPUT_DIM + CONTACT_DIM, channels=64, hidden=64,
                         dropout=0.1, onset_head=True, contact_inputs=True),
    "base": MapperConfig("base", in_dim=INPUT_DIM + CONTACT_DIM, channels=256, hidden=256,
                         dropout=0.2, onset_head=True, contact_inputs=True),
}


def get_config(name: str, **overrides) -> MapperConfig:
    """The preset `name` ("tiny" for tests and CPU, "base"), with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown RMS-Mapper preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class RMSMapper(nn.Module):
    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("in_mean", torch.zeros(config.in_dim))
        self.register_buffer("in_std", torch.ones(config.in_dim))
        blocks: list[nn.Module] = []
        width = config.in_dim
        for factor in config.upsample:
            blocks += [nn.Conv1d(width, config.channels, kernel_size=5, padding=2),
                       nn.BatchNorm1d(config.channels), nn.ReLU(), nn.Dropout(config.dropout),
                       nn.Upsample(scale_factor=factor, mode="nearest")]
            width = config.channels
        self.convs = nn.Sequential(*blocks)
        self.lstm = nn.LSTM(config.channels, config.hidden, num_layers=2, batch_first=True,
                            bidirectional=True, dropout=config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, config.n_classes)
        self.onset = nn.Linear(2 * config.hidden, 1) if config.onset_head else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T_in, in_dim) raw inputs → class logits (B, 4 · T_in, n_classes) and onset
        logits (B, 4 · T_in), None without an onset head."""
        assert x.ndim == 3 and x.shape[2] == self.config.in_dim, f"{x.shape=}, expected (B, T_in, {self.config.in_dim})"
        x = (x - self.in_mean) / self.in_std
        h = self.convs(x.transpose(1, 2))      # (B, C, 4·T_in)
        h, _ = self.lstm(h.transpose(1, 2))    # (B, 4·T_in, 2H)
        h = self.drop(h)
        onset = self.onset(h)[..., 0] if self.onset is not None else None
        return self.head(h), onset             # (B, 4·T_in, n_classes), (B, 4·T_in)


def build(config: MapperConfig) -> RMSMapper:
    return RMSMapper(config)


def set_input_stats(model: RMSMapper, mean: np.ndarray, std: np.ndarray) -> None:
    """Store the training inputs' per-dimension mean and std in the model (saved with it)."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    shape = (model.config.in_dim,)
    assert mean.shape == shape and std.shape == shape, f"{mean.shape=} {std.shape=}, expected {shape}"
    assert np.isfinite(mean).all() and np.isfinite(std).all(), "input statistics must be finite"
    std = np.where(std < _STD_FLOOR, 1.0, std)
    with torch.no_grad():
        model.in_mean.copy_(torch.from_numpy(mean))
        model.in_std.copy_(torch.from_numpy(std))


def loss(logits: torch.Tensor, smoothed_targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against smoothed class distributions, averaged over unmasked frames.

    logits and smoothed_targets (B, T, n_classes), mask (B, T) true/1 where the frame is real
    (0 on padding, e.g. target frames beyond the clip).
    """
    assert logits.shape == smoothed_targets.shape, f"{logits.shape=} {smoothed_targets.shape=}"
    assert mask.shape == logits.shape[:2], f"{mask.shape=}, expected {tuple(logits.shape[:2])}"
    ce = -(smoothed_targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)  # (B, T)
    m = mask.to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0)


ONSET_POS_WEIGHT = 10.0  # onset frames are ~2 % of all frames


def onset_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of onset logits (B, T) against `rms_targets.onset_target` bumps,
    positives weighted by ONSET_POS_WEIGHT, averaged over unmasked frames."""
    assert logits.shape == targets.shape == mask.shape, f"{logits.shape=} {targets.shape=} {mask.shape=}"
    bce = F.binary_cross_entropy_with_logits(
        logits, targets, reduction="none",
        pos_weight=torch.tensor(ONSET_POS_WEIGHT, dtype=logits.dtype, device=logits.device))
    m = mask.to(bce.dtype)
    return (bce * m).sum() / m.sum().clamp_min(1.0)


def predict(model: RMSMapper, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(T_in, in_dim) inputs of one clip → (4 · T_in, n_classes) float32 class probabilities
    and (4 · T_in,) float32 onset probabilities (None without an onset head)."""
    was_training = model.training
    device = model.in_mean.device
    model.eval()
    try:
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(inputs, dtype=np.float32), device=device)[None]  # (1, T_in, D)
            logits, onset = model(x)
            probs = torch.softmax(logits[0], dim=-1).cpu().numpy()  # (4·T_in, n_classes)
            onset_p = torch.sigmoid(onset[0]).cpu().numpy() if onset is not None else None
    finally:
        model.train(was_training)
    return probs, onset_p


def save_checkpoint(model: RMSMapper, config: MapperConfig, path: Path, extra_metadata: dict) -> None:
    """Weights, input statistics and BatchNorm state as safetensors; config + metadata as JSON."""
    assert config == model.config, f"{config=} does not describe this model ({model.config=})"
    header = {"kind": CHECKPOINT_KIND, "config": asdict(config), "metadata": extra_metadata}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "foleyflow": json.dumps(header)})


def load_checkpoint(path: Path) -> tuple[RMSMapper, MapperConfig, dict]:
    """The model (eval mode, CPU), its config and the metadata saved with it."""
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get("foleyflow")
    header = json.loads(raw) if raw else {}
    if header.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not an RMS-Mapper checkpoint (expected kind {CHECKPOINT_KIND!r}, "
                         f"found {header.get('kind')!r}); retrain or pick another file")
    config = MapperConfig(**header["config"])
    model = build(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), config, header["metadata"]
