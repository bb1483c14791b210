"""Rectified flow: the path, the training target, the Euler sampler and classifier-free guidance.

Path between noise x_0 ~ N(0, I) (t = 0) and data x_1 (t = 1):

    x_t = t · x_1 + (1 − t) · x_0,      target velocity  v = dx_t/dt = x_1 − x_0

A network v_θ(x_t, t, s) regressed on v (mean squared error, `flow_loss`) is integrated from
t = 0 to 1 with `steps` Euler steps on a time grid that spends more steps near the noise
end (t_k = 1 − cos(π k / 2N)... see `time_grid`). Classifier-free guidance (`guided`):

    v = v_θ(x, t, ∅) + w · (v_θ(x, t, s) − v_θ(x, t, ∅))

with ∅ the null condition (zero semantic vector, no envelope control), w the guidance scale
(w = 1: plain conditional). Both halves run as one batch. Nothing here is an nn.Module or
touches global RNG state: noise comes from the caller's `torch.Generator`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t) → v


def interpolate(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for a batch: x1, x0 (B, …), t (B,)."""
    tt = t.view(-1, *([1] * (x1.ndim - 1)))
    return tt * x1 + (1 - tt) * x0


def sample_times(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Training times t ~ logit-normal(0, 1): more weight on the middle of the path."""
    return torch.sigmoid(torch.randn(batch, generator=generator))


def flow_loss(fn: VelocityFn, x1: torch.Tensor, generator: torch.Generator,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching loss of velocity function `fn` on clean data x1 (B, C, T); `mask`
    (B, 1, T) 1 on real frames, 0 on padding."""
    x0 = torch.randn(x1.shape, generator=generator).to(x1)
    t = sample_times(x1.shape[0], generator).to(x1)
    err = (fn(interpolate(x1, x0, t), t) - (x1 - x0)) ** 2
    if mask is None:
        return err.mean()
    m = mask.expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def time_grid(steps: int) -> torch.Tensor:
    """steps + 1 times from 0 to 1, denser near t = 0 where the path is hardest."""
    assert steps >= 1, f"{steps=}"
    k = torch.arange(steps + 1, dtype=torch.float64) / steps
    return (1 - torch.cos(0.5 * math.pi * k)).float()  # 0 → 1, slope 0 at the start


@torch.no_grad()
def sample(fn: VelocityFn, shape: tuple[int, ...], *, steps: int,
           generator: torch.Generator) -> torch.Tensor:
    """Integrate dx/dt = fn(x, t) from x_0 ~ N(0, I) (drawn from `generator`) to t = 1."""
    x = torch.randn(shape, generator=generator)
    grid = time_grid(steps)
    for t0, t1 in zip(grid[:-1], grid[1:]):
        t = torch.full((shape[0],), float(t0))
        x = x + (t1 - t0) * fn(x, t)
    return x


def guided(fn: Callable[..., torch.Tensor], cond: dict[str, torch.Tensor],
           null: dict[str, torch.Tensor], scale: float) -> VelocityFn:
    """Classifier-free guidance around `fn(x, t, **condition)`; `cond` and `null` hold the
    same keys, tensors with the batch first. Scale 1 runs only the conditional half;
    otherwise both halves run as one batch of 2B."""
    assert cond.keys() == null.keys(), f"{cond.keys()=} {null.keys()=}"
    if scale == 1.0:
        return lambda x, t: fn(x, t, **cond)
    both = {k: torch.cat([cond[k], null[k]]) for k in cond}

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        v = fn(torch.cat([x, x]), torch.cat([t, t]), **both)   # (2B, …): [cond; null]
        v_c, v_u = v[:b], v[b:]
        return v_u + scale * (v_c - v_u)
    return velocity
