"""`foley train synth`: the diffusion synthesizer's four training stages, each resumable.

1. vocoder  — mel → audio, multi-resolution STFT + log-mel loss (`models.vocoder`);
2. encoder  — audio → MiniLM space, InfoNCE against the captions' embeddings
               (`models.audio_encoder`, `models.text_embed`);
3. base     — the flow denoiser, semantic vector dropped (zeroed) with P_DROP_SEMANTIC for
               classifier-free guidance (`models.diffusion`, `models.flow_sampler`);
4. control  — the envelope ControlNet on the frozen base (`models.controlnet`); the semantic
               vector is still dropped with P_DROP_SEMANTIC so envelope-only generation works.

Data and splits: `flows.synth_data` (the held-out split is never read here). Each stage runs
`steps` optimizer steps on freshly augmented segments; every `eval_every` steps it measures
the loss on a fixed validation batch (fixed segments, fixed noise), keeps the best as
OUT/synth_<stage>_<preset>.safetensors (config, training summary and the hashes of the
checkpoints it was built on embedded) and writes OUT/state_<stage>.pt (model, optimizer, RNG
states, curves; atomic) so the same command resumes. A larger --steps continues a stage
(finished or not) on a longer cosine schedule: the learning rate picks up where the new,
longer curve is at the current step; a smaller one is refused. Curves go to
OUT/curves_<stage>.png and to Prefect table artifacts.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flows.synth_data import SEGMENT_S, Clip, caption_ids, file_hash_list, make_segment
from models import audio_encoder, controlnet, diffusion, synth_ckpt, synth_pipeline, vocoder
from models.audio_repr import SR, control_from_audio, log_mel
from models.flow_sampler import flow_loss
from models.text_embed import TextEmbedder
from tasks.store import atomic_write

P_DROP_SEMANTIC = 0.1
VOCODER_SEGMENT_S = 0.64  # the vocoder sees a few frames of context only: short is enough
# Optimizer steps per preset and stage. tiny: what the shipped checkpoints were trained with,
# ~65 min on one CPU thread of its own (~85 min on the busy shared machine; models/README.md);
# base: a GPU run.
DEFAULT_STEPS = {
    "tiny": {"vocoder": 4000, "encoder": 800, "base": 7000, "control": 5000},
    "base": {"vocoder": 20000, "encoder": 4000, "base": 30000, "control": 15000},
}
DEFAULT_LR = {"vocoder": 5e-4, "encoder": 1e-3, "base": 3e-4, "control": 3e-4}


@dataclass(frozen=True)
class Batch:
    audio: torch.Tensor     # (B, n)
    mel: torch.Tensor       # (B, N_MELS, T)
    control: torch.Tensor   # (B, 2, T)
    semantic: torch.Tensor  # (B, 384) caption embeddings
    caption: torch.Tensor   # (B,) caption ids


class BatchMaker:
    """Augmented segments of the training clips, anchors drawn evenly over captions."""

    def __init__(self, clips: list[Clip], embedder: TextEmbedder, segment_s: float = SEGMENT_S):
        self.clips = clips
        self.n = int(round(segment_s * SR))
        self.ids = caption_ids(clips)
        captions = sorted(self.ids)
        self.by_caption = {c: [k for k in clips if k.caption == c] for c in captions}
        self.embedding = dict(zip(captions, embedder.embed(captions)))

    def make(self, size: int, rng: np.random.Generator, augment: bool = True) -> Batch:
        captions = list(self.by_caption)
        anchors = [self.by_caption[captions[int(rng.integers(len(captions)))]] for _ in range(size)]
        anchors = [group[int(rng.integers(len(group)))] for group in anchors]
        audio = np.stack([make_segment(a, self.clips, rng, self.n, augment) for a in anchors])
        control = np.stack([control_from_audio(a) for a in audio])
        x = torch.from_numpy(audio)
        return Batch(x, log_mel(x), torch.from_numpy(control),
                     torch.from_numpy(np.stack([self.embedding[a.caption] for a in anchors])),
                     torch.tensor([self.ids[a.caption] for a in anchors]))


def _drop_semantic(sem: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    keep = (torch.rand(sem.shape[0], generator=gen) >= p).float()[:, None]
    return sem * keep


@dataclass
class Stage:
    """What differs between stages: the trained network, its loss, what it was built on."""
    name: str
    model: torch.nn.Module
    config: Any
    kind: str
    loss: Callable[[Batch, torch.Generator, bool], torch.Tensor]  # (batch, gen, train) → loss
    built_on: dict[str, str]
    segment_s: float = SEGMENT_S


def make_stage(name: str, preset: str, out: Path, *, debug_sizes: bool = False) -> Stage:
    """The network and loss of stage `name` (`debug_sizes`: the unit-test presets)."""
    size = "debug" if debug_sizes else preset
    if name == "vocoder":
        cfg = vocoder.get_config(size)
        net = vocoder.build(cfg)
        return Stage(name, net, cfg, vocoder.CHECKPOINT_KIND,
                     lambda b, g, train: vocoder.stft_loss(net(b.mel), b.audio), {},
                     segment_s=VOCODER_SEGMENT_S)
    if name == "encoder":
        cfg = audio_encoder.get_config(size)
        enc = audio_encoder.build(cfg)
        return Stage(name, enc, cfg, audio_encoder.CHECKPOINT_KIND,
                     lambda b, g, train: audio_encoder.contrastive_loss(
                         enc(b.mel), b.semantic, b.caption, enc.logit_scale), {})
    if name == "base":
        cfg = diffusion.get_config(size)
        den = diffusion.build(cfg)

        def base_loss(b: Batch, g: torch.Generator, train: bool) -> torch.Tensor:
            sem = _drop_semantic(b.semantic, g, P_DROP_SEMANTIC) if train else b.semantic
            return flow_loss(lambda x, t: den(x, t, sem), b.mel, g)
        return Stage(name, den, cfg, diffusion.CHECKPOINT_KIND, base_loss, {})
    if name == "control":
        base, cfg, _meta = synth_pipeline.load_stage(out, "base", preset)
        controlnet.freeze(base)
        branch = controlnet.ControlNet.from_base(base)

        def control_loss(b: Batch, g: torch.Generator, train: bool) -> torch.Tensor:
            sem = _drop_semantic(b.semantic, g, P_DROP_SEMANTIC) if train else b.semantic
            return flow_loss(lambda x, t: base(x, t, sem, control=branch(x, t, sem, b.control)),
                             b.mel, g)
        base_path = synth_pipeline.checkpoint_path(out, "base", preset)
        return Stage(name, branch, cfg, controlnet.CHECKPOINT_KIND, control_loss,
                     {"base": synth_ckpt.file_sha256(base_path)})
    raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(synth_pipeline.STAGES)}")


def validation_loss(stage: Stage, batch: Batch, seed: int) -> float:
    """The stage's loss on the fixed validation batch with fixed noise (comparable across steps)."""
    stage.model.eval()
    with torch.no_grad():
        value = float(stage.loss(batch, torch.Generator().manual_seed(seed), False))
    stage.model.train()
    return value


