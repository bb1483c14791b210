"""`foley generate`, `foley train synth` and `foley eval synth`: the diffusion synthesizer from
the command line (design, presets and the shipped checkpoints: docs/SYNTHESIS.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from flows.cli_models import DEFAULT_SFX, SHIPPED, _fail, file_in_the_way

DEFAULT_TRAIN_OUT = Path(".foley/train/synth")
MAX_DURATION_S = 3600.0
MAX_STEPS = 1000        # the sampler's steps; 16 is the default, past ~100 nothing changes
MAX_GUIDANCE = 100.0    # 1-10 is the useful range; at ~1e30 the rendering overflows
MAX_SEED = 2 ** 63 - 1
MAX_THREADS = 256


def _check_length(length: float, what: str) -> None:
    """`length` seconds is something `foley generate` can render: finite, at least one sample
    at 48 kHz (shorter is no audio at all) and at most MAX_DURATION_S."""
    from models.audio_repr import SR

    if not (math.isfinite(length) and 0 < length <= MAX_DURATION_S
            and round(length * SR) >= 1):
        _fail(f"{what} must lie in (0, {MAX_DURATION_S:g}] seconds, not {length:g} "
              f"(and give at least one sample: 1/{SR} s)")


def _check_seed_threads(seed: int, threads: int) -> None:
    """--seed and --threads in their ranges (`foley generate`, `foley train synth`)."""
    if not 0 <= seed <= MAX_SEED:
        _fail(f"--seed must lie in [0, 2^63 - 1], not {seed}")
    if not 1 <= threads <= MAX_THREADS:
        _fail(f"--threads must lie in [1, {MAX_THREADS}], not {threads}")


def _check_options(steps: int, guidance: float, seed: int, threads: int,
                   duration: float | None) -> None:
    """Every numeric option of `foley generate` in its range (NaN and infinity are in none),
    before anything is read or loaded."""
    if not 1 <= steps <= MAX_STEPS:
        _fail(f"--steps must lie in [1, {MAX_STEPS}], not {steps}")
    if not (math.isfinite(guidance) and 0 < guidance <= MAX_GUIDANCE):
        _fail(f"--guidance must be positive and at most {MAX_GUIDANCE:g} (1 = none), "
              f"not {guidance:g}")
    _check_seed_threads(seed, threads)
    if duration is not None:
        _check_length(duration, "--duration")


def _check_out_file(out: Path) -> None:
    """--out can be written: not a folder, and not under a file (checked before any work)."""
    if out.is_dir():
        _fail(f"--out {out} is a folder: name the .wav file to write")
    blocked = file_in_the_way(out.parent)
    if blocked is not None:
        _fail(f"--out {out}: {blocked} is a file, so the WAV cannot be written there")


def _envelope_control(path: Path, duration: float | None) -> tuple[np.ndarray, float, dict]:
    """The ControlNet input of an envelope JSON file, its duration and the envelope itself
    (clear errors)."""
    from models.synth_pipeline import envelope_control
    from tasks.decisions import read_envelope, validate_envelope

    if not path.is_file():
        _fail(f"--envelope {path}: no such file")
    try:
        env = read_envelope(path)
    except OSError as exc:
        _fail(f"--envelope {path}: cannot read it ({exc.strerror or exc})")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        _fail(f"--envelope {path}: not an envelope JSON file ({exc}); "
              "fix the envelope file (see docs/CONTRACTS.md)")
    try:
        validate_envelope(env, where=str(path))
    except ValueError as exc:
        _fail(f"{exc}; fix the envelope file (see docs/CONTRACTS.md)")
    length = float(env["duration_s"])
    if duration is not None and not math.isclose(duration, length, abs_tol=1e-3):
        _fail(f"--duration {duration:g} s differs from the envelope's duration_s {length:g} s "
              f"in {path}: leave --duration out to follow the envelope")
    _check_length(length, f"the envelope's duration_s in {path}")
    return envelope_control(env)[0], length, env


def _semantic(synth, prompt: str | None, like: Path | None, cache: Path) -> np.ndarray | None:
    """The prompt's and / or the reference recording's vector (their normalized mean)."""
    import torch

    from models.audio_repr import SR, log_mel
    from models.text_embed import TextEmbedder

    vecs = []
    if prompt is not None:
        if not prompt.strip():
            _fail("the prompt is empty: describe the sound, or leave the prompt out and give "
                  "--envelope / --like")
        vecs.append(TextEmbedder(cache).embed([prompt])[0])
    if like is not None:
        import librosa

        from models.synth_pipeline import embed_audio

        if not like.is_file():
            _fail(f"--like {like}: no such file")
        try:
            audio, _sr = librosa.load(like, sr=SR, mono=True)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
            _fail(f"--like {like}: cannot decode it as audio ({exc})")
        vecs.append(embed_audio(synth, log_mel(torch.from_numpy(audio))))
    if not vecs:
        return None
    mean = np.mean(vecs, axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)


def generate(
    prompt: Annotated[Optional[str], typer.Argument(
        help="What it should sound like, e.g. \"a heavy wooden door slams\". Leave it out "
             "for envelope-only (or --like only) generation.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="WAV file to write (48 kHz, 24-bit "
                                      "Broadcast WAV, mono; written atomically).")] = Path("generated.wav"),
    duration: Annotated[Optional[float], typer.Option(help="Seconds of audio. Default: the "
                                                      "envelope's duration, else 4.")] = None,
    envelope: Annotated[Optional[Path], typer.Option(help="Envelope JSON (the pass's contract: "
                                                     "curve + events) that times the sound "
                                                     "through the ControlNet.")] = None,
    like: Annotated[Optional[Path], typer.Option(help="A reference recording: generate "
                                                 "something that sounds like it.")] = None,
    steps: Annotated[int, typer.Option(help="Sampler steps (Euler, rectified flow).")] = 16,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (1 = none).")] = 3.0,
    follow: Annotated[bool, typer.Option(help="With --envelope: hold the rendering to the "
                                         "envelope's curve and events (level, attacks on "
                                         "the events, other attacks softened; "
                                         "models/envelope_follow.py), as the pass does. "
                                         "--no-follow: the ControlNet's rendering "
                                         "as it comes.")] = True,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same audio.")] = 0,
    checkpoints: Annotated[Path, typer.Option(help="Folder of synth_*.safetensors (default: "
                                              "the shipped tiny model; or a `foley train "
                                              "synth --out` folder).")] = SHIPPED,
    preset: Annotated[str, typer.Option(help="tiny (CPU) | base (GPU).")] = "tiny",
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
) -> None:
    """Generate a sound with the diffusion synthesizer from a text prompt, a reference
    recording and/or an envelope. Long durations are made of overlapping windows joined by
    equal-power crossfades. Exit code 2 (nothing written) on bad input or when a needed
    checkpoint has not been trained yet (the message names the command that trains it)."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from models import synth_pipeline
    from models.audio_repr import SR
    from models.envelope_follow import Follow
    from tasks.bwf import write_bwf

    if out.suffix.lower() not in (".wav", ".bwf"):
        _fail(f"--out {out}: write a .wav file")
    _check_out_file(out)
    if preset not in ("tiny", "base"):
        _fail(f"--preset {preset!r}: choose tiny (CPU, shipped) or base (GPU)")
    _check_options(steps, guidance, seed, threads, duration)
    torch.set_num_threads(threads)
    control, length, env = (None, duration if duration is not None else 4.0, None)
    if envelope is not None:
        control, length, env = _envelope_control(envelope, duration)
    need = ("vocoder", "base") + (("control",) if envelope else ()) + (("encoder",) if like else ())
    try:
        synth = synth_pipeline.load(checkpoints, preset, need=need)
    except (synth_pipeline.MissingCheckpoint, ValueError) as exc:
        _fail(str(exc))
    semantic = _semantic(synth, prompt, like, DEFAULT_TRAIN_OUT / "text_cache")
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task("windows", total=None)
        audio = synth_pipeline.generate(
            synth, n_samples=int(round(length * SR)), semantic=semantic, control=control,
            steps=steps, guidance=guidance, seed=seed,
            progress=lambda done, total: progress.update(bar, completed=done, total=total))
    out.parent.mkdir(parents=True, exist_ok=True)
    description = json.dumps({"prompt": prompt, "like": str(like) if like else None,
                              "envelope": str(envelope) if envelope else None, "steps": steps,
                              "guidance": guidance, "seed": seed, "model": synth.version[:16],
                              "follow": bool(env is not None and follow)})
    audio = synth_pipeline.finish(audio, env, Follow() if follow else None)
    if not np.isfinite(audio).all():
        _fail(f"the rendering holds NaN or infinity (the checkpoints in {checkpoints} give "
              "no usable audio with these settings); nothing was written")
    write_bwf(out, audio, SR, time_reference=0, description=description[:256])
    typer.echo(str(out))


