"""`foley eval synth`: the diffusion synthesizer and the sampler on the same envelopes.

Evaluation envelopes (fixed by the seed, never used to train or tune anything): scenes built
from the **held-out** recordings of `../shared/sfx` (`flows.synth_data`: 20 % by file hash,
never read by `foley train synth`). Each scene is `SCENE_S` long and holds one to three
held-out recordings of one caption at random offsets with the training augmentation
(`flows.synth_data.make_segment`: varispeed, gain, low noise), so it looks like a shot with
several hits. Its envelope is measured on it the way the pass's contract stores one: the
project's `rms_envelope` at 100 Hz as the curve, `detect_onsets` as the events (strength 1,
kind from the category), the caption as the prompt. Classes are the sfx categories with at
least MIN_RECORDINGS held-out recordings (footsteps, impacts, breaks, doors with the shared
folder), SCENES_PER_CLASS scenes each.

Both backends render every envelope: the diffusion synthesizer with the caption as prompt
(`models.synth_pipeline.render_envelope`), the sampler (`models.sampler.render_shot`, the
pass's renderer) with one-shots of the same caption — else category — from the *training*
recordings (the library it would have; the held-out ones are the truth). Metrics, per backend:

- **E-L1** (T-Foley, `models.envelope_metrics.e_l1_tfoley`) between `rms_target` of the scene
  the envelope was measured on and `rms_target` of the rendering: the control's loudness
  against what came out, on the project's one RMS-target definition (125 Hz); the report also
  gives the E-L1 of silence on the same envelopes as the floor to compare with;
- **onsets**: `detect_onsets` of the rendering against the envelope's events, matched one to
  one (`OnsetCounts`), precision / recall / F1 at ±25 ms (also 50 and 100 ms) over all scenes;
- **semantic accuracy**: a small classifier (`Judge`) trained on the held-out recordings ONLY
  (augmented segments; the generator never saw them) — plus, with `judge_corpus`, the
  recordings of a corpus built by `foley dataset judge` (flows/judge_corpus.py: real
  recordings from Debian game packages, none in the sfx folder) — names the category of each
  rendering;
  its input is `judge_features` (log-mel statistics and how the sound moves in time: decay
  profile and length of each event, onset density, spectral shape);
  its own accuracy is measured first by cross-validation grouped by recording (a recording's
  segments never sit on both sides), so the judge's reliability is known; and then on real
  scenes cut from the generator's *training* recordings (`judge_on_real`: real sound of the
  generator's own domain that the judge never saw; a rendering indistinguishable from its
  training data would read at that figure, so it is the ceiling a semantic accuracy can be
  read against);
- **Fréchet distance** between the judge's embeddings (its hidden layer) of the renderings of
  a class and of real held-out segments of that class (REFERENCE_PER_RECORDING per
  recording, other draws than the judge's training segments; mean over classes);
- **real-time factor**: render seconds / audio seconds on this CPU with `threads` torch threads.

Columns: `diffusion` is the backend as the pass delivers it (`render_envelope`: the
ControlNet's rendering, then the envelope follow stage `models.envelope_follow`, then the
limiter); `diffusion_controlnet` is the same rendering without the follow stage (what the
ControlNet alone achieves); `sampler` is the pass's sampler stem and `sampler_follow` that
stem through the same follow stage. The `vocoder` column puts each real scene's own log-mel
through the vocoder alone: the figures a perfect denoiser would reach with this vocoder (its
share of what is lost).

`split="val"` builds the same kind of scenes from the **validation** recordings instead (the
ones `foley train synth` picks checkpoints with; never trained on): the figures to make
choices with, so the held-out scenes are only read once, at the end. Its classes are the
judge's (held-out) classes that have at least one validation recording; the sampler then
plays training recordings only; the judge is the same (trained on held-out recordings).

The judge trains as part of the evaluation (seeded; ~10 s): it needs nothing but the sfx
folder (and the judge corpus when given), and the figures always come with its
cross-validated accuracy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from flows.synth_data import Clip, make_segment
from models.audio_env import detect_onsets, rms_envelope
from models.audio_repr import ENVELOPE_RATE_HZ, SR, log_mel
from models.envelope_follow import Follow
from models.envelope_metrics import OnsetCounts, e_l1_tfoley, onset_scores
from models.rms_targets import rms_target

SCENE_S = 4.0
SCENES_PER_CLASS = 8
MIN_RECORDINGS = 2
REFERENCE_PER_RECORDING = 16
JUDGE_SEGMENTS = 24   # augmented training segments per held-out recording
JUDGE_FOLDS = 5
DOMAIN_SCENES_FACTOR = 3  # real scenes of the generator's recordings per evaluation scene
EMBED_DIM = 32
KIND_OF_CATEGORY = {"footsteps": "step", "whooshes": "whoosh"}  # others: impact
TARGETS = {"e_l1": 0.0137, "onset_f1@25ms": 0.9, "semantic_accuracy": 0.8}


@dataclass(frozen=True)
class Scene:
    name: str
    category: str
    prompt: str
    audio: np.ndarray  # the real held-out scene the envelope was measured on
    envelope: dict     # the pass's envelope contract (curve, events, prompt)


def scene_envelope(audio: np.ndarray, prompt: str, kind: str, name: str) -> dict:
    """The envelope a scene would carry: its RMS curve at 100 Hz and its detected onsets."""
    return {"version": 1, "shot": name, "rate_hz": ENVELOPE_RATE_HZ,
            "duration_s": len(audio) / SR,
            "curve": [float(v) for v in rms_envelope(audio, SR, ENVELOPE_RATE_HZ)],
            "events": [{"t": float(t), "strength": 1.0, "x": 0.5, "y": 0.5, "kind": kind,
                        "confidence": 1.0} for t in detect_onsets(audio, SR)],
            "prompt": prompt, "source": "eval:heldout-scene"}


def eval_classes(heldout: Sequence[Clip]) -> list[str]:
    """Categories with at least MIN_RECORDINGS held-out recordings."""
    counts: dict[str, int] = {}
    for clip in heldout:
        counts[clip.category] = counts.get(clip.category, 0) + 1
    return sorted(c for c, k in counts.items() if k >= MIN_RECORDINGS)


def make_scenes(heldout: Sequence[Clip], classes: Sequence[str], *, per_class: int,
                seed: int, duration_s: float = SCENE_S) -> list[Scene]:
    """per_class scenes of each class, anchors taken round robin over its recordings."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * SR))
    scenes = []
    for category in classes:
        clips = sorted((c for c in heldout if c.category == category), key=lambda c: c.name)
        for i in range(per_class):
            anchor = clips[i % len(clips)]
            audio = make_segment(anchor, clips, rng, n)
            name = f"{category}-{i:02d}"
            kind = KIND_OF_CATEGORY.get(category, "impact")
            scenes.append(Scene(name, category, anchor.caption, audio,
                                scene_envelope(audio, anchor.caption, kind, name)))
    return scenes