def train_stage(stage: Stage, train_clips: list[Clip], val_clips: list[Clip], out: Path, *,
                preset: str, embedder: TextEmbedder, steps: int, batch_size: int = 8,
                lr: float | None = None, eval_every: int = 100, seed: int = 0,
                max_minutes: float | None = None, log: Callable[[str], None] = print,
                publish: Callable[[list[dict]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one stage; returns its summary (also embedded in the checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    lr = lr if lr is not None else DEFAULT_LR[stage.name]
    t_start = time.monotonic()
    maker = BatchMaker(train_clips, embedder, stage.segment_s)
    val_maker = BatchMaker(val_clips or train_clips, embedder, stage.segment_s)
    val_batch = val_maker.make(max(batch_size, 8), np.random.default_rng(seed + 1))
    params = [p for p in stage.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warmup = max(1, min(200, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay to 2 %
        opt, lambda k: min(1.0, (k + 1) / warmup) * (0.02 + 0.49 * (1 + math.cos(
            math.pi * min(k, steps) / steps))))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best, step = math.inf, 0
    state_path = out / f"state_{stage.name}.pt"
    ckpt = synth_pipeline.checkpoint_path(out, stage.name, preset)
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        if st["steps"] > steps or st["preset"] != preset:
            raise ValueError(f"{state_path} holds a {st['preset']!r} run of {st['steps']} steps: "
                             "resume with the same (or a larger) --steps and the same "
                             "--preset, or use another --out")
        stage.model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        rng.bit_generator.state = st["rng"]
        gen.set_state(st["gen"])
        history, best, step = st["history"], st["best"], st["step"]
        log(f"{stage.name}: resuming at step {step} (best validation loss {best:.4f})"
            + (f"; budget extended from {st['steps']} to {steps} steps (the cosine now spans "
               f"{steps})" if st["steps"] < steps else ""))
    stage.model.train()
    window: list[float] = []
    t0 = time.monotonic()
    while step < steps:
        batch = maker.make(batch_size, rng)
        loss = stage.loss(batch, gen, True)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        window.append(loss.item())
        over = max_minutes is not None and time.monotonic() - t_start > max_minutes * 60
        if step % eval_every and step < steps and not over:
            continue
        val = validation_loss(stage, val_batch, seed + 2)
        row = {"step": step, "train_loss": float(np.mean(window)), "val_loss": val,
               "lr": float(sched.get_last_lr()[0]), "seconds": time.monotonic() - t0}
        history.append(row)
        window, t0 = [], time.monotonic()
        log(f"{stage.name} step {step}/{steps}: train {row['train_loss']:.4f} · "
            f"validation {val:.4f} · {row['seconds']:.1f} s")
        if val < best:
            best = val
            atomic_write(ckpt, lambda p: synth_ckpt.save(
                stage.model, stage.config, p, stage.kind,
                {"step": step, "val_loss": val, "built_on": stage.built_on}))
        atomic_write(state_path, lambda p: torch.save({
            "model": stage.model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "rng": rng.bit_generator.state,
            "gen": gen.get_state(), "history": history, "best": best, "step": step,
            "steps": steps, "preset": preset}, p))
        plot_curves(history, out / f"curves_{stage.name}.png", stage.name)
        if publish is not None:
            publish(history)
        if over:
            log(f"{stage.name}: stopping at step {step}: the {max_minutes:g}-minute budget is spent")
            break
    summary = {
        "stage": stage.name, "preset": preset, "steps_run": step, "steps": steps,
        "best_val_loss": best, "train_clips": len(train_clips), "val_clips": len(val_clips),
        "train_files_sha256": file_hash_list(train_clips), "batch_size": batch_size, "lr": lr,
        "seed": seed, "segment_s": stage.segment_s, "built_on": stage.built_on,
        "parameters": synth_ckpt.count_parameters(stage.model),
        "train_minutes": round(sum(h["seconds"] for h in history) / 60, 2), "history": history}
    if ckpt.is_file():  # the best weights, now with the whole summary in the header
        model, config, meta = synth_pipeline.load_stage(out, stage.name, preset)
        atomic_write(ckpt, lambda p: synth_ckpt.save(model, config, p, stage.kind,
                                                      {**meta, "training": summary}))
    (out / f"training_{stage.name}.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(steps, [h["train_loss"] for h in history], label="train")
    ax.plot(steps, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{title} loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def stages_of(stage: str) -> tuple[str, ...]:
    if stage == "all":
        return synth_pipeline.STAGES
    if stage not in synth_pipeline.STAGES:
        raise ValueError(f"--stage must be one of {', '.join(synth_pipeline.STAGES)} or all, "
                         f"not {stage!r}")
    return (stage,)


def train_synth_flow() -> Any:
    """The Prefect flow around the stages (built on demand: importing stays cheap)."""
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from flows.synth_data import load_corpus

    @flow(name="train-synth", log_prints=True)
    def train_synth(sfx: str, out: str, stage: str = "all", preset: str = "tiny",
                    steps: int | None = None, batch_size: int = 8, lr: float | None = None,
                    eval_every: int = 100, seed: int = 0, max_minutes: float | None = None,
                    threads: int = 2, with_kit: bool = True) -> dict[str, Any]:
        """Train the diffusion synthesizer's stages on the sfx folder (+ the kit); resumable."""
        torch.set_num_threads(threads)
        out_dir = Path(out)
        splits = load_corpus(Path(sfx), out_dir, with_kit=with_kit)
        embedder = TextEmbedder(out_dir / "text_cache")
        results = {}
        for name in stages_of(stage):
            def publish(history: list[dict[str, float]], name: str = name) -> None:
                create_table_artifact([{k: round(v, 5) for k, v in h.items()} for h in history],
                                      key=f"train-synth-{name}-{preset}-curves",
                                      description=f"{name}: one row per validation")
            summary = train_stage(
                make_stage(name, preset, out_dir), splits["train"], splits["val"], out_dir,
                preset=preset, embedder=embedder, steps=steps or DEFAULT_STEPS[preset][name],
                batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
                max_minutes=max_minutes, publish=publish)
            results[name] = {k: v for k, v in summary.items() if k != "history"}
        create_markdown_artifact(
            "# Diffusion synthesizer `" + preset + "`\n\n" + "\n".join(
                f"- {k}: best validation loss {v['best_val_loss']:.4f} after {v['steps_run']} "
                f"steps ({v['train_minutes']} min)" for k, v in results.items()),
            key=f"train-synth-{preset}-summary", description="Training summary")
        return {"splits": {k: len(v) for k, v in splits.items()}, "stages": results}

    return train_synth