def train_synth(
    stage: Annotated[str, typer.Option(help="vocoder | encoder | base | control | all (in that "
                                       "order; control needs base).")] = "all",
    preset: Annotated[str, typer.Option(help="tiny (CPU) | base (GPU).")] = "tiny",
    sfx: Annotated[Path, typer.Option(help="Folder of recordings with catalog.csv.")] = DEFAULT_SFX,
    out: Annotated[Path, typer.Option(help="Where checkpoints, curves and resumable state "
                                      "go.")] = DEFAULT_TRAIN_OUT,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per stage (default: "
                                                 "the stage's own). More than a stage in "
                                                 "--out was run with continues it on a "
                                                 "longer cosine schedule.")] = None,
    batch_size: Annotated[int, typer.Option(help="Segments per batch.")] = 8,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: the "
                                                "stage's own).")] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between validations/checkpoints.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop a stage after the "
                                                         "validation that passes this budget.")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
    kit: Annotated[bool, typer.Option(help="Also train on the project's synthesized kit.")] = True,
) -> None:
    """Train the diffusion synthesizer (vocoder, audio encoder, base denoiser, envelope
    ControlNet) on the sfx recordings and the project's own kit. Held-out recordings (by
    file hash, listed in OUT/split.json) are never used. Running the same command again
    resumes each stage where it stopped."""
    from flows.cli import _prefect_defaults
    from flows.train_synth import stages_of

    try:
        stages_of(stage)
    except ValueError as exc:
        _fail(str(exc))
    if preset not in ("tiny", "base"):
        _fail(f"--preset must be tiny or base, not {preset!r}")
    if not (sfx / "catalog.csv").is_file():
        _fail(f"{sfx} has no catalog.csv: point --sfx at a folder of recordings with a catalog")
    for name, value in (("--steps", steps), ("--batch-size", batch_size),
                        ("--eval-every", eval_every)):
        if value is not None and value < 1:
            _fail(f"{name} must be at least 1, not {value}")
    if lr is not None and not (math.isfinite(lr) and 0 < lr < 1):
        _fail(f"--lr must lie in (0, 1), not {lr:g}")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        _fail(f"--max-minutes must be a positive number of minutes, not {max_minutes:g}")
    _check_seed_threads(seed, threads)
    _prefect_defaults()
    from flows.train_synth import train_synth_flow

    summary = train_synth_flow()(str(sfx), str(out), stage=stage, preset=preset, steps=steps,
                                 batch_size=batch_size, lr=lr, eval_every=eval_every,
                                 seed=seed, max_minutes=max_minutes, threads=threads,
                                 with_kit=kit)
    typer.echo(json.dumps(summary, indent=1))


