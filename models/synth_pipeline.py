"""The diffusion synthesizer assembled: checkpoints → networks → `generate(...)` → 48 kHz audio.

    semantic s (384,) ─┐         control (2, T) ─▶ ControlNet ─ residuals ─┐
                       ▼                                                   ▼
    x_0 ~ N(0, I) ─ Euler steps of guided v(x, t) = Denoiser(x, t, s, residuals) ─▶ mel x_1
                                                                   ─▶ Vocoder ─▶ audio
per window of `models.synth_windows`, joined with equal-power crossfades; an envelope's
rendering then goes through the envelope follow stage (`models.envelope_follow`) and the
limiter (`finish`). Without a semantic vector the null (zero) vector is used (envelope-only
generation); without a control the ControlNet is skipped (text-only generation). Guidance
contrasts the full condition with the null one (zero semantic, no control). Noise comes only
from generators seeded with (seed, window index).

Checkpoints live in one folder as synth_<stage>_<preset>.safetensors (`checkpoint_path`);
`load` says which `foley train synth` command makes the ones that are missing.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError

from models import audio_encoder, controlnet, diffusion, synth_ckpt, vocoder
from models.audio_repr import HOP, N_MELS, SR, control_from_envelope, n_frames
from models.envelope_follow import Follow, follow_envelope
from models.flow_sampler import guided, sample
from models.synth_windows import render_windowed

STAGES = ("vocoder", "encoder", "base", "control")
WINDOW_S = 5.12
OVERLAP_S = 0.5


class MissingCheckpoint(FileNotFoundError):
    """A stage of the synthesizer has not been trained yet."""


def checkpoint_path(folder: Path, stage: str, preset: str) -> Path:
    assert stage in STAGES, f"{stage=}"
    return Path(folder) / f"synth_{stage}_{preset}.safetensors"


_LOADERS = {
    "vocoder": (vocoder.CHECKPOINT_KIND, vocoder.VocoderConfig, vocoder.build),
    "encoder": (audio_encoder.CHECKPOINT_KIND, audio_encoder.EncoderConfig, audio_encoder.build),
    "base": (diffusion.CHECKPOINT_KIND, diffusion.DenoiserConfig, diffusion.build),
    "control": (controlnet.CHECKPOINT_KIND, diffusion.DenoiserConfig, controlnet.build),
}


def load_stage(folder: Path, stage: str, preset: str) -> tuple[torch.nn.Module, object, dict]:
    """One trained network; MissingCheckpoint naming the command that trains it."""
    path = checkpoint_path(folder, stage, preset)
    if not path.is_file():
        raise MissingCheckpoint(
            f"no {stage} checkpoint at {path}: train it with "
            f"`foley train synth --stage {stage} --preset {preset} --out {Path(folder)}` "
            f"(or --stage all)")
    kind, config_cls, build = _LOADERS[stage]
    try:
        net, cfg, meta = synth_ckpt.load(path, kind, config_cls, build)
    except (SafetensorError, OSError, RuntimeError, TypeError, KeyError) as exc:
        # a truncated or foreign file, or weights that do not fit the network its header names
        raise ValueError(f"{path}: not a usable {stage} checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}); replace it with the file "
                         f"`foley train synth --stage {stage} --preset {preset}` writes") from None
    return net, cfg, meta


@dataclass
class Synthesizer:
    vocoder: vocoder.Vocoder
    denoiser: diffusion.Denoiser
    controlnet: controlnet.ControlNet | None = None
    encoder: audio_encoder.AudioEncoder | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)  # stage → sha256

    @property
    def version(self) -> str:
        """One hash of every checkpoint in use (provenance, cache keys)."""
        doc = "|".join(f"{k}:{v}" for k, v in sorted(self.checkpoints.items()))
        return hashlib.sha256(doc.encode()).hexdigest()


def load(folder: Path, preset: str, *, need: tuple[str, ...] = ("vocoder", "base")
         ) -> Synthesizer:
    """The networks in `folder`; stages in `need` must exist, the others are optional."""
    nets: dict[str, torch.nn.Module] = {}
    configs: dict[str, object] = {}
    hashes = {}
    for stage in STAGES:
        path = checkpoint_path(folder, stage, preset)
        if stage in need or path.is_file():
            nets[stage], configs[stage], _meta = load_stage(folder, stage, preset)
            hashes[stage] = synth_ckpt.file_sha256(path)
    if "control" in configs and "base" in configs and configs["control"] != configs["base"]:
        raise ValueError(
            f"the ControlNet {checkpoint_path(folder, 'control', preset)} was built for another "
            f"denoiser than {checkpoint_path(folder, 'base', preset)} (its copy of the base "
            "network differs): retrain it on this base with `foley train synth --stage "
            f"control --preset {preset}`, or put the base it was trained on beside it")
    return Synthesizer(nets["vocoder"], nets["base"], nets.get("control"), nets.get("encoder"),
                       hashes)


def embed_audio(synth: Synthesizer, mel: torch.Tensor) -> np.ndarray:
    """A recording's log-mel (N_MELS, T) → its (384,) vector in the prompt space."""
    if synth.encoder is None:
        raise MissingCheckpoint("no audio-encoder checkpoint: train it with "
                                "`foley train synth --stage encoder`")
    with torch.no_grad():
        return synth.encoder(mel[None])[0].numpy()