# --- the judge: a small audio classifier trained on recordings the generator never saw ---

SPECTRAL_DIM = 241  # judge_features = spectral_features (these first) + temporal_features


def spectral_features(audio: np.ndarray) -> np.ndarray:
    """(SPECTRAL_DIM,) statistics of a recording's log-mel: per band mean and std over the
    frames within 30 dB of the loudest, per band max, and the share of such frames."""
    m = log_mel(torch.from_numpy(np.asarray(audio, dtype=np.float32))).numpy()  # (80, T)
    level = m.mean(axis=0)
    active = level >= level.max() - 30 / 20 * np.log(10) / 4  # 30 dB in log-mel units
    a = m[:, active]
    return np.concatenate([a.mean(axis=1), a.std(axis=1), m.max(axis=1),
                           [active.mean()]]).astype(np.float32)


PROFILE_MS = (10, 20, 40, 80, 160, 320, 640)  # decay profile: level after each event's peak
EVENT_FLOOR_DB = 30.0   # events weaker than the loudest by more than this are not described
EVENT_END_DB = 25.0     # an event lasts while its level stays within this of its peak
TEMPORAL_SR = 16000     # the spectral descriptors' rate (the categories differ below 8 kHz)


def temporal_features(audio: np.ndarray) -> np.ndarray:
    """(37,) what the log-mel statistics do not say — how the sound moves in time:
    each event's decay profile (its level PROFILE_MS after its peak, relative to the peak;
    mean, median and min over the events), its length (time within EVENT_END_DB of its peak;
    mean, median, max), the share of active 10 ms frames, the number of onsets, the share of
    onsets closer than 0.3 s to the next and the median interval (a shatter's debris, a door's
    creak then latch, one footstep), and frame-wise spectral shape over the active frames at
    16 kHz (log centroid mean / std, flatness mean / std, log bandwidth, log 85 % roll-off
    mean / std, positive spectral flux mean / max)."""
    import librosa

    a = np.asarray(audio, dtype=np.float32)
    db = 20 * np.log10(np.maximum(rms_envelope(a, SR, 100.0), 1e-6))  # 10 ms frames
    onsets = detect_onsets(a, SR)
    top = float(db.max())
    profiles, lengths = [], []
    for t in onsets:
        i = int(t * 100)
        if i >= len(db):
            continue
        p = i + int(db[i:i + 4].argmax())  # the peak within 40 ms of the onset
        if db[p] < top - EVENT_FLOOR_DB:
            continue
        profiles.append([db[min(p + ms // 10, len(db) - 1)] - db[p] for ms in PROFILE_MS])
        below = np.flatnonzero(db[p:] <= db[p] - EVENT_END_DB)
        lengths.append((below[0] if len(below) else len(db) - p) / 100)
    prof = np.array(profiles) if profiles else np.full((1, len(PROFILE_MS)), -60.0)
    length = np.array(lengths) if lengths else np.zeros(1)
    ioi = np.diff(onsets) if len(onsets) > 1 else np.array([SCENE_S])
    active = float(np.mean(db > top - EVENT_FLOOR_DB))
    timing = [length.mean(), np.median(length), length.max(), active, len(onsets),
              float(np.mean(ioi < 0.3)), float(np.median(ioi))]

    y = librosa.resample(a, orig_sr=SR, target_sr=TEMPORAL_SR)
    s = np.abs(librosa.stft(y, n_fft=512, hop_length=160))  # 32 ms window, 10 ms hop
    power = np.sum(s ** 2, axis=0)
    act = power > power.max() * 1e-3  # within 30 dB of the loudest frame
    if act.sum() < 2:
        act[:] = True
    centroid = librosa.feature.spectral_centroid(S=s, sr=TEMPORAL_SR)[0][act]
    flatness = librosa.feature.spectral_flatness(S=s)[0][act]
    bandwidth = librosa.feature.spectral_bandwidth(S=s, sr=TEMPORAL_SR)[0][act]
    rolloff = librosa.feature.spectral_rolloff(S=s, sr=TEMPORAL_SR)[0][act]
    flux = np.sqrt(np.sum(np.diff(np.log(s + 1e-6), axis=1).clip(0) ** 2, axis=0))
    shape = [np.log1p(centroid.mean()), np.log1p(centroid.std()), flatness.mean(), flatness.std(),
             np.log1p(bandwidth.mean()), np.log1p(rolloff.mean()), np.log1p(rolloff.std()),
             flux[act[1:]].mean() if act[1:].any() else 0.0, flux.max()]
    return np.concatenate([prof.mean(0), np.median(prof, 0), prof.min(0), timing,
                           shape]).astype(np.float32)


def judge_features(audio: np.ndarray) -> np.ndarray:
    """(278,) the judge's input: `spectral_features` (what the sound is made of) and
    `temporal_features` (how it moves in time). The temporal part lifted the judge's accuracy
    on recordings it never saw from 0.66 to 0.74 (5 folds by recording, judge corpus + held-out
    sfx) and from 0.74 to 0.82 on the sfx folder itself (docs/BENCHMARKS.md, phase 5)."""
    return np.concatenate([spectral_features(audio), temporal_features(audio)])


class Judge(torch.nn.Module):
    """Standardized features → Linear → tanh (the EMBED_DIM embedding) → Linear → classes."""

    def __init__(self, classes: Sequence[str], mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.classes = list(classes)
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.embed = torch.nn.Sequential(torch.nn.Dropout(0.2),
                                         torch.nn.Linear(len(mean), EMBED_DIM), torch.nn.Tanh())
        self.head = torch.nn.Linear(EMBED_DIM, len(classes))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed((feats - self.mean) / self.std))

    @torch.no_grad()
    def embedding(self, feats: np.ndarray) -> np.ndarray:
        self.eval()
        return self.embed((torch.from_numpy(feats) - self.mean) / self.std).numpy()

    @torch.no_grad()
    def predict(self, feats: np.ndarray) -> list[str]:
        self.eval()
        return [self.classes[i] for i in self(torch.from_numpy(feats)).argmax(1).tolist()]


def judge_segments(clips: Sequence[Clip], per_clip: int, seed: int,
                   duration_s: float = SCENE_S) -> tuple[np.ndarray, list[str], list[str]]:
    """Features, categories and recording names of augmented segments of each clip (only that
    clip in its segments, so folds by recording stay apart)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * SR))
    feats, cats, names = [], [], []
    for clip in clips:
        for _ in range(per_clip):
            feats.append(judge_features(make_segment(clip, [clip], rng, n)))
            cats.append(clip.category)
            names.append(clip.name)
    return np.stack(feats), cats, names


def train_judge(feats: np.ndarray, cats: Sequence[str], classes: Sequence[str], seed: int,
                epochs: int = 300) -> Judge:
    """Full-batch AdamW with class-balanced cross-entropy (seeded)."""
    torch.manual_seed(seed)
    judge = Judge(classes, feats.mean(0), feats.std(0) + 1e-3)
    y = torch.tensor([classes.index(c) for c in cats])
    counts = torch.bincount(y, minlength=len(classes)).float().clamp_min(1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / counts)
    opt = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=1e-2)
    x = torch.from_numpy(feats)
    judge.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn(judge(x), y).backward()
        opt.step()
    return judge.eval()


def cross_validate(feats: np.ndarray, cats: Sequence[str], names: Sequence[str],
                   classes: Sequence[str], seed: int, folds: int = JUDGE_FOLDS) -> dict[str, Any]:
    """Accuracy on recordings left out of training: recordings of each class are dealt to
    folds round robin (sorted by name), every fold trains a judge on the others. Reports the
    accuracy over segments, per class and their mean (balanced: the evaluation's scenes are
    balanced over classes, the held-out recordings are not)."""
    fold_of: dict[str, int] = {}
    for category in classes:
        recs = sorted({n for n, c in zip(names, cats) if c == category})
        fold_of |= {r: i % folds for i, r in enumerate(recs)}
    fold = np.array([fold_of[n] for n in names])
    truth = np.array(cats, dtype=object)
    pred = np.empty(len(cats), dtype=object)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        judge = train_judge(feats[~test], list(truth[~test]), classes, seed)
        pred[test] = judge.predict(feats[test])
    tested = pred != None  # noqa: E711 (element-wise: segments of a fold that ran)
    per_class = {c: float(np.mean(pred[tested & (truth == c)] == c)) for c in classes
                 if (tested & (truth == c)).any()}
    recordings = {c: len({n for n, k in zip(names, cats) if k == c}) for c in classes}
    return {"accuracy": float(np.mean(pred[tested] == truth[tested])),
            "balanced_accuracy": float(np.mean(list(per_class.values()))),
            "per_class_accuracy": per_class, "recordings_per_class": recordings,
            "segments": int(tested.sum()), "folds": folds, "recordings": len(fold_of)}


def judge_on_real(judge: Judge, scenes: Sequence[Scene]) -> dict[str, Any]:
    """The judge's accuracy on real scenes it never saw that are cut from the generator's own
    training recordings: how well it reads real sound *of the generator's domain*. A rendering
    that sounded exactly like the recordings the generator learned from would score this, so
    a semantic accuracy is only as trustworthy as this figure is near 1."""
    pred = judge.predict(np.stack([judge_features(s.audio) for s in scenes]))
    truth = [s.category for s in scenes]
    per_class = {c: float(np.mean([p == c for p, t in zip(pred, truth) if t == c]))
                 for c in sorted(set(truth))}
    return {"accuracy": float(np.mean([p == t for p, t in zip(pred, truth)])),
            "per_class_accuracy": per_class, "scenes": len(scenes)}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows):
    |µ_a − µ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½)."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(0), b.mean(0)
    eps = 1e-6 * np.eye(a.shape[1])  # few rows: keep the covariances invertible
    cov_a, cov_b = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    root = sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


# --- scoring -----------------------------------------------------------------------------

def score_backend(scenes: Sequence[Scene], rendered: Sequence[np.ndarray], judge: Judge,
                  reference: dict[str, np.ndarray], seconds: float) -> dict[str, Any]:
    """The metrics of one backend's renderings of `scenes` (see module doc)."""
    l1s, counts = [], None
    for scene, audio in zip(scenes, rendered):
        l1s.append(e_l1_tfoley(rms_target(audio, SR), rms_target(scene.audio, SR)))
        c = OnsetCounts.of(detect_onsets(audio, SR).tolist(),
                           [e["t"] for e in scene.envelope["events"]])
        counts = c if counts is None else counts + c
    feats = np.stack([judge_features(a) for a in rendered])
    pred = judge.predict(feats)
    emb = judge.embedding(feats)
    fd = {cat: frechet_distance(emb[[s.category == cat for s in scenes]], ref)
          for cat, ref in reference.items()}
    audio_s = sum(len(a) for a in rendered) / SR
    onsets = onset_scores(counts)
    return {"e_l1": float(np.mean(l1s)), **onsets,
            "semantic_accuracy": float(np.mean([p == s.category for p, s in zip(pred, scenes)])),
            "frechet_distance": float(np.mean(list(fd.values()))),
            "frechet_by_class": fd, "rtf": seconds / audio_s, "audio_s": audio_s,
            "per_class_accuracy": {cat: float(np.mean([p == s.category for p, s in
                                                       zip(pred, scenes) if s.category == cat]))
                                   for cat in reference},
            "predicted": pred}


def sampler_pool(train: Sequence[Clip], scene: Scene) -> list:
    """The sampler's one-shots for a scene: training recordings of its caption, else of its
    category (what an indexed library would offer)."""
    from models.sampler import Sample

    same = [c for c in train if c.caption == scene.prompt] or \
           [c for c in train if c.category == scene.category]
    return [Sample(c.audio, c.name) for c in sorted(same, key=lambda c: c.name)]


def sampler_library(splits: dict[str, list[Clip]], split: str) -> list[Clip]:
    """The recordings the sampler may play: every non-held-out one, minus the validation
    recordings when they are the scenes (`split="val"`)."""
    return splits["train"] + (splits["val"] if split == "heldout" else [])


def resynthesize(synth: Any, audio: np.ndarray) -> np.ndarray:
    """The real scene through the vocoder alone (its true log-mel → audio): what the diffusion
    backend could reach with a perfect denoiser, so its figures bound the vocoder's share;
    finished as every rendering is (`synth_pipeline.finish` without an envelope: the
    high-pass and the limiter)."""
    from models.synth_pipeline import finish

    with torch.no_grad():
        out = synth.vocoder(log_mel(torch.from_numpy(audio))[None])[0, :len(audio)].numpy()
    return finish(out, None)


def render_all(scenes: Sequence[Scene], render: Callable[[Scene], np.ndarray],
               progress: Callable[[], None] | None = None) -> tuple[list[np.ndarray], float]:
    out, t0 = [], time.perf_counter()
    for scene in scenes:
        out.append(render(scene))
        if progress is not None:
            progress()
    return out, time.perf_counter() - t0


def finish_all(scenes: Sequence[Scene], audio: Sequence[np.ndarray], seconds: float,
               follow: Follow | None) -> tuple[list[np.ndarray], float]:
    """Renderings through `models.synth_pipeline.finish` (the high-pass, the envelope follow
    stage when `follow` is set, then the limiter), with the seconds that took added to
    `seconds`."""
    from models.synth_pipeline import finish

    t0 = time.perf_counter()
    out = [finish(a, s.envelope, follow) for s, a in zip(scenes, audio)]
    return out, seconds + time.perf_counter() - t0


SPLITS = ("heldout", "val")


def scene_classes(splits: dict[str, list[Clip]], split: str) -> list[str]:
    """The categories scored: the judge's (`eval_classes` of the held-out split), restricted for
    `val` to those with a validation recording."""
    classes = eval_classes(splits["heldout"])
    if split == "val":
        present = {c.category for c in splits["val"]}
        classes = [c for c in classes if c in present]
    return classes


def evaluate(sfx: Path, checkpoints: Path, work: Path, *, preset: str = "tiny",
             steps: int = 16, guidance: float = 3.0, seed: int = 0, split: str = "heldout",
             per_class: int = SCENES_PER_CLASS, paths: list[str] | None = None,
             progress: Callable[[str, int], None] | None = None,
             keep_audio: Path | None = None, judge_corpus: Path | None = None
             ) -> dict[str, Any]:
    """Everything `foley eval synth` reports (see module doc). `progress(stage, total)` is
    called once per rendered scene; `keep_audio`: write each rendering there as a WAV;
    `split`: where the scenes come from (see module doc); `judge_corpus`: a folder built by
    `foley dataset judge` whose recordings (of the judge's classes, none the generator trained
    on) the judge also learns from."""
    from flows.synth_data import load_corpus, load_recordings
    from models import synth_pipeline
    from models.sampler import render_shot
    from models.text_embed import TextEmbedder
    from tasks.synth import shot_seed

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    synth = synth_pipeline.load(checkpoints, preset, need=("vocoder", "base", "control"))
    splits = load_corpus(sfx, work, with_kit=False, paths=paths)
    heldout = splits["heldout"]
    judge_classes = eval_classes(heldout)
    classes = scene_classes(splits, split)
    if len(classes) < 2:
        raise ValueError(f"{sfx}: the {split} split has fewer than two of the categories with "
                         f"{MIN_RECORDINGS}+ held-out recordings; nothing to classify")
    scenes = make_scenes(splits[split], classes, per_class=per_class, seed=seed)
    judge_clips = [c for c in heldout if c.category in judge_classes]
    corpus = []
    if judge_corpus is not None:
        if not (Path(judge_corpus) / "catalog.csv").is_file():
            raise ValueError(f"{judge_corpus} has no catalog.csv: build the judge corpus with "
                             "`foley dataset judge DIR`")
        trained = {c.sha256 for c in splits["train"] + splits["val"]}
        corpus = [c for c in load_recordings(judge_corpus, work / "library" / "judge")
                  if c.category in judge_classes and c.sha256 not in trained]
    feats, cats, names = judge_segments(judge_clips + corpus, JUDGE_SEGMENTS, seed + 1)
    cv = cross_validate(feats, cats, names, judge_classes, seed)
    judge = train_judge(feats, cats, judge_classes, seed)
    ref_feats, ref_cats, _ = judge_segments(judge_clips + corpus, REFERENCE_PER_RECORDING,
                                            seed + 2)
    ref_emb = judge.embedding(ref_feats)
    own = [c for c in splits["train"] if c.category in judge_classes]
    domain = judge_on_real(judge, make_scenes(
        own, sorted({c.category for c in own}), per_class=DOMAIN_SCENES_FACTOR * per_class,
        seed=seed + 3)) if own else None
    reference = {c: ref_emb[[k == c for k in ref_cats]] for c in classes}

    embedder = TextEmbedder(work / "text_cache")
    prompts = sorted({s.prompt for s in scenes})
    semantic = dict(zip(prompts, embedder.embed(prompts)))
    train = sampler_library(splits, split)

    def tick(stage: str) -> Callable[[], None] | None:
        return None if progress is None else (lambda: progress(stage, len(scenes)))

    def controlnet(scene: Scene) -> np.ndarray:
        control, n = synth_pipeline.envelope_control(scene.envelope)
        return synth_pipeline.generate(synth, n_samples=n, semantic=semantic[scene.prompt],
                                       control=control, steps=steps, guidance=guidance,
                                       seed=shot_seed(seed, "eval", scene.name))

    follow = Follow()
    # one diffusion rendering per scene, scored as the pass delivers it (follow stage, then
    # the limiter: `synth_pipeline.render_envelope`) and as the ControlNet left it
    raw, generate_s = render_all(scenes, controlnet, tick("diffusion"))
    sampler = render_all(scenes, lambda s: render_shot(
        s.envelope, sampler_pool(train, s), [], sr=SR,
        seed=shot_seed(seed, "eval", s.name)), tick("sampler"))
    rendered = {
        "diffusion": finish_all(scenes, raw, generate_s, follow),
        "diffusion_controlnet": finish_all(scenes, raw, generate_s, None),
        "sampler": sampler,
        "sampler_follow": finish_all(scenes, *sampler, follow),
        "vocoder": render_all(scenes, lambda s: resynthesize(synth, s.audio), tick("vocoder")),
    }
    if keep_audio is not None:
        _write_renderings(keep_audio, scenes, rendered)
    backends = {name: score_backend(scenes, audio, judge, reference, secs)
                for name, (audio, secs) in rendered.items()}
    return {
        "split": split,
        "envelopes": f"{len(scenes)} scenes of {SCENE_S:g} s built from the {split} sfx "
                     f"recordings (seed {seed}), envelope and onsets measured on them",
        "classes": classes, "scenes": [s.name for s in scenes],
        "heldout_recordings": len(judge_clips), "events": sum(len(s.envelope["events"])
                                                              for s in scenes),
        "e_l1_silence": float(np.mean([e_l1_tfoley(np.zeros_like(t), t) for t in
                                       (rms_target(s.audio, SR) for s in scenes)])),
        "judge": {**cv, "segments_per_recording": JUDGE_SEGMENTS, "embedding_dim": EMBED_DIM,
                  "corpus": str(judge_corpus) if judge_corpus is not None else None,
                  "corpus_recordings": len(corpus), "generator_domain": domain},
        "params": {"preset": preset, "steps": steps, "guidance": guidance, "seed": seed,
                   "follow": follow.params(),
                   "threads": torch.get_num_threads(), "model": synth.version[:16],
                   "checkpoints": synth.checkpoints},
        "backends": backends, "targets": TARGETS,
    }


def _write_renderings(folder: Path, scenes: Sequence[Scene],
                      rendered: dict[str, tuple[list[np.ndarray], float]]) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        sf.write(folder / f"{scene.name}_real.wav", scene.audio, SR, subtype="FLOAT")
        for name, (audio, _s) in rendered.items():
            sf.write(folder / f"{scene.name}_{name}.wav", audio[i], SR, subtype="FLOAT")


ROWS = (("E-L1 (T-Foley)", "e_l1", "≤ 0.0137", "{:.4f}"),
        ("onset precision @ ±25 ms", "onset_precision@25ms", "", "{:.3f}"),
        ("onset recall @ ±25 ms", "onset_recall@25ms", "", "{:.3f}"),
        ("onset F1 @ ±25 ms", "onset_f1@25ms", "≥ 0.9", "{:.3f}"),
        ("onset F1 @ ±50 ms", "onset_f1@50ms", "", "{:.3f}"),
        ("onset error median (ms)", "onset_error_median_ms", "", "{:.1f}"),
        ("semantic accuracy", "semantic_accuracy", "≥ 0.8", "{:.3f}"),
        ("Fréchet distance (judge embedding)", "frechet_distance", "", "{:.2f}"),
        ("real-time factor (CPU)", "rtf", "", "{:.3f}"))


COLUMNS = (("diffusion", "diffusion"), ("diffusion_controlnet", "diffusion, ControlNet only"),
           ("sampler", "sampler"), ("sampler_follow", "sampler + follow"))


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: diffusion (as the pass renders it, and its ControlNet's
    rendering before the follow stage) against the sampler (as the pass renders it, and
    through the same follow stage), and the vocoder bound."""
    b = report["backends"]
    lines = ["| metric | " + " | ".join(label for _k, label in COLUMNS)
             + " | target | vocoder resynthesis (bound) |", "|---" * (len(COLUMNS) + 3) + "|"]
    for label, key, target, fmt in ROWS:
        cells = " | ".join(fmt.format(b[k][key]) for k, _label in COLUMNS)
        lines.append(f"| {label} | {cells} | {target} | {fmt.format(b['vocoder'][key])} |")
    j = report["judge"]
    lines.append("")
    per_class = ", ".join(f"{c} {v:.2f} ({j['recordings_per_class'][c]} rec.)"
                          for c, v in j["per_class_accuracy"].items())
    n_corpus = j.get("corpus_recordings", 0)
    sources = f"{j['recordings'] - n_corpus} held-out sfx" + (
        f", {n_corpus} of the judge corpus" if n_corpus else "")
    domain = j.get("generator_domain")
    reads = (f"; on {domain['scenes']} real scenes of the generator's training recordings "
             f"(the judge never saw them) it reads {domain['accuracy']:.3f}" if domain else "")
    lines.append(f"{len(report['scenes'])} envelopes of the {report.get('split', 'heldout')} "
                 f"split ({', '.join(report['classes'])}; "
                 f"{report['events']} events); judge: cross-validated accuracy "
                 f"{j['accuracy']:.3f} (balanced {j['balanced_accuracy']:.3f}; {per_class}) "
                 f"on {j['recordings']} recordings the generator never saw ({sources}; "
                 f"{j['folds']} folds by recording){reads}; "
                 f"E-L1 of silence on these envelopes {report['e_l1_silence']:.4f}")
    return "\n".join(lines)
