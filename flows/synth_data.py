"""Training data of the diffusion synthesizer: recordings, splits, augmentation, batches.

Recordings: the shared sfx one-shots (../shared/sfx, captions from its catalog.csv) and the
project's own synthesized kit (`models.kit`), both through `tasks.library.index_library`
(48 kHz mono, attack-trimmed, loudness-normalized; cached by content hash).

Splits by the source file's sha256, so a renamed copy lands on the same side:
- held-out: HELDOUT_FRACTION of the sfx recordings (never the kit), never used to train the
  generator; kept for the semantic classifier and the evaluation (listed in split.json);
- validation: VAL_FRACTION of the rest (other hash bits), picks the best checkpoint;
- train: everything else.

A training segment is SEGMENT_S long: one to three recordings of the same caption placed at
random offsets (like a shot with several hits), each with its own small varispeed (pitch and
time, ±6 %) and gain (±6 dB), plus white noise 50–70 dB below full scale.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from models.audio_repr import SR

HELDOUT_FRACTION = 0.2
VAL_FRACTION = 0.1
SEGMENT_S = 2.56


@dataclass(frozen=True)
class Clip:
    name: str
    caption: str
    category: str
    sha256: str
    audio: np.ndarray  # (n,) float32 at SR


def _fraction(sha256: str, part: int) -> float:
    return int(sha256[8 * part:8 * part + 8], 16) / 0xFFFFFFFF


def split_of(clip: Clip, own: bool) -> str:
    """heldout | val | train (see module doc); the project's own sounds are never held out."""
    if not own and _fraction(clip.sha256, 0) < HELDOUT_FRACTION:
        return "heldout"
    return "val" if _fraction(clip.sha256, 1) < VAL_FRACTION else "train"


def load_recordings(root: Path, cache: Path, paths: list[str] | None = None) -> list[Clip]:
    """Every recording of a folder with a catalog.csv (the sfx folder's layout), indexed into
    `cache` (48 kHz mono)."""
    from tasks.library import index_library

    clips = []
    for s in index_library(root, cache, paths=paths):
        audio, sr = sf.read(s.processed_path, dtype="float32")
        assert sr == SR, f"{s.processed_path}: {sr} Hz, expected {SR}"
        clips.append(Clip(s.rel_path, s.caption, s.category, s.source_sha256, audio))
    return clips


def load_corpus(sfx: Path, work: Path, *, with_kit: bool = True,
                paths: list[str] | None = None) -> dict[str, list[Clip]]:
    """{train, val, heldout} clips of the sfx folder (+ the kit), writing work/split.json."""
    from models.kit import synthesize_kit

    if not (Path(sfx) / "catalog.csv").is_file():
        raise FileNotFoundError(f"{sfx} has no catalog.csv: point --sfx at the shared sfx folder")
    splits: dict[str, list[Clip]] = {"train": [], "val": [], "heldout": []}
    for clip in load_recordings(Path(sfx), Path(work) / "library" / "sfx", paths):
        splits[split_of(clip, own=False)].append(clip)
    if with_kit:
        kit = Path(work) / "kit"
        if not (kit / "catalog.csv").is_file():
            synthesize_kit(kit, sr=SR)
        for clip in load_recordings(kit, Path(work) / "library" / "kit", None):
            splits[split_of(clip, own=True)].append(clip)
    doc = {k: [{"name": c.name, "sha256": c.sha256, "caption": c.caption} for c in v]
           for k, v in splits.items()}
    tmp = Path(work) / ".split.json.partial"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(Path(work) / "split.json")
    return splits


def varispeed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `audio` `factor` times faster (pitch and time together), as tape would."""
    import soxr

    if abs(factor - 1.0) < 1e-6:
        return audio
    return soxr.resample(audio, SR * factor, SR, quality="MQ").astype(np.float32)


def make_segment(anchor: Clip, pool: list[Clip], rng: np.random.Generator,
                 n: int, augment: bool = True) -> np.ndarray:
    """One augmented training segment of n samples around `anchor` (see module doc)."""
    same = [c for c in pool if c.caption == anchor.caption] or [anchor]
    k = int(rng.integers(1, 4)) if augment else 1
    out = np.zeros(n, np.float32)
    for j in range(k):
        clip = anchor if j == 0 else same[int(rng.integers(len(same)))]
        x = clip.audio
        if augment:
            x = varispeed(x, float(rng.uniform(0.94, 1.06)))
            x = x * np.float32(10 ** (rng.uniform(-6, 6) / 20))
        offset = int(rng.integers(0, max(1, int(0.6 * n)))) if augment else 0
        room = n - offset
        # a long recording starts up to 0.1 s late sometimes: the attack is not always at 0
        start = int(rng.integers(0, min(len(x) - room, SR // 10) + 1)) if augment and len(x) > room else 0
        piece = x[start:start + room]
        out[offset:offset + len(piece)] += piece
    if augment:
        out += rng.standard_normal(n).astype(np.float32) * np.float32(10 ** (rng.uniform(-70, -50) / 20))
    return np.clip(out, -1.0, 1.0)


def caption_ids(clips: list[Clip]) -> dict[str, int]:
    return {c: i for i, c in enumerate(sorted({c.caption for c in clips}))}


def file_hash_list(clips: list[Clip]) -> str:
    """One hash of which recordings a model saw (provenance / model card)."""
    return hashlib.sha256("\n".join(sorted(c.sha256 for c in clips)).encode()).hexdigest()
