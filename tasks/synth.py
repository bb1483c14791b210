"""Synthesis stage: render an approved envelope to a mono stem.

Synthesis only ever reads the approved version (`db.api.approved_envelope` raises otherwise).
The sound comes from the shot's Foley hint (a `FOLEY: …` marker), else the envelope's prompt,
else the kind of its events; candidates come from the indexed library.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import soundfile as sf
from prefect import task
from prefect.cache_policies import NO_CACHE

import models.sampler as sampler
from db import api
from tasks import library_match
from tasks.library import load_sample
from tasks import runtime
from tasks.decisions import load_envelope
from tasks.stage import StageOutput, run_stage
from tasks.wavfloat import write_float_wav

SR = 48000
BACKENDS = ("sampler",)
MAX_ONESHOTS = 6


def shot_seed(seed: int, reel: str, shot: str) -> int:
    """A per-shot seed: shots differ from each other, reruns repeat exactly."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{reel}:{shot}".encode()).digest()[:4], "little")


def choose_sounds(
    sounds: list[Any], hint: str | None, env: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """One-shot candidates and textures for a shot, best first. A library category chosen in
    review (`env["category"]`) restricts the one-shots to that category."""
    if env.get("category"):
        chosen = [snd for snd in sounds if snd.category == env["category"]]
        if not chosen:
            raise ValueError(f"no sounds of category {env['category']!r} in the library")
        sounds = chosen + [snd for snd in sounds if snd.kind == "texture" and snd not in chosen]
    kinds = Counter(e["kind"] for e in env["events"])
    kind = kinds.most_common(1)[0][0] if kinds else "impact"
    oneshots = library_match.match_sounds(sounds, hint, kind)[:MAX_ONESHOTS]
    textures = library_match.match_texture(sounds, hint, kind)[:1]
    return oneshots, textures


@task(name="synth", cache_policy=NO_CACHE)
def synthesize(shot_id: int, *, library: str, backend: str = "sampler", seed: int = 0) -> dict[str, Any]:
    """Render the shot's approved envelope to a 48 kHz mono stem."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown synthesis backend {backend!r}; choose from {BACKENDS}")
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
        oneshots, textures = choose_sounds(sounds, sound_hint(env, hint), env)
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
        code=[sampler],
        compute=compute,
        shot_id=shot_id,
        seed=rng_seed,
        agent=f"software:{backend}",
    )
    return {"mono": res.outputs["mono"], "envelope": env_ref, "sounds": res.result.get("sounds", {}),
            "cached": res.cached}


def sound_hint(env: dict[str, Any], marker: str | None) -> str | None:
    """What to look for in the library: the envelope's prompt (starts as the clip's `FOLEY:`
    marker and may be edited in review), else the marker itself."""
    return env.get("prompt") or marker


def preview(shot_id: int, env: dict[str, Any], *, library: str, seed: int = 0) -> Any:
    """The shot rendered from an envelope that need not be saved or approved (the review
    app's "preview edit" and A/B listening): the same sound choice and sampler as the stem,
    nothing stored. Returns 48 kHz mono float32."""
    with runtime.db().session() as s:
        shot = s.get(api.Shot, shot_id)
        assert shot is not None, f"shot id {shot_id} does not exist"
        sounds = api.library_sounds(s, library)
        if not sounds:
            raise ValueError(f"sound library {library!r} is empty")
        oneshots, textures = choose_sounds(sounds, sound_hint(env, shot.foley_hint), env)
        refs = [(r.artifact.ref(), r.rel_path) for r in oneshots + textures]
        n_one, rng_seed = len(oneshots), shot_seed(seed, shot.reel.name, shot.name)
    store = runtime.store()
    loaded = [load_sample(store.local_path(ref), name, sr=SR) for ref, name in refs]
    return sampler.render_shot(env, loaded[:n_one], loaded[n_one:], sr=SR, seed=rng_seed)