def generate(synth: Synthesizer, *, n_samples: int, semantic: np.ndarray | None = None,
             control: np.ndarray | None = None, steps: int = 16, guidance: float = 3.0,
             seed: int = 0, window_s: float = WINDOW_S, overlap_s: float = OVERLAP_S,
             progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n_samples,) float32 audio at 48 kHz. `semantic` (384,) unit vector or None; `control`
    (2, n_frames(n_samples)) from `models.audio_repr.control_from_envelope` or None."""
    if control is not None:
        assert control.shape[-1] == n_frames(n_samples), f"{control.shape=} for {n_samples=}"
        if synth.controlnet is None:
            raise MissingCheckpoint("an envelope needs the ControlNet: train it with "
                                    "`foley train synth --stage control`")
    sem = torch.zeros(1, diffusion.SEMANTIC_DIM) if semantic is None else \
        torch.as_tensor(semantic, dtype=torch.float32).reshape(1, -1)
    fn = controlnet.controlled(synth.denoiser, synth.controlnet)
    window = int(round(window_s * SR / HOP)) * HOP
    overlap = int(round(overlap_s * SR / HOP)) * HOP
    # windows over whole mel frames, trimmed at the end: every window then starts on a frame
    # (its slice of the control lines up) and the last one reaches the shot's last sample
    padded = n_frames(n_samples) * HOP

    def render(index: int, start: int, length: int) -> np.ndarray:
        frames = n_frames(length)
        f0 = start // HOP
        ctl = torch.zeros(1, 2, frames) if control is None else \
            torch.from_numpy(np.ascontiguousarray(control[:, f0:f0 + frames]))[None]
        weight = torch.tensor([0.0 if control is None else 1.0])
        cond = {"semantic": sem, "control": ctl, "control_weight": weight}
        null = {"semantic": torch.zeros_like(sem), "control": ctl,
                "control_weight": torch.zeros(1)}
        gen = torch.Generator().manual_seed(window_seed(seed, index))
        mel = sample(guided(fn, cond, null, guidance), (1, N_MELS, frames), steps=steps,
                     generator=gen)
        with torch.no_grad():
            return synth.vocoder(mel)[0, :length].numpy()

    return render_windowed(padded, window, overlap, render, progress)[:n_samples]


def envelope_control(env: dict) -> tuple[np.ndarray, int]:
    """The ControlNet input (2, T) of an envelope (the pass's contract: curve at rate_hz,
    events) and the audio length it asks for, in samples."""
    n = int(round(float(env["duration_s"]) * SR))
    control = control_from_envelope(np.asarray(env["curve"], dtype=np.float64),
                                    float(env["rate_hz"]), env["events"], n_frames(n))
    return control, n


def render_envelope(synth: Synthesizer, env: dict, semantic: np.ndarray | None, *,
                    steps: int = 16, guidance: float = 3.0, seed: int = 0,
                    follow: Follow | None = Follow(),
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """An envelope rendered by the diffusion synthesizer: (round(duration_s · SR),) float32.
    The ControlNet's rendering goes through `finish`: the envelope follow stage
    (`models.envelope_follow`; `follow=None` skips it) and the limiter."""
    curve = np.asarray(env.get("curve", []), dtype=np.float64)
    if not (np.all(np.isfinite(curve)) and np.all(curve >= 0)):
        raise ValueError("the envelope's curve must be finite and non-negative (linear RMS); "
                         f"it holds {int(np.sum(~np.isfinite(curve)))} NaN / infinite and "
                         f"{int(np.sum(curve < 0))} negative values")
    control, n = envelope_control(env)
    audio = generate(synth, n_samples=n, semantic=semantic, control=control, steps=steps,
                     guidance=guidance, seed=seed, progress=progress)
    return finish(audio, env, follow)


HIGHPASS_HZ = 20.0


def finish(audio: np.ndarray, env: dict | None, follow: Follow | None = Follow()) -> np.ndarray:
    """The last steps of every rendering: a high-pass under the audible band (2nd-order
    Butterworth at HIGHPASS_HZ: the vocoder puts 7–10 dB of a rendering's energy under 20 Hz,
    up to DC, which would eat headroom and read as level to the follow stage), the envelope
    follow stage when there is an envelope and `follow` is set, then peaks kept under
    -1 dBFS by the look-ahead limiter every rendering ends with."""
    from scipy.signal import butter, sosfilt

    from models.limiter import peak_limit

    sos = butter(2, HIGHPASS_HZ, btype="highpass", fs=SR, output="sos")
    audio = sosfilt(sos, np.asarray(audio, np.float64)).astype(np.float32)
    if env is not None and follow is not None:
        audio = follow_envelope(audio, env, SR, follow)
    return peak_limit(audio, SR)


def window_seed(seed: int, index: int) -> int:
    """A generator seed per (seed, window), independent of the other windows."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:7], "little")
