"""Index a folder of recordings into sampler-ready sounds, and pick sounds for a hint.

`index_library` decodes every recording (wav/flac/ogg/aiff/mp3, any rate and channel count),
mixes to mono (the mean of the channels: see `_to_mono_at`), resamples to the project rate
and prepares it for the sampler (a DC offset is kept: see docs/SYNTHESIS.md):
- one-shots start PREROLL_S before their attack (`models.audio_env.attack_start`: the first
  clear onset within 24 dB of the loudest 2 ms, re-measured on the trimmed file so that the
  sampler's onset detection finds it exactly there), the pre-roll faded in; textures (and
  swells without an attack) start at their first frame within 40 dB of their loudest;
- trailing silence (below the noise floor + 6 dB, or 60 dB under the loudest frame) is cut
  and the end faded out over 10 ms;
- loudness (mean power of the 10 ms frames within 30 dB of the loudest: the "active" part,
  so leading/trailing silence and decays do not dilute it) is set to TARGET_LOUDNESS_DB,
  unless that would put a peak above PEAK_CEILING_DB, in which case the gain stops there.
Processed files are float WAVs named from the source's sha256 (plus kind, rate and processing
version): re-indexing reuses them and yields identical results. A file that cannot be decoded,
holds NaN or infinity, holds only silence or near-silence (a peak below NEAR_SILENCE_PEAK_DBFS),
or fails to prepare for any other reason is skipped and listed, with the reason, in a warning
(and in library.json's "skipped"); the index goes on.
An outage of the artifact store or the database is not a bad file: it stops the index.

catalog.csv (optional) gives category / material / action / caption per path; a row may stop
early (a spreadsheet export drops empty trailing cells) and an empty cell is filled from the
path's guess (`caption_from_path`), as is every field of a file the catalog does not list.
"""

from __future__ import annotations

import csv
import hashlib
import errno
import json
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy.exc import SQLAlchemyError

from db.engine import DatabaseUnavailable
from models.audio_env import attack_start, rms_envelope
from models.sampler import Sample
from tasks.stage import one_line
from tasks.store import StoreError, atomic_write
from tasks.wavfloat import write_float_wav

log = logging.getLogger(__name__)

PROCESS_VERSION = 2  # 2: float WAVs written by tasks.wavfloat
TARGET_LOUDNESS_DB = -24.0  # only ~4% of the sfx set needs a lower gain to stay peak-safe
PEAK_CEILING_DB = -1.0
# A recording whose loudest sample is below this holds no usable sound: −90 dBFS is about one
# step of 16-bit audio (−90.3 dBFS), so no 16-bit source could even carry it, and bringing it
# to TARGET_LOUDNESS_DB would take more than 66 dB of gain, lifting converter and dither noise
# with it. (The quietest file of the shared sfx set peaks at −28 dBFS.)
NEAR_SILENCE_PEAK_DBFS = -90.0
PREROLL_S = 0.0015
ATTACK_REL_DB = -24.0  # the attack: first onset within 24 dB of the loudest 2 ms
FADE_OUT_S = 0.010
TEXTURE_MIN_S = 1.0  # a texture word and at least this long → texture
LONG_RECORDING_S = 10.0  # anything this long is a texture (ambience, room tone)
AUDIO_EXTENSIONS = {".wav", ".wave", ".bwf", ".flac", ".ogg", ".oga", ".aif", ".aiff",
                    ".aifc", ".mp3"}
MANIFEST = "library.json"


@dataclass(frozen=True)
class LibrarySound:
    """One recording of the library, processed for the sampler."""

    rel_path: str
    category: str
    material: str
    action: str
    caption: str
    processed_path: str  # mono float WAV at the index rate, attack at attack_s
    source_sha256: str
    duration_s: float  # of the processed file
    loudness_db: float  # of the processed file (active-part RMS, dBFS)
    kind: str  # "oneshot" | "texture"
    source_loudness_db: float = float("nan")  # same measure before normalisation
    source_sr: int = 0
    source_channels: int = 0
    attack_s: float = PREROLL_S  # where the attack sits in the processed file


class UnreadableAudio(Exception):
    """The file could not be decoded, holds NaN or infinity, or holds only silence."""


def _is_outage(exc: BaseException) -> bool:
    """The artifact store, the database or the disk the index writes to failed (not the
    file): the index must stop, or it would record a library missing every file after it."""
    if isinstance(exc, (StoreError, DatabaseUnavailable, SQLAlchemyError)):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


