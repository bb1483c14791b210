"""Synthesis stage: render an approved envelope to a mono stem.

Synthesis only ever reads the approved version (`db.api.approved_envelope` raises otherwise).
Two backends:
- `sampler` (default): one-shots and a texture from the indexed library (`models.sampler`);
  the sound comes from the shot's Foley hint (a `FOLEY: …` marker), else the envelope's
  prompt, else the kind of its events.
- `diffusion`: the trained diffusion synthesizer (`models.synth_pipeline`, docs/SYNTHESIS.md)
  renders the envelope through its ControlNet, prompted with the envelope's prompt, else the
  shot's marker, else the library category chosen in review, else its events' most common
  kind (`diffusion_prompt`), then holds the rendering to the approved curve and events with
  the envelope follow stage (`models.envelope_follow`). Its checkpoints' hash, steps,
  guidance, follow settings, prompt and seed are the stage's cache parameters and provenance.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import models.limiter as limiter
import models.sampler as sampler
from models import SHIPPED
from db import api
from tasks import library_match
from tasks.library import load_sample
from tasks import runtime
from tasks.decisions import load_envelope
from tasks.stage import StageOutput, run_stage
from tasks.wavfloat import write_float_wav

SR = 48000
BACKENDS = ("sampler", "diffusion")
MAX_ONESHOTS = 6
DIFFUSION_CHECKPOINTS = SHIPPED
DIFFUSION_PRESET = "tiny"
DIFFUSION_STEPS = 16
DIFFUSION_GUIDANCE = 3.0
KIND_PROMPTS = {"step": "footsteps", "impact": "an impact", "scrape": "a scrape",
                "whoosh": "a whoosh through the air"}


def shot_seed(seed: int, reel: str, shot: str) -> int:
    """A per-shot seed: shots differ from each other, reruns repeat exactly."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{reel}:{shot}".encode()).digest()[:4], "little")


def main_kind(env: dict[str, Any]) -> str:
    """The most common kind of the envelope's events ("impact" without events)."""
    kinds = Counter(e["kind"] for e in env["events"])
    return kinds.most_common(1)[0][0] if kinds else "impact"


def choose_sounds(
    sounds: list[Any], hint: str | None, env: dict[str, Any], *, library: str | None = None
) -> tuple[list[Any], list[Any]]:
    """One-shot candidates and textures for a shot, best first. A library category chosen in
    review (`env["category"]`) restricts the one-shots to that category. A ValueError when
    nothing in the library matches an envelope that sounds (no one-shot and no texture: the
    stem would be digital silence)."""
    where = f"sound library {library!r}" if library else "the sound library"
    curve = any(float(v) > 0 for v in env.get("curve", []))
    sounding = bool(env["events"]) or curve
    if env.get("category") and sounding:  # (a silent shot needs no sound of it)
        chosen = [snd for snd in sounds if snd.category == env["category"]]
        if not chosen:
            raise ValueError(f"no sounds of category {env['category']!r} in {where}")
        sounds = chosen + [snd for snd in sounds if snd.kind == "texture" and snd not in chosen]
    kind = main_kind(env)
    oneshots = library_match.match_sounds(sounds, hint, kind)[:MAX_ONESHOTS]
    textures = library_match.match_texture(sounds, hint, kind)[:1]
    # events sound only through one-shots, and the texture only where the curve is above zero
    audible = (env["events"] and oneshots) or (curve and textures)
    if sounding and not audible:
        sought = f"{hint!r} ({kind})" if hint else f"its {kind} events" if env["events"] \
            else f"a sustained {kind}"
        raise ValueError(
            f"nothing in {where} matches {sought}, so the shot would be silent: index "
            "recordings of it (`foley library index DIR --name NAME`, then --library NAME), "
            "or choose one of the library's categories for the shot in review")
    return oneshots, textures


@task(name="synth", cache_policy=NO_CACHE)
def synthesize(shot_id: int, *, library: str, backend: str = "sampler", seed: int = 0) -> dict[str, Any]:
    """Render the shot's approved envelope to a 48 kHz mono stem with `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown synthesis backend {backend!r}; choose from {BACKENDS}")
    if backend == "diffusion":
        return _synthesize_diffusion(shot_id, seed)
    with runtime.db().session() as s:
        env_row = api.approved_envelope(s, shot_id)
        shot = env_row.shot
        env_ref = env_row.artifact.ref()
        hint, reel_name, shot_name = shot.foley_hint, shot.reel.name, shot.name
        sounds = api.library_sounds(s, library)
        if not sounds:
            raise ValueError(
                f"sound library {library!r} is empty: index one with `foley library index DIR "
                f"--name {library}`"
            )
        env = load_envelope(env_ref)
        oneshots, textures = choose_sounds(sounds, sound_hint(env, hint), env,
                                          library=library)
        inputs = {"envelope": env_ref}
        inputs |= {f"oneshot-{i}": r.artifact.ref() for i, r in enumerate(oneshots)}
        inputs |= {f"texture-{i}": r.artifact.ref() for i, r in enumerate(textures)}
        names = {f"oneshot-{i}": r.rel_path for i, r in enumerate(oneshots)}
        names |= {f"texture-{i}": r.rel_path for i, r in enumerate(textures)}
    rng_seed = shot_seed(seed, reel_name, shot_name)

    def compute(paths: dict[str, Path], work: Path) -> StageOutput:
        one = [load_sample(p, names[k], sr=SR) for k, p in sorted(paths.items()) if k.startswith("oneshot-")]
        tex = [load_sample(p, names[k], sr=SR) for k, p in sorted(paths.items()) if k.startswith("texture-")]
        audio = sampler.render_shot(env, one, tex, sr=SR, seed=rng_seed)
        out = work / "stem_mono.wav"
        write_float_wav(out, audio, SR)
        return StageOutput(files={"mono": (out, "audio/wav")}, result={"sounds": names})

    res = run_stage(
        "synth",
        inputs=inputs,
        params={"backend": backend, "seed": rng_seed, "hint": hint},
        code=[sampler, limiter],
        compute=compute,
        shot_id=shot_id,
        seed=rng_seed,
        agent=f"software:{backend}",
    )
    return {"mono": res.outputs["mono"], "envelope": env_ref, "sounds": res.result.get("sounds", {}),
            "cached": res.cached}


def diffusion_prompt(env: dict[str, Any], marker: str | None) -> str:
    """What the diffusion backend is asked for: the envelope's prompt, else the shot's Foley
    marker, else the library category chosen in review, else its events' most common kind."""
    hint = sound_hint(env, marker) or env.get("category")
    return str(hint) if hint else KIND_PROMPTS.get(main_kind(env), "an impact")


