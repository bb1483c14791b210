"""Checkpoints of the synthesizer's networks: safetensors weights + JSON header that rebuilds them.

The header (safetensors metadata key "foleyflow") holds the kind (which network, which
version), the config dataclass as a dict and the caller's metadata (training summary, the
checkpoint hashes it was trained on top of). Loading checks the kind, so handing the vocoder
file to the denoiser loader is a clear error instead of a state-dict mismatch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

C = TypeVar("C")


def preset(presets: dict[str, C], name: str, what: str, **overrides: Any) -> C:
    """Config `presets[name]` with fields overridden; ValueError naming `what` if unknown."""
    if name not in presets:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of {', '.join(presets)}")
    return replace(presets[name], **overrides)


def save(model: nn.Module, config: Any, path: Path, kind: str, metadata: dict) -> None:
    """Write weights and header (config, metadata) to `path` (callers write atomically)."""
    header = {"kind": kind, "config": asdict(config), "metadata": metadata}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "foleyflow": json.dumps(header)})


def save_half(src: Path, dst: Path) -> None:
    """Copy a checkpoint with its floating-point tensors stored as float16 (half the bytes;
    `load` casts them back to the network's float32), header unchanged but for `stored`."""
    header = read_header(src)
    header["metadata"] = {**header.get("metadata", {}), "stored": "float16"}
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    save_file(tensors, str(dst), metadata={"format": "pt", "foleyflow": json.dumps(header)})


def read_header(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get("foleyflow")
    return json.loads(raw) if raw else {}


def load(path: Path, kind: str, config_cls: Callable[..., C],
         build: Callable[[C], nn.Module]) -> tuple[nn.Module, C, dict]:
    """The network (eval mode, CPU), its config and metadata; ValueError on the wrong kind."""
    header = read_header(path)
    if header.get("kind") != kind:
        raise ValueError(f"{path}: not a {kind} checkpoint (found {header.get('kind')!r}); "
                         "pick the right file or retrain with `foley train synth`")
    config = config_cls(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in header["config"].items()})
    model = build(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), config, header["metadata"]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def state_sha256(model: nn.Module) -> str:
    """Hash of a network's weights (checks that a frozen network stayed frozen)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def flops(model: nn.Module, *args: torch.Tensor, **kwargs: Any) -> int:
    """Floating-point operations of one forward call (torch's FLOP counter, matmuls/convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return int(counter.get_total_flops())