# ---------------------------------------------------------------- decoding and processing


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the file's rate; soundfile first, librosa as fallback."""
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as first:  # noqa: BLE001 - any libsndfile failure → try the other decoder
        try:
            import librosa

            with warnings.catch_warnings():  # its "PySoundFile failed" notes: we know
                warnings.simplefilter("ignore")
                audio, sr = librosa.load(path, sr=None, mono=False)
            audio = np.atleast_2d(audio).T
        except Exception as second:  # noqa: BLE001
            raise UnreadableAudio(f"{one_line(first)}; librosa: {one_line(second)}") from second
    if audio.size == 0:
        raise UnreadableAudio("no samples")
    bad = ~np.isfinite(audio)
    if bad.any():  # a float file can hold them; every measure downstream would be NaN
        first_bad = int(np.flatnonzero(bad.any(axis=1))[0])
        raise UnreadableAudio(f"holds NaN or infinity: {int(bad.sum())} sample(s), the first "
                              f"at {first_bad / sr:.3f} s")
    return np.ascontiguousarray(audio, dtype=np.float32), int(sr)


def _to_mono_at(audio: np.ndarray, src_sr: int, sr: int) -> np.ndarray:
    """The mean of the channels, resampled to `sr`. A stereo pair's common (centre) part keeps
    its level, a sound on one side only drops 6 dB and an anti-phase part cancels; `prepare`
    then sets the loudness, so only the balance inside the file depends on this. A 4-channel
    B-format file (W X Y Z / W Y Z X) is mixed the same way: nothing a library offers tells
    one from four discrete microphones (see docs/SYNTHESIS.md), so W alone is not taken."""
    mono = audio.mean(axis=1, dtype=np.float64)
    if src_sr != sr:
        import soxr

        mono = soxr.resample(mono, src_sr, sr, quality="HQ")
    return mono


def _ramp(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))


def _levels_db(x: np.ndarray, sr: int) -> np.ndarray:
    """Level (dB) of 20 ms frames every 10 ms."""
    return 20 * np.log10(np.maximum(rms_envelope(x, sr, 100.0).astype(np.float64), 1e-12))


def _cut(x: np.ndarray, attack: int, pre: int) -> np.ndarray:
    """x from `pre` samples before `attack` (zero-padded if needed), the pre-roll faded in."""
    start = attack - pre
    if start < 0:
        x = np.concatenate([np.zeros(-start), x])
        start = 0
    out = x[start:].copy()
    out[:pre] *= _ramp(pre)  # only the pre-roll fades; the attack is untouched
    return out


def _trim_start(x: np.ndarray, sr: int, kind: str) -> np.ndarray:
    pre = int(round(PREROLL_S * sr))
    if kind != "oneshot":
        levels = _levels_db(x, sr)
        first = np.flatnonzero(levels >= levels.max() - 40)
        return _cut(x, int(first[0] * sr / 100) if first.size else 0, pre)
    attack = attack_start(x, sr, rel_threshold_db=ATTACK_REL_DB)
    if attack is None:
        raise UnreadableAudio("only silence")
    out = _cut(x, attack, pre)
    for _ in range(2):  # re-measure as the sampler will see it: after silence, not noise
        again = attack_start(out, sr, rel_threshold_db=ATTACK_REL_DB)
        if again is None or again == pre:
            break
        attack += again - pre
        out = _cut(x, attack, pre)
    return out