@lru_cache(maxsize=2)
def diffusion_model(folder: Path = DIFFUSION_CHECKPOINTS, preset: str = DIFFUSION_PRESET) -> Any:
    """The diffusion synthesizer (loaded once per process) and a prompt embedder."""
    from models import synth_pipeline
    from models.text_embed import TextEmbedder

    return synth_pipeline.load(folder, preset, need=("vocoder", "base", "control")), TextEmbedder()


def _synthesize_diffusion(shot_id: int, seed: int, *, steps: int = DIFFUSION_STEPS,
                          guidance: float = DIFFUSION_GUIDANCE) -> dict[str, Any]:
    from models import (audio_repr, controlnet, diffusion, envelope_follow, flow_sampler,
                        synth_pipeline, vocoder)

    with runtime.db().session() as s:
        env_row = api.approved_envelope(s, shot_id)
        shot = env_row.shot
        env_ref = env_row.artifact.ref()
        hint, reel_name, shot_name = shot.foley_hint, shot.reel.name, shot.name
    env = load_envelope(env_ref)
    prompt = diffusion_prompt(env, hint)
    synth, _embedder = diffusion_model()
    rng_seed = shot_seed(seed, reel_name, shot_name)

    def compute(paths: dict[str, Path], work: Path) -> StageOutput:
        audio = render_diffusion(env, prompt, rng_seed, steps=steps, guidance=guidance)
        out = work / "stem_mono.wav"
        write_float_wav(out, audio, SR)
        return StageOutput(files={"mono": (out, "audio/wav")}, result={"prompt": prompt})

    res = run_stage(
        "synth",
        inputs={"envelope": env_ref},
        params={"backend": "diffusion", "seed": rng_seed, "hint": hint, "prompt": prompt,
                "model": synth.version, "checkpoints": synth.checkpoints,
                "preset": DIFFUSION_PRESET, "steps": steps, "guidance": guidance,
                "follow": envelope_follow.Follow().params()},
        code=[synth_pipeline, flow_sampler, diffusion, controlnet, vocoder, audio_repr,
              envelope_follow, limiter],
        compute=compute,
        shot_id=shot_id,
        seed=rng_seed,
        agent=f"software:diffusion@{synth.version[:12]}",
        checkpoint_sha256=synth.version,
    )
    return {"mono": res.outputs["mono"], "envelope": env_ref, "sounds": {}, "prompt": prompt,
            "cached": res.cached}


def render_diffusion(env: dict[str, Any], prompt: str, rng_seed: int, *,
                     steps: int = DIFFUSION_STEPS, guidance: float = DIFFUSION_GUIDANCE) -> Any:
    """An envelope rendered by the diffusion backend as the pass delivers it (the shipped
    model, `prompt`, the shot's seed, the envelope follow stage): 48 kHz mono float32."""
    from models import synth_pipeline

    synth, embedder = diffusion_model()
    return synth_pipeline.render_envelope(synth, env, embedder.embed([prompt])[0], steps=steps,
                                          guidance=guidance, seed=rng_seed)


def sound_hint(env: dict[str, Any], marker: str | None) -> str | None:
    """What to look for in the library: the envelope's prompt (starts as the clip's `FOLEY:`
    marker and may be edited in review), else the marker itself."""
    return env.get("prompt") or marker


def preview(shot_id: int, env: dict[str, Any], *, library: str, seed: int = 0,
            backend: str = "sampler") -> Any:
    """The shot rendered from an envelope that need not be saved or approved (the review
    app's "preview edit" and A/B listening) by the backend its reel was passed with: the same
    sound choice and renderer as the stem, nothing stored. Returns 48 kHz mono float32."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown synthesis backend {backend!r}; choose from {BACKENDS}")
    with runtime.db().session() as s:
        shot = s.get(api.Shot, shot_id)
        assert shot is not None, f"shot id {shot_id} does not exist"
        rng_seed = shot_seed(seed, shot.reel.name, shot.name)
        if backend == "diffusion":  # no library: the prompt is all it needs
            prompt = diffusion_prompt(env, shot.foley_hint)
        else:
            sounds = api.library_sounds(s, library)
            if not sounds:
                raise ValueError(f"sound library {library!r} is empty")
            oneshots, textures = choose_sounds(sounds, sound_hint(env, shot.foley_hint), env,
                                              library=library)
            refs = [(r.artifact.ref(), r.rel_path) for r in oneshots + textures]
            n_one = len(oneshots)
    if backend == "diffusion":
        return render_diffusion(env, prompt, rng_seed)
    store = runtime.store()
    loaded = [load_sample(store.local_path(ref), name, sr=SR) for ref, name in refs]
    return sampler.render_shot(env, loaded[:n_one], loaded[n_one:], sr=SR, seed=rng_seed)