def eval_synth(
    checkpoints: Annotated[Path, typer.Option(help="Folder of synth_*.safetensors (default: "
                                              "the shipped tiny model).")] = SHIPPED,
    sfx: Annotated[Path, typer.Option(help="The sfx folder the model was trained on: its "
                                      "held-out recordings (by file hash) make the "
                                      "evaluation envelopes and train the judge.")] = DEFAULT_SFX,
    preset: Annotated[str, typer.Option(help="tiny (CPU) | base (GPU).")] = "tiny",
    scenes: Annotated[int, typer.Option(help="Envelopes per class.")] = 8,
    split: Annotated[str, typer.Option(help="Where the scenes come from: heldout (the "
                                       "figures to report) or val (the validation "
                                       "recordings: the figures to make choices with, so "
                                       "the held-out ones are read once, at the end).")] = "heldout",
    steps: Annotated[int, typer.Option(help="Diffusion sampler steps.")] = 16,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the envelopes, the judge and both "
                                      "renderers.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads (the real-time factor is "
                                         "measured with these).")] = 1,
    work: Annotated[Path, typer.Option(help="Cache of the indexed recordings and prompt "
                                       "embeddings.")] = Path(".foley/eval/synth"),
    keep_audio: Annotated[Optional[Path], typer.Option(help="Also write every envelope's "
                                                       "real scene and both renderings "
                                                       "here (WAV) to listen to.")] = None,
    judge_corpus: Annotated[Optional[Path], typer.Option(
        help="A folder built by `foley dataset judge`: its recordings (none the generator "
             "trained on) train the judge too, next to the held-out sfx recordings.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Score the diffusion synthesizer against the sampler on the same envelopes, measured on
    scenes of held-out recordings (never trained on): E-L1 (T-Foley) between the control and
    the rendering, onset precision/recall/F1 at ±25/50/100 ms against the control's events,
    semantic accuracy and Fréchet distance with a classifier trained on recordings the
    generator never saw (the held-out ones, plus --judge-corpus; its cross-validated accuracy
    is reported, and how it reads real scenes of the generator's own training recordings: the
    ceiling a semantic accuracy is read against), real-time factor on this CPU. Each backend
    is scored as the pass delivers it and, next to it, the diffusion before the envelope
    follow stage and the sampler through it.
    Method: flows/eval_synth.py; figures: docs/BENCHMARKS.md."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from flows.eval_synth import evaluate, table
    from models.synth_pipeline import MissingCheckpoint

    if not (sfx / "catalog.csv").is_file():
        _fail(f"{sfx} has no catalog.csv: point --sfx at the folder the model was trained on")
    if split not in ("heldout", "val"):
        _fail(f"--split must be heldout or val, not {split!r}")
    if scenes < 2 or steps < 1 or not (math.isfinite(guidance) and guidance > 0):
        _fail("--scenes must be at least 2, --steps at least 1 and --guidance positive")
    if threads < 1:
        _fail(f"--threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        bars: dict[str, int] = {}

        def tick(stage: str, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.advance(bars[stage])
        try:
            report = evaluate(sfx, checkpoints, work, preset=preset, steps=steps,
                              guidance=guidance, seed=seed, split=split, per_class=scenes,
                              progress=tick, keep_audio=keep_audio,
                              judge_corpus=judge_corpus)
        except (MissingCheckpoint, ValueError) as exc:
            _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        typer.echo(table(report))