def _trim_end(x: np.ndarray, sr: int) -> np.ndarray:
    levels = _levels_db(x, sr)
    if levels.size < 3:
        return x
    after_peak = levels[int(np.argmax(levels)) :]
    floor = float(np.percentile(after_peak, 10))
    threshold = levels.max() - 60.0
    if floor < levels.max() - 20.0:  # a real floor under the decay, not the sound itself
        threshold = max(threshold, floor + 6.0)
    last = int(np.flatnonzero(levels >= threshold)[-1])
    end = min(len(x), int((last + 1) * sr / 100) + int(FADE_OUT_S * sr))
    x = x[:end].copy()
    k = min(int(FADE_OUT_S * sr), len(x) // 5)
    x[len(x) - k :] *= _ramp(k)[::-1]
    return x


def active_loudness_db(x: np.ndarray, sr: int) -> float:
    """Mean power (dBFS) of the 10 ms frames within 30 dB of the loudest frame."""
    env = rms_envelope(x, sr, 100.0).astype(np.float64)
    if env.size == 0 or env.max() <= 0:
        return float("-inf")
    active = env >= env.max() * 10 ** (-30 / 20)
    return float(10 * np.log10(np.mean(env[active] ** 2)))


def prepare(mono: np.ndarray, sr: int, kind: str) -> tuple[np.ndarray, dict]:
    """Trim, fade and loudness-normalise one mono recording; returns audio and its figures.
    UnreadableAudio when it holds NaN or infinity, only silence, only near-silence (a peak
    below NEAR_SILENCE_PEAK_DBFS), or a level out of range."""
    x = np.asarray(mono, dtype=np.float64)
    if not np.isfinite(x).all():  # (`_decode` refuses them first; a caller's own reading may not)
        raise UnreadableAudio("holds NaN or infinity")
    peak = float(np.abs(x).max(initial=0.0))
    if 0 < peak < 10 ** (NEAR_SILENCE_PEAK_DBFS / 20):  # (all zeros: "only silence", below)
        raise UnreadableAudio(f"only near-silence: its peak is {20 * math.log10(peak):.0f} dBFS, "
                              f"below {NEAR_SILENCE_PEAK_DBFS:.0f} dBFS")
    x = _trim_end(_trim_start(x, sr, kind), sr)
    before = active_loudness_db(x, sr)
    if before == float("-inf"):  # a silent texture (a silent one-shot has no attack: above)
        raise UnreadableAudio("only silence" if not x.any() else
                              "only silence, or sound too short to measure")
    if not math.isfinite(before):
        raise UnreadableAudio(f"its loudness cannot be measured ({before} dB)")
    gain_db = TARGET_LOUDNESS_DB - before
    peak_db = 20 * np.log10(max(float(np.abs(x).max()), 1e-12)) + gain_db
    if peak_db > PEAK_CEILING_DB:
        gain_db -= peak_db - PEAK_CEILING_DB
    out = (x * 10 ** (gain_db / 20)).astype(np.float32)
    if not np.isfinite(out).all():
        raise UnreadableAudio(f"its level is out of range (gain {gain_db} dB)")
    figures = {"duration_s": len(out) / sr, "loudness_db": round(float(before + gain_db), 3),
               "source_loudness_db": round(float(before), 3), "gain_db": round(float(gain_db), 3),
               "attack_s": PREROLL_S if kind == "oneshot" else 0.0}
    return out, figures


# ---------------------------------------------------------------- captions and kinds

_ACTIONS = {"step", "hit", "break", "close", "open", "creak", "swish", "whoosh", "rustle",
            "scrape", "wade", "slam", "knock", "drop", "skid", "splash"}
_CATEGORY_ACTION = {"footsteps": "step", "impacts": "hit", "breaks": "break",
                    "whooshes": "swish", "movement": "move", "water": "splash"}
_TEXTURE_WORDS = {"rustle", "rustling", "scrape", "scraping", "wade", "wading", "ambience",
                  "ambient", "atmos", "roomtone", "loop", "texture", "rain", "wind", "drone",
                  "hum", "crowd", "traffic", "stream"}


def words(text: str) -> list[str]:
    """Lower-case words; digits split from letters ("step03" → "step", "03")."""
    return re.findall(r"[a-z]+|[0-9]+", text.lower())


def caption_from_path(rel_path: str) -> dict[str, str]:
    """category / material / action / caption guessed from CATEGORY/MATERIAL/NAME.ext."""
    parts = Path(rel_path).parts
    dirs, stem_words = list(parts[:-1]), words(Path(parts[-1]).stem)
    category = dirs[0].lower() if dirs else (stem_words[0] if stem_words else "")
    material = dirs[1].lower() if len(dirs) > 1 else ""
    action = next((w for w in stem_words if w in _ACTIONS), _CATEGORY_ACTION.get(category, ""))
    caption = " ".join(w for d in dirs for w in words(d)) + " " + " ".join(stem_words)
    return {"category": category, "material": material, "action": action,
            "caption": caption.strip()}


def decide_kind(meta: dict[str, str], duration_s: float) -> str:
    """'texture' for long sustained sounds (rustle, scrape, wading, ambience), else 'oneshot'."""
    found = set(words(" ".join([meta["action"], meta["caption"], meta.get("path", "")])))
    if duration_s >= LONG_RECORDING_S or (found & _TEXTURE_WORDS and duration_s >= TEXTURE_MIN_S):
        return "texture"
    return "oneshot"


def _read_catalog(root: Path) -> dict[str, dict[str, str]]:
    """Rows of root/catalog.csv by path. Missing trailing cells (csv gives None) read as "",
    cells beyond the header are dropped, whitespace around a cell is stripped; a spreadsheet's
    byte-order mark is not part of the first column's name."""
    path = root / "catalog.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = ({k: (v or "").strip() for k, v in row.items()
                 if isinstance(k, str) and not isinstance(v, list)}
                for row in csv.DictReader(fh))
        return {row["path"]: row for row in rows if row.get("path")}


def _meta(rel: str, row: dict[str, str] | None) -> dict[str, str]:
    """category / material / action / caption: the catalog row's, each empty one (or all, for a
    file the catalog does not list) guessed from the path."""
    guess = caption_from_path(rel)
    return {k: ((row or {}).get(k) or "").strip() or guess[k] for k in guess}


def _find_audio(root: Path, exclude: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(p.startswith(".") for p in rel.parts) or path.is_relative_to(exclude):
            continue
        if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
            found.append(path)
    return found


# ---------------------------------------------------------------- the index


def _index_one(path: Path, rel: str, row: dict[str, str] | None, out_dir: Path,
               sr: int) -> LibrarySound:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    meta = _meta(rel, row)
    audio, src_sr = _decode(path)
    kind = decide_kind({**meta, "path": rel}, len(audio) / src_sr)
    wav = out_dir / "audio" / f"{sha[:24]}-{kind}-{sr}-p{PROCESS_VERSION}.wav"
    sidecar = wav.with_suffix(".json")
    figures = json.loads(sidecar.read_text()) if wav.exists() and sidecar.exists() else None
    if figures is None or not all(math.isfinite(figures[k]) for k in ("duration_s", "loudness_db")):
        # (an index before NaN-loudness files were refused may have left one: prepare it again)
        processed, figures = prepare(_to_mono_at(audio, src_sr, sr), sr, kind)
        wav.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(wav, lambda p: write_float_wav(p, processed, sr))
        atomic_write(sidecar, lambda p: p.write_text(json.dumps(figures, indent=1)))
    return LibrarySound(
        rel_path=rel, **meta, processed_path=str(wav), source_sha256=sha,
        duration_s=figures["duration_s"], loudness_db=figures["loudness_db"], kind=kind,
        source_loudness_db=figures["source_loudness_db"], source_sr=src_sr,
        source_channels=audio.shape[1], attack_s=figures["attack_s"],
    )


def index_library(root: Path, out_dir: Path, *, sr: int = 48000,
                  paths: Sequence[str] | None = None) -> list[LibrarySound]:
    """Index every recording under `root` (or only `paths`, relative to root) into `out_dir`.

    Captions come from root/catalog.csv when it lists the file, else (and for its empty
    cells) from the path. Writes out_dir/library.json; returns the sounds sorted by path. A file
    that cannot be prepared (unreadable, NaN, silent, or any other error of its own) is skipped
    and named with its reason in one warning; a store or database outage propagates.
    """
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    catalog = _read_catalog(root)
    files = sorted(root / p for p in paths) if paths is not None else _find_audio(root, out_dir)
    sounds: list[LibrarySound] = []
    skipped: list[str] = []
    reasons: list[str] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            sounds.append(_index_one(path, rel, catalog.get(rel), out_dir, sr))
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the index ...
            if _is_outage(exc):  # ... but the store or database being away does
                raise
            expected = isinstance(exc, (UnreadableAudio, OSError))
            reason = one_line(exc) if expected else f"{type(exc).__name__}: {one_line(exc)}"
            log.debug("library: skipping %s: %s", path, reason, exc_info=not expected)
            skipped.append(rel)
            reasons.append(f"{rel} ({reason})")
    if skipped:
        log.warning("library %s: skipped %d file(s), indexed without them: %s", root,
                    len(skipped), "; ".join(reasons))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"root": str(root), "samplerate": sr, "process_version": PROCESS_VERSION,
                "sounds": [asdict(s) for s in sounds], "skipped": skipped}
    atomic_write(out_dir / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    return sounds


def load_library(out_dir: Path) -> list[LibrarySound]:
    """The sounds of an index written by `index_library`."""
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    names = {f.name for f in fields(LibrarySound)}
    return [LibrarySound(**{k: v for k, v in s.items() if k in names}) for s in manifest["sounds"]]


def load_sample(path: str | Path, name: str, *, attack_s: float | None = None,
                sr: int = 48000) -> Sample:
    """A processed recording as a sampler `Sample`. Without `attack_s` the sampler measures
    the attack itself."""
    audio, file_sr = sf.read(path, dtype="float32", always_2d=True)
    if file_sr != sr:
        raise ValueError(f"library sample {name} is {file_sr} Hz, expected {sr}: re-index the library")
    onset = None if attack_s is None else int(round(attack_s * sr))
    return Sample(audio=audio.mean(axis=1), name=name, onset=onset)
