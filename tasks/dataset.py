"""Data for the envelope model: one npz per clip, the pass's picture features + the clip's sound.

Two builders write the same format into a dataset folder (both may share one folder; one
builder per folder at a time):
- `build_procedural` renders paired scenes (`models.paired_scenes`: picture at 640 px wide
  with physically timed sound from the sfx recordings), encodes them to H.264, makes the
  320-px proxy exactly as the pass does (`tasks.media.make_proxy`, width PROXY_WIDTH, the
  scene's own rate), computes `tasks.features.compute_features` on it and renders the audio.
  Clip n of a build (n = seed … seed + n_clips − 1) is drawn from default_rng([n, split
  index]); train clips are `clip_NNNNN.npz`, held-out ones `clip_heldout_NNNNN.npz`.
- `build_from_videos` cuts every video under a folder into windows of clip_s (rounded to
  whole frames; a last partial window is dropped), proxies + features per window and the
  window's sound at 16 kHz mono: the video's audio stream N (`tasks.media.extract_audio`,
  default the first) or its sidecar stems (`match_stems`: WAV / BWF files named after the
  video and holding a tag such as foley; `align_stems` places each by its BWF TimeReference
  against the picture's start timecode; `stem_window` reads the span by seeking). A video
  without that sound, or a window whose sound is below SILENCE_DBFS RMS, is skipped with its
  reason; a file that cannot be read, or a stem that misses the picture, fails alone. Names:
  `clip_<path slug>-<hash>_KKKK.npz`; meta `sound_source` ("stream:N" / "stems:TAG"),
  `sound` (the stream, or each stem's file, offset and how it was placed) and `onset_truth`
  (how the onsets were read from the sound, `OnsetTruth`; a rerun with another reads them
  again from the stored sound).

npz layout (DATASET_VERSION 1; strings are 0-d unicode arrays, no pickles):
| key | type | meaning |
|---|---|---|
| feat_<k> for k in tasks.features.KEYS | float32 | the pass's features of the clip's proxy |
| audio16k | float32 (round(n_frames / fps · 16000),) | mono sound of the same span as the picture |
| events | JSON str | contacts: t, strength, x, y, kind, material, sound, occluded ([] for videos) |
| sustained | JSON str | segments: t_start, t_end, kind, material, speed and x at rate_hz from t0 |
| onsets | JSON str | where sound starts: contacts + abrupt sustained starts; videos: OnsetTruth |
| meta | JSON str | version, source, name, split, kind, material(s), fps, n_frames, duration_s, |
| | | n_audio, seed, and the whole spec (procedural) or window, start_s (videos) |
| fps, duration_s, seed | float64, float64, int64 | copies from meta (seed −1 for videos) |
| split, kind, material | str | copies from meta (kind "video" and material "" for videos) |

Each npz is written to a temporary name and renamed; a rerun skips clips whose npz exists,
is whole (right version, keys and audio length, read from the npz's directory and headers;
`verify` reads every byte) and is what the request makes (the
scene its seed and --rates draw; the window length, sound and split of a video's cut), and
remakes the others. A video window records the files it was made from by size and sha256
(meta `inputs`, `digests`; the digests cached in `.inputs.json` by path, size and time, so a
rerun reads a source file again only when it changed or was copied; the videos' probes in
`.probes.json` by digest) and the folder its video
was read from (meta `root`): a dataset folder may gather several folders of reels, and one
folder's R1.mov never replaces another's. `index.json` lists every valid clip of the folder
(rebuilt from the files after each build) and the skipped / failed windows; a window skipped
as silent keeps the cut it was judged in (source, window, split, sound, clip_s, the files'
digests, SILENCE_DBFS), and a rerun of that cut skips it again without reading its sound.
Work runs in `workers` spawned processes (OpenCV at one thread each) with a progress bar on
stderr; the mp4 and proxy of a clip are deleted unless keep_media (then in media/). Builders
return a summary: written / existing counts, skipped and failed entries with their reasons,
mean seconds per clip by stage (render, proxy, features, audio, write) and the wall time.

Reading: `iter_clips(folder, split)` yields `Clip`s (features keyed as tasks.features.KEYS,
audio16k, events, sustained, onsets, meta); `read_clip(path)` reads one. Recordings:
`load_sounds(sfx_dir, keys)` decodes the catalog's recordings of each "category/material"
key, mono at 16 kHz, trimmed and loudness-set by `tasks.library.prepare` (cached per
process); they are read from sfx_dir, never copied. `fetch_big_buck_bunny(dest)` takes the
Blender Foundation's film (CC BY 3.0) out of moviepy's sdist through pip: a real reel with
sound for `build_from_videos`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from models import scenes
from models.audio_env import detect_onsets
from models.paired_scenes import (AUDIO_SR, SPLITS, TEXTURE_KEYS, PairedSpec, PairedTruth,
                                  paired_truth, render_audio, render_frames, sample_spec,
                                  sound_keys, spec_dict, split_rates)
from tasks import media
from tasks.features import KEYS, compute_features
from tasks.store import HashCache, JsonCache, sha256_file

log = logging.getLogger(__name__)

DATASET_VERSION = 1
PROXY_WIDTH = 320          # = tasks.prepare.PROXY_WIDTH (a test holds them equal; importing
                           # tasks.prepare would pull Prefect into every worker)
FEATURE_PREFIX = "feat_"
INDEX = "index.json"
INDEX_FIELDS = {"name", "file", "split", "source", "kind", "material", "fps", "duration_s",
                "seed", "n_events", "stat"}   # a clip's entry in index.json
DIGESTS = ".inputs.json"   # the source files' content digests, by path, size and mtime
PROBES = ".probes.json"    # what media.probe read of each source video, by its content digest
PROBE_VERSION = 1          # raise when media.probe reads a file differently: every video is
                           # probed again
SILENCE_DBFS = -65.0
VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mxf", ".mts", ".mpg"}
DEFAULT_SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"
REQUIRED = ("audio16k", "events", "sustained", "onsets", "meta", "fps", "duration_s", "seed",
            "split", "kind", "material")


@dataclass
class Clip:
    """One training pair read back from the folder."""

    name: str
    path: Path
    split: str
    features: dict[str, np.ndarray]
    audio16k: np.ndarray
    events: list[dict]
    sustained: list[dict]
    onsets: list[dict]
    meta: dict[str, Any]


# ---------------------------------------------------------------- npz files


def write_clip(path: Path, features: dict[str, np.ndarray], audio16k: np.ndarray, *,
               events: list[dict], sustained: list[dict], onsets: list[dict], meta: dict) -> None:
    """Write one clip's npz (atomic: temporary name, then rename)."""
    arrays = {FEATURE_PREFIX + k: np.asarray(features[k], np.float32) for k in KEYS}
    arrays |= {
        "audio16k": np.asarray(audio16k, np.float32),
        "events": np.array(json.dumps(events)), "sustained": np.array(json.dumps(sustained)),
        "onsets": np.array(json.dumps(onsets)), "meta": np.array(json.dumps(meta)),
        "fps": np.float64(meta["fps"]), "duration_s": np.float64(meta["duration_s"]),
        "seed": np.int64(meta["seed"]), "split": np.array(meta["split"]),
        "kind": np.array(meta["kind"]), "material": np.array(meta["material"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_clip(path: Path) -> Clip:
    """A clip npz as a `Clip`; ValueError naming the file if it is not a complete clip."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = (*REQUIRED, *(FEATURE_PREFIX + k for k in KEYS))
            missing = [k for k in wanted if k not in data.files]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            meta = json.loads(str(data["meta"]))
            clip = Clip(name=path.stem, path=path, split=meta["split"],
                        features={k: data[FEATURE_PREFIX + k] for k in KEYS},
                        audio16k=data["audio16k"], events=json.loads(str(data["events"])),
                        sustained=json.loads(str(data["sustained"])),
                        onsets=json.loads(str(data["onsets"])), meta=meta)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable foleyflow dataset clip ({exc}); delete it and "
                         "rerun the build to remake it") from exc
    if meta.get("version") != DATASET_VERSION or len(clip.audio16k) != meta.get("n_audio"):
        raise ValueError(f"{path}: dataset version {meta.get('version')} / audio length "
                         f"{len(clip.audio16k)} ≠ {DATASET_VERSION} / {meta.get('n_audio')}: "
                         "delete it and rerun the build")
    bad = [k for k, a in (("audio16k", clip.audio16k), *clip.features.items())
           if np.issubdtype(np.asarray(a).dtype, np.floating) and not np.isfinite(a).all()]
    if bad:  # one such clip turns a training run's loss or a scorer's weights into NaN
        raise ValueError(f"{path}: {', '.join(bad)} hold NaN or infinity; delete it and rerun "
                         "the build to remake it")
    return clip


def _peek(path: Path) -> dict:
    """A clip's meta, checked without reading its arrays: every key present, this dataset
    version, the sound as long as its meta says (read from the array's header); ValueError
    naming the file, as `read_clip` gives, if not. A rerun keeps a clip on this check; the
    bytes themselves are read (their CRCs checked) when the clip is read whole."""
    try:
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
            wanted = (*REQUIRED, *(FEATURE_PREFIX + k for k in KEYS))
            missing = [k for k in wanted if f"{k}.npy" not in members]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            with z.open("meta.npy") as fh:
                meta = json.loads(str(np.lib.format.read_array(fh, allow_pickle=False)))
            with z.open("audio16k.npy") as fh:
                version = np.lib.format.read_magic(fh)
                shape = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(fh))[0]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable foleyflow dataset clip ({exc}); delete it and "
                         "rerun the build to remake it") from exc
    if not isinstance(meta, dict) or meta.get("version") != DATASET_VERSION \
            or shape != (meta.get("n_audio"),):
        got = meta.get("version") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: dataset version {got} / audio shape {shape} ≠ "
                         f"{DATASET_VERSION} / the meta's n_audio: delete it and rerun the build")
    return meta


def _existing(path: Path, defaults: dict[str, Any] | None = None, *, whole: bool = False,
              **expect: Any) -> dict | None:
    """The meta of the clip at `path` if it is complete and its meta matches `expect` (resume
    keeps it), else None; a key the clip's meta lacks (written before the key existed) reads as
    its `defaults` value. Complete: `_peek`'s check, or with `whole` the clip read whole (every
    byte against its CRC: `foley dataset … --verify`)."""
    if not path.exists():
        return None
    try:
        meta = read_clip(path).meta if whole else _peek(path)
    except ValueError as exc:
        log.warning("dataset: remaking %s", exc)
        return None
    defaults = defaults or {}
    return meta if all(meta.get(k, defaults.get(k)) == v for k, v in expect.items()) else None


def _read_meta(path: Path) -> dict | None:
    """A clip's meta alone, without its arrays (None: the npz cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def _video_of(name: str) -> str:
    """The video a window name (`clip_<slug>_KKKK`) or a whole video's row name belongs to."""
    head, _, k = name.rpartition("_")
    return head if len(k) == 4 and k.isdigit() else name


def _index_doc(out_dir: Path) -> dict:
    """out_dir's index.json as an earlier build left it ({} if it cannot be read)."""
    try:
        old = json.loads((Path(out_dir) / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def _old_index(out_dir: Path, doc: dict | None = None) -> dict[str, list[dict]]:
    """The skipped / failed rows of out_dir's index.json (`doc`, if read already) as an
    earlier build left them; an index that cannot be read, or rows without a name, read as
    none (it is rebuilt)."""
    old = _index_doc(out_dir) if doc is None else doc
    return {key: [r for r in old.get(key) or []
                  if isinstance(r, dict) and isinstance(r.get("name"), str)]
            for key in ("skipped", "failed")}


def _old_entries(doc: dict) -> dict[str, dict]:
    """The clip entries of an index (`_index_doc`) by file name, each as complete as
    write_index makes it (with the size, mtime and inode of the file it was read from,
    `stat`); an index of another DATASET_VERSION lists none."""
    if doc.get("version") != DATASET_VERSION:
        return {}
    return {e["file"]: e for e in doc.get("clips") or []
            if isinstance(e, dict) and e.keys() == INDEX_FIELDS and isinstance(e["file"], str)
            and e["name"] == Path(e["file"]).stem and isinstance(e["stat"], list)}


def write_index(out_dir: Path, *, skipped: Iterable[dict] = (), failed: Iterable[dict] = (),
                forget: Callable[[dict], bool] = lambda row: False) -> Path:
    """Rebuild index.json from the folder's clips; skipped / failed rows of earlier builds are
    kept unless their clip now exists, this build has a row of that name, or `forget(row)` (a
    window the video no longer has). A clip whose file has the size, mtime and inode its
    entry was read from keeps the entry without being opened (clips are only ever replaced
    whole, so a changed clip is a new inode)."""
    out_dir = Path(out_dir)
    doc = _index_doc(out_dir)
    listed = _old_entries(doc)
    clips = []
    for path in sorted(out_dir.glob("clip_*.npz")):
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = listed.get(path.name)
        if entry is None or entry.get("stat") != stamp:
            try:
                with np.load(path, allow_pickle=False) as data:
                    meta = json.loads(str(data["meta"]))
                    n_events = len(json.loads(str(data["events"])))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
                continue
            entry = {"name": path.stem, "file": path.name, "split": meta["split"],
                     "source": meta["source"], "kind": meta["kind"], "material": meta["material"],
                     "fps": meta["fps"], "duration_s": meta["duration_s"], "seed": meta["seed"],
                     "n_events": n_events, "stat": stamp}
        clips.append(entry)
    names = {c["name"] for c in clips}
    old = _old_index(out_dir, doc)
    new = {"skipped": list(skipped), "failed": list(failed)}
    now = {r["name"] for rows in new.values() for r in rows}

    def merge(key: str) -> list[dict]:
        """Earlier rows, unless this run has a row of that name (in either list)."""
        rows = {r["name"]: r for r in old[key] if r["name"] not in now}
        rows |= {r["name"]: r for r in new[key]}
        return [r for n, r in sorted(rows.items()) if n not in names and not forget(r)]

    index = {"version": DATASET_VERSION, "audio_sr": AUDIO_SR, "feature_prefix": FEATURE_PREFIX,
             "clips": clips, "skipped": merge("skipped"), "failed": merge("failed")}
    tmp = out_dir / f".{INDEX}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out_dir / INDEX)
    return out_dir / INDEX


def clip_entries(data: Path, split: str | None = None) -> list[dict]:
    """The index entries (name, file, split, seed, …) of data/index.json, of `split` if given;
    nothing else is read."""
    data = Path(data)
    if not (data / INDEX).exists():
        raise ValueError(f"{data} is not a dataset folder (no {INDEX}): build one with "
                         "`foley dataset procedural` or `foley dataset videos`")
    return [e for e in json.loads((data / INDEX).read_text())["clips"]
            if split is None or e["split"] == split]


def iter_clips(data: Path, split: str | None = None) -> Iterator[Clip]:
    """The clips listed in data/index.json (of `split`, if given), read one at a time."""
    for entry in clip_entries(data, split):
        yield read_clip(Path(data) / entry["file"])


# ---------------------------------------------------------------- workers


def _init_worker() -> None:
    import cv2
    import signal

    cv2.setNumThreads(1)          # one process per core: OpenCV's own threads only contend
    # SIGTERM to the process group (a scheduler stopping the job) unwinds a worker, releasing
    # the pool's task-queue lock: killed outright while it waits for a task, it would hold it
    # and the parent's Pool.terminate() would wait for it forever
    signal.signal(signal.SIGTERM, _exit_on)


def _exit_on(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(fn: Callable[[dict], dict], jobs: list[dict], workers: int, label: str,
         results: list[dict] | None = None) -> list[dict]:
    """Run jobs (in `workers` spawned processes if > 1) with a progress bar on stderr (none when
    there is nothing to do); each job's row is appended to `results` as it finishes (what a
    build stopped part-way has done), which is returned."""
    results = [] if results is None else results
    if not jobs:
        return results
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(fn(job))
                bar.advance(task)
        else:
            # at the end the workers are told to stop and are waited for (close, join). The
            # pool's own exit (terminate) SIGTERMs workers already leaving on their own (each
            # printed "Exception ignored … SystemExit: 143"), and a worker left waiting for the
            # queue's lock, which terminate takes, kept Pool.terminate() waiting forever (seen
            # twice under load). A build stopped part-way still terminates them.
            pool = mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker)
            try:
                for res in pool.imap_unordered(fn, jobs):
                    results.append(res)
                    bar.advance(task)
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    return results


def _prepare_folder(out_dir: Path) -> Path:
    """Create the folder; remove what an interrupted build left (work folders, partial npz)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    for part in out_dir.glob(".*.tmp"):          # a clip, the index or a cache, half written
        part.unlink(missing_ok=True)
    return out_dir


def _names_gone(out_dir: Path) -> bool:
    """Whether out_dir's index.json names a clip file that is not there (one stat per clip);
    an index that cannot be read counts as naming one."""
    try:
        clips = json.loads((Path(out_dir) / INDEX).read_text()).get("clips")
        return not isinstance(clips, list) or any(
            not isinstance(c, dict) or not (Path(out_dir) / str(c.get("file", ""))).is_file()
            for c in clips)
    except (OSError, ValueError, AttributeError):
        return True


def _write_rows(out_dir: Path, results: list[dict],
                forget: Callable[[dict], bool] = lambda row: False) -> Path:
    """index.json rebuilt, with the skipped and failed rows of `results` (name, source, folder,
    reason, the cut a silent window was judged in)."""
    def rows(status: str) -> list[dict]:
        return [{k: r[k] for k in ("name", "source", "root", "reason", "cut") if k in r}
                for r in results if r["status"] == status]

    return write_index(out_dir, skipped=rows("skipped"), failed=rows("failed"), forget=forget)


def _summary(out_dir: Path, results: list[dict], existing: int, t0: float, *,
             forget: Callable[[dict], bool] = lambda row: False,
             removed: int = 0, pruned: int = 0) -> dict[str, Any]:
    written = [r for r in results if r["status"] == "written"]
    relabelled = [r for r in results          # onsets read again (some while renamed)
                  if r["status"] == "relabelled" or r.get("relabelled")]
    existing += sum(r["status"] == "moved" for r in results)    # kept; only its folder changed
    renamed = sum(r["status"] == "renamed" for r in results)    # kept under a new name
    skipped = [r for r in results if r["status"] == "skipped"]
    failed = [r for r in results if r["status"] == "failed"]
    for r in skipped:            # windows found silent in an earlier run of the cut: one line
        if not r.get("earlier"):
            log.warning("dataset: skipped %s: %s", r["name"], r["reason"])
    if earlier := sum(bool(r.get("earlier")) for r in skipped):
        log.info("dataset: %d windows skipped as silent in an earlier run of the same cut "
                 "(index.json)", earlier)
    for r in failed:
        log.error("dataset: failed %s: %s", r["name"], r["reason"])
    try:
        (out_dir / ".work").rmdir()           # only when empty: per-clip folders go as they finish
    except OSError:
        pass
    stages = sorted({k for r in written for k in r["timings"]})
    timings = {k: round(float(np.mean([r["timings"].get(k, 0.0) for r in written])), 3) for k in stages}
    index = _write_rows(out_dir, results, forget)
    return {"out_dir": str(out_dir), "index": str(index), "written": len(written),
            "relabelled": len(relabelled), "existing": existing, "renamed": renamed,
            "removed": removed, "pruned": pruned,
            "skipped": skipped, "failed": failed, "seconds_per_clip": timings,
            "wall_s": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------- procedural clips


@lru_cache(maxsize=8)
def _catalog(sfx_dir: str) -> tuple[tuple[str, str], ...]:
    with open(Path(sfx_dir) / "catalog.csv", newline="") as fh:
        return tuple((f"{r['category']}/{r['material']}", r["path"])
                     for r in csv.DictReader(fh) if r.get("path"))


def catalog_keys(sfx_dir: Path) -> set[str]:
    """The "category/material" sound keys a recordings folder (with catalog.csv) offers."""
    return {key for key, _ in _catalog(str(sfx_dir))}


_SOUNDS: dict[tuple[str, str, int], list[np.ndarray]] = {}


def load_sounds(sfx_dir: Path, keys: Iterable[str], sr: int = AUDIO_SR) -> dict[str, list[np.ndarray]]:
    """Every recording of each key, mono at `sr`, trimmed and loudness-set as the library does
    (`tasks.library.prepare`); read from sfx_dir, cached per process."""
    import soxr

    from tasks.library import UnreadableAudio, prepare

    out = {}
    for key in sorted(keys):
        cache = (str(sfx_dir), key, sr)
        if cache not in _SOUNDS:
            loaded = []
            for k, rel in _catalog(str(sfx_dir)):
                if k != key:
                    continue
                try:
                    audio, file_sr = sf.read(Path(sfx_dir) / rel, dtype="float64", always_2d=True)
                    mono = audio.mean(axis=1)
                    mono = soxr.resample(mono, file_sr, sr, quality="HQ") if file_sr != sr else mono
                    loaded.append(prepare(mono, sr, "texture" if key in TEXTURE_KEYS else "oneshot")[0])
                except (UnreadableAudio, RuntimeError, OSError) as exc:
                    log.warning("dataset: skipping recording %s: %s", rel, exc)
            _SOUNDS[cache] = loaded
        out[key] = _SOUNDS[cache]
    return out


def _encode(frames: Iterable[np.ndarray], size: tuple[int, int], fps: float, out_path: Path) -> None:
    """Pipe RGB frames into an H.264 mp4, exactly as models.scenes.render_scene does."""
    try:
        scenes.encode_frames(frames, size, fps, out_path)
    except RuntimeError as exc:
        raise media.MediaError(str(exc)) from None


def clip_name(number: int, split: str) -> str:
    return f"clip_{number:05d}" if split == "train" else f"clip_{split}_{number:05d}"


def _features_of(src: Path, start_s: float, duration_s: float, fps: float, work: Path,
                 timings: dict[str, float]) -> tuple[dict[str, np.ndarray], Path]:
    t = time.perf_counter()
    proxy = work / "proxy.mp4"
    media.make_proxy(src, start_s, duration_s, fps, proxy, width=PROXY_WIDTH)
    timings["proxy"] = time.perf_counter() - t
    t = time.perf_counter()
    feats = compute_features(proxy, fps)
    timings["features"] = time.perf_counter() - t
    return feats, proxy


def _keep(out_dir: Path, name: str, files: dict[str, Path]) -> None:
    (out_dir / "media").mkdir(exist_ok=True)
    for suffix, path in files.items():
        os.replace(path, out_dir / "media" / f"{name}{suffix}")


def _paired_job(job: dict) -> dict:
    out_dir, number, split = Path(job["out_dir"]), job["number"], job["split"]
    name = clip_name(number, split)
    work = out_dir / ".work" / name
    timings: dict[str, float] = {}
    try:
        work.mkdir(parents=True, exist_ok=True)
        spec = _scene_spec(number, split, job["sfx_dir"], job["durations"], job["rates"])
        truth = paired_truth(spec)
        t = time.perf_counter()
        _encode(render_frames(spec), spec.size, truth.fps, work / "scene.mp4")
        timings["render"] = time.perf_counter() - t
        feats, proxy = _features_of(work / "scene.mp4", 0.0, truth.duration_s, truth.fps, work, timings)
        t = time.perf_counter()
        audio = render_audio(truth, load_sounds(Path(job["sfx_dir"]), sound_keys(truth)), AUDIO_SR)
        timings["audio"] = time.perf_counter() - t
        t = time.perf_counter()
        write_clip(out_dir / f"{name}.npz", feats, audio, events=truth.events,
                   sustained=truth.sustained, onsets=truth.onsets,
                   meta=_paired_meta(name, number, truth, len(audio)))
        timings["write"] = time.perf_counter() - t
        if job["keep_media"]:
            _keep(out_dir, name, {".mp4": work / "scene.mp4", "_proxy.mp4": proxy})
        return {"name": name, "status": "written", "source": "procedural", "timings": timings}
    except Exception as exc:  # noqa: BLE001 - one clip's failure is reported, the build goes on
        return {"name": name, "status": "failed", "source": "procedural",
                "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scene_spec(number: int, split: str, sfx_dir: str | Path, durations: Sequence[float],
                rates: Sequence[float] | None) -> PairedSpec:
    """Clip `number`'s scene: drawn from its own seed, so the same request draws the same."""
    return sample_spec(np.random.default_rng([number, SPLITS.index(split)]), split,
                       available=catalog_keys(Path(sfx_dir)), durations=tuple(durations),
                       rates=rates)


def _paired_meta(name: str, number: int, truth: PairedTruth, n_audio: int) -> dict:
    spec = truth.spec
    firsts = [e["material"] for e in truth.events] + [s["material"] for s in truth.sustained]
    return {"version": DATASET_VERSION, "source": "procedural", "name": name, "clip": number,
            "split": spec.split, "kind": spec.kind, "material": firsts[0] if firsts else "",
            "materials": truth.materials, "fps": truth.fps, "n_frames": truth.n_frames,
            "duration_s": truth.duration_s, "n_audio": n_audio, "audio_sr": AUDIO_SR,
            "seed": spec.seed, "render_size": list(spec.size), "spec": spec_dict(spec)}


def build_procedural(out_dir: Path, n_clips: int, split: str = "train", seed: int = 0,
                     workers: int = 2, *, sfx_dir: Path = DEFAULT_SFX, keep_media: bool = False,
                     durations: tuple[float, float] = (3.0, 5.0),
                     rates: Sequence[float] | None = None, verify: bool = False) -> dict[str, Any]:
    """Render clips seed … seed + n_clips − 1 of `split` into out_dir (resumable: a clip is
    kept when it is the scene this request draws, else remade); returns a summary with
    per-stage seconds per clip. `rates` draws frame rates from those of the split's it lists
    only (e.g. a calibration set for high-frame-rate material). `verify`: kept clips are read
    whole (`_existing`), not only checked by `_peek`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rates = list(split_rates(split, rates)) if rates else None
    if not (Path(sfx_dir) / "catalog.csv").is_file():
        raise ValueError(f"{sfx_dir} has no catalog.csv: point sfx_dir at the sfx recordings")
    t0 = time.perf_counter()
    out_dir = _prepare_folder(out_dir)
    jobs, existing, results = [], 0, []
    try:          # stopped anywhere (^C): the index lists what is on disk, and the rows so far
        for number in range(seed, seed + n_clips):
            path = out_dir / f"{clip_name(number, split)}.npz"
            spec = _scene_spec(number, split, sfx_dir, durations, rates)   # a few ms
            if _existing(path, whole=verify, clip=number, split=split,
                         spec=json.loads(json.dumps(spec_dict(spec)))):
                existing += 1
                continue
            path.unlink(missing_ok=True)   # drawn with other --rates or durations: remade, or gone
            jobs.append({"out_dir": str(out_dir), "number": number, "split": split,
                         "sfx_dir": str(sfx_dir), "durations": list(durations),
                         "keep_media": keep_media, "rates": rates})
        if _names_gone(out_dir):       # the index names no clip removed while they run
            write_index(out_dir)
        _run(_paired_job, jobs, workers, f"{split} clips", results)
        return _summary(out_dir, results, existing, t0)
    except BaseException:
        _write_rows(out_dir, results)
        raise


# ---------------------------------------------------------------- clips from videos

STEM_EXTENSIONS = {".wav", ".bwf"}
STEM_SEPARATORS = "._- "
STEM_MARGIN_S = 0.1     # a stem window is resampled with this much either side (clean edges)
DEFAULT_SOUND = "stream:0"


@dataclass(frozen=True)
class OnsetTruth:
    """How a window's training truth is read from its sound: `models.audio_env.detect_onsets`
    with an attack at least `rise_db` above the 21 ms before it, louder than `floor_dbfs`, and
    of attacks closer than `min_gap_s` the strongest. A window's onsets are where its sound
    starts, and they teach the envelope model's onset head and fit its contact scorer, so they
    should be the picture's hits, not every rise in the sound.

    The defaults are stricter than `detect_onsets`' own (6 dB, 50 ms), which finds every
    attack a listener would (the synthesis checks and onset-sync figures rely on that). Scored
    against the physical onsets of procedural scenes (`scripts/onset_truth_study.py`), 6 dB /
    50 ms also reports heel-then-toe, a bounce's rattle and the grain of a rub: models/README.md,
    "Real footage"."""

    rise_db: float = 14.0
    min_gap_s: float = 0.15
    floor_dbfs: float = -40.0

    def __post_init__(self) -> None:
        if not self.rise_db > 0:
            raise ValueError(f"onset rise {self.rise_db} dB: give a rise above 0 dB (default 14)")
        if not self.min_gap_s >= 0:
            raise ValueError(f"onset gap {self.min_gap_s} s: give 0 or more (default 0.15 s)")
        if not self.floor_dbfs < 0:
            raise ValueError(f"onset floor {self.floor_dbfs} dBFS: give a level below 0 dBFS "
                             "(default -40)")

    def detect(self, audio: np.ndarray, sr: int = AUDIO_SR) -> list[dict]:
        """The clip's `onsets` entries for this sound."""
        return [{"t": float(t)} for t in detect_onsets(
            audio, sr, min_gap_s=self.min_gap_s, threshold_db=self.floor_dbfs,
            rise_db=self.rise_db)]

    def meta(self) -> dict[str, float]:
        return {"rise_db": self.rise_db, "min_gap_s": self.min_gap_s, "floor_dbfs": self.floor_dbfs}


DETECTOR_TRUTH = OnsetTruth(rise_db=6.0, min_gap_s=0.05)   # detect_onsets' own settings: the
                                                           # truth of windows built before
                                                           # meta onset_truth (session 16)


@dataclass(frozen=True)
class Stem:
    """A sidecar recording of a video's sound (a Foley stem next to its reel), placed on the
    video's time: its first sample plays at offset_s from the video's first frame."""

    path: str
    rel: str
    sr: int
    channels: int
    frames: int
    offset_s: float
    aligned_by: str           # "timecode" (BWF TimeReference against the picture's) or "start"


def sound_source(audio_stream: int = 0, stems: str | None = None) -> str:
    """The clip meta's `sound_source`: "stream:N" (the video's audio stream N) or "stems:TAG"."""
    return f"stems:{stems.lower()}" if stems else f"stream:{audio_stream}"


def match_stems(videos: Sequence[Path], tag: str) -> dict[Path, list[Path]]:
    """Each video's sidecar stems: the WAV / BWF files in its folder named after it, then a
    separator (. _ - or space), then anything holding `tag` (case-insensitive): for `R1.mov`
    and tag foley, `R1_FOLEY.wav`, `R1.foley.fs.wav` and `R1 - Foley Props.wav`, not
    `R1_MX.wav` nor `R10_FOLEY.wav`. A file named after two videos (`R1.mov`, `R1_alt.mov`)
    goes to the longer name."""
    tag = tag.lower()
    found: dict[Path, list[Path]] = {v: [] for v in videos}
    by_folder: dict[Path, list[Path]] = {}
    for v in videos:
        by_folder.setdefault(v.parent, []).append(v)
    for folder, vids in by_folder.items():
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in STEM_EXTENSIONS or f.name.startswith(".") or not f.is_file():
                continue
            name = f.stem.lower()
            owners = [v for v in vids if name.startswith(v.stem.lower())
                      and len(name) > len(v.stem) and name[len(v.stem)] in STEM_SEPARATORS]
            if not owners:
                continue
            longest = max(len(v.stem) for v in owners)
            for v in owners:
                if len(v.stem) == longest and tag in name[longest + 1:]:
                    found[v].append(f)
    return found


def _seconds_since_midnight(timecode: str, fps: float) -> float:
    from tasks.bwf import time_reference_from_timecode

    return time_reference_from_timecode(timecode, fps, sr=48000) / 48000.0


def _timecode(seconds: float, fps: float, drop_frame: bool) -> str:
    """`tasks.ingest.timecode` of a time since midnight at the picture's rate."""
    from tasks.ingest import rational_rate, timecode

    num, den = rational_rate(fps)
    return timecode(round(seconds % 86400 * num / den), num, den, drop_frame)


def align_stems(info: media.MediaInfo, paths: Sequence[Path], root: Path) -> list[Stem]:
    """Place each stem on the video's time. When the picture has a start timecode and the stem a
    BWF TimeReference (what Pro Tools stamps on an exported stem; 0 reads as none), the stem
    starts at their difference; otherwise it is taken to start with the picture. ValueError
    naming the stem when it holds no sound over the picture's span or cannot be read."""
    from tasks.bwf import read_bwf_info

    picture_s = _seconds_since_midnight(info.timecode, info.fps) if info.timecode else None
    stems = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            sfi = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise ValueError(f"stem {rel}: not a readable WAV ({exc})") from exc
        try:
            ref = read_bwf_info(path)["time_reference"]
        except (ValueError, OSError, struct.error):
            ref = None                      # RF64 / W64 or no bext: aligned at the start
        if picture_s is not None and ref:   # 0 is what tools write when nothing was stamped
            offset = ref / sfi.samplerate - picture_s
            if offset > 43200:              # the picture starts just before midnight
                offset -= 86400
            elif offset < -43200:
                offset += 86400
            how = "timecode"
        else:
            offset, how = 0.0, "start"
        length = sfi.frames / sfi.samplerate
        if offset >= info.duration_s or offset + length <= 0:
            drop = ";" in (info.timecode or "")
            start = picture_s or 0.0

            def tc(s: float) -> str:
                return _timecode(s, info.fps, drop)

            span = (f"stamped {tc(start + offset)}–{tc(start + offset + length)}"
                    if how == "timecode" else f"{length:.3f} s long")
            raise ValueError(f"stem {rel} ({span}) holds no sound over the picture "
                             f"({tc(start)}–{tc(start + info.duration_s)} at {info.fps:g} fps): "
                             "check that the stem belongs to this reel and that its BWF time "
                             "stamp is the reel's")
        stems.append(Stem(str(path), rel, int(sfi.samplerate), int(sfi.channels), int(sfi.frames),
                          float(offset), how))
    return stems


def stem_window(stems: Sequence[Stem], start_s: float, duration_s: float,
                sr: int = AUDIO_SR) -> np.ndarray:
    """The stems' sound over [start_s, start_s + duration_s) of the video's time, each folded to
    mono, resampled to `sr` and summed (silence where a stem has no sample); read by seeking,
    never whole."""
    import soxr

    n = int(round(duration_s * sr))
    out = np.zeros(n)
    for st in stems:
        t0 = start_s - st.offset_s - STEM_MARGIN_S           # on the stem's own time
        s0, count = int(round(t0 * st.sr)), int(round((duration_s + 2 * STEM_MARGIN_S) * st.sr))
        lo, hi = max(s0, 0), min(s0 + count, st.frames)
        if hi <= lo:
            continue
        buf = np.zeros(count)
        with sf.SoundFile(st.path) as fh:
            fh.seek(lo)
            data = fh.read(hi - lo, dtype="float64", always_2d=True)
        buf[lo - s0:lo - s0 + len(data)] = data.mean(axis=1)
        if st.sr != sr:
            buf = soxr.resample(buf, st.sr, sr, quality="HQ")
        first = int(round((t0 + STEM_MARGIN_S - s0 / st.sr) * sr))   # start_s, resampled
        part = buf[first:first + n]
        out[:len(part)] += part
    return out.astype(np.float32)


def _slug(rel: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", str(Path(rel).with_suffix(""))).strip("-")[:40]
    return f"{stem}-{hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:6]}"


def _window_sound(job: dict, work: Path) -> np.ndarray | None:
    """The window's training sound, mono at AUDIO_SR (None: the video has no such stream)."""
    if job["stems"]:
        return stem_window([Stem(**st) for st in job["stems"]], job["start_s"], job["duration_s"])
    if not media.extract_audio(job["src"], job["start_s"], job["duration_s"], work / "audio.wav",
                               sr=AUDIO_SR, stream=job["audio_stream"]):
        return None
    return sf.read(work / "audio.wav", dtype="float32", always_2d=True)[0].mean(axis=1)


def _sound_meta(stems: Sequence[dict], audio_stream: int) -> dict:
    """A window's meta `sound`: the stems its sound was read from (their paths inside the
    folder, offsets and how each was placed), or the audio stream."""
    return ({"stems": [{"file": st["rel"], "offset_s": st["offset_s"],
                        "aligned_by": st["aligned_by"]} for st in stems]}
            if stems else {"stream": audio_stream})


CUT_KEYS = ("window", "split", "sound_source", "clip_s")


def _same_cut(a: dict, b: dict, keys: Sequence[str] = CUT_KEYS) -> bool:
    """Two cuts (a window's meta, or a silent row's `cut`) are the same window of the same
    files, whatever paths the files were read by: `keys` agree and so do the files' contents
    (their digests, compared by value)."""
    da, db = a.get("digests"), b.get("digests")
    return (isinstance(da, dict) and isinstance(db, dict)
            and sorted(map(str, da.values())) == sorted(map(str, db.values()))
            and all(a.get(k) == b.get(k) for k in keys))


WINDOW_MEDIA = ("_proxy.mp4",)    # what --keep-media keeps of a video window, by its name


def _remove_window(path: Path, heir: Path | None = None) -> None:
    """A window's npz and the media kept with it (`--keep-media`) go; media that `heir` (the
    same window under its new name) lacks go to it instead (a run stopped while renaming)."""
    for suffix in WINDOW_MEDIA:        # the media first: stopped between, the npz tells
        media_of = path.parent / "media" / f"{path.stem}{suffix}"
        if heir is not None and heir != path and media_of.exists() and heir.exists():
            to = heir.parent / "media" / f"{heir.stem}{suffix}"
            if not to.exists():
                try:
                    os.replace(media_of, to)
                    continue
                except OSError:
                    pass
        media_of.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _adopt(old: Path, new: Path, cut: dict, root: str, truth: OnsetTruth,
           inputs: dict[str, int], sound: dict) -> dict | None:
    """Keep the window `old`, cut from the same files under another path (from a folder inside
    or around this one, or before they moved here), as `new`: its meta rewritten to the name,
    paths and folder it is read by now, its onsets read again if `truth` differs, its kept
    media renamed with it; picture features and sound stay as they are; meta `adopted_from`
    names the old window (a run stopped while renaming a reel's windows is told from a copy
    of the reel by it). None when it is not this cut (another window length, split or sound)
    or cannot be read: it is made again. A window that cannot be written stays where it was
    (status "failed", `keep`: the old file), to be renamed by the next run."""
    try:
        clip = read_clip(old)
    except ValueError:
        return None
    meta = clip.meta | {"sound_source": clip.meta.get("sound_source", DEFAULT_SOUND)}
    if meta.get("kind") != "video" or not _same_cut(meta, cut):
        return None
    row = {"name": new.stem, "source": cut["source"], "root": root}
    try:
        # the new npz, then its media, then the old npz goes: stopped anywhere, a rerun of
        # either folder keeps one of the two and the media go with it (`_remove_window`)
        again = _rewrite(clip, new, truth, {
            "sound_source": meta["sound_source"], "name": new.stem, "source": cut["source"],
            "root": root, "digests": cut["digests"], "inputs": inputs, "sound": sound,
            "adopted_from": old.stem})
    except OSError as exc:           # the old window and its media stay as they were
        return row | {"status": "failed", "keep": str(old),
                      "reason": f"{type(exc).__name__}: {exc} (kept as {old.name}; the next "
                                "run renames it)"}
    _remove_window(old, heir=new)
    return row | {"status": "renamed", "from": old.stem, "relabelled": again}


def _video_job(job: dict) -> dict:
    out_dir, name, src = Path(job["out_dir"]), job["name"], Path(job["src"])
    start, span, fps = job["start_s"], job["duration_s"], job["fps"]
    work = out_dir / ".work" / name
    timings: dict[str, float] = {}
    row = {"name": name, "source": job["rel"], "root": job["root"]}
    try:
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        audio = _window_sound(job, work)
        if audio is None:
            return row | {"status": "skipped", "reason": f"no audio stream {job['audio_stream']}"}
        level = 10 * np.log10(float(np.mean(audio.astype(np.float64) ** 2)) + 1e-20)
        timings["audio"] = time.perf_counter() - t
        if level < SILENCE_DBFS:          # with its cut: a rerun of the same cut trusts it
            return row | {"status": "skipped", "cut": job["cut"],
                          "reason": f"silent ({level:.1f} dBFS RMS < {SILENCE_DBFS})"}
        feats, proxy = _features_of(src, start, span, fps, work, timings)
        n_frames = int(feats["n_frames"])
        sound = _sound_meta(job["stems"], job["audio_stream"])
        meta = {"version": DATASET_VERSION, "source": job["rel"], "name": name, "split": job["split"],
                "kind": "video", "material": "", "materials": [], "fps": fps, "n_frames": n_frames,
                "duration_s": span, "n_audio": len(audio), "audio_sr": AUDIO_SR, "seed": -1,
                "window": job["window"], "start_s": start, "clip_s": job["clip_s"],
                "sound_source": job["sound_source"], "sound": sound,
                "onset_truth": job["onset_truth"], "inputs": job["inputs"],
                "digests": job["digests"], "root": job["root"]}
        onsets = OnsetTruth(**job["onset_truth"]).detect(audio)
        t = time.perf_counter()
        write_clip(out_dir / f"{name}.npz", feats, audio, events=[], sustained=[], onsets=onsets,
                   meta=meta)
        timings["write"] = time.perf_counter() - t
        if job["keep_media"]:
            _keep(out_dir, name, {WINDOW_MEDIA[0]: proxy})
        return row | {"status": "written", "timings": timings}
    except Exception as exc:  # noqa: BLE001 - one bad window never stops the build
        return row | {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return _int(v) or isinstance(v, float)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _maybe(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


PROBE_FIELDS: dict[str, Callable[[Any], bool]] = {   # a cached probe's fields and their types
    "duration_s": _num, "fps": _num, "width": _int, "height": _int, "n_frames": _maybe(_int),
    "has_video": _bool, "has_audio": _bool, "timecode": _maybe(lambda v: isinstance(v, str)),
    "is_vfr": _bool, "start_s": _num, "video_codec": _maybe(lambda v: isinstance(v, str)),
    "audio_rate": _maybe(_int), "audio_channels": _maybe(_int),
    "audio_streams": lambda v: isinstance(v, list) and all(map(_maybe(_int), v)),
}


@lru_cache(maxsize=1)
def _prober() -> str:
    """What makes a probe: PROBE_VERSION and ffmpeg's version and binary."""
    import imageio_ffmpeg

    try:
        version = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - an ffmpeg that cannot say fails each probe on its own
        version = "unknown"
    return f"{PROBE_VERSION}:{version}:{Path(media.ffmpeg_exe()).name}"


class ProbeCache(JsonCache):
    """`media.probe` of the source videos by content digest, kept in the dataset folder
    (PROBES, atomic writes). A probe reads every packet of the picture (its exact frame count,
    and damage found before any window is cut): a rerun over files probed before, by any
    path, reads none of them again. An entry is used only if made by this PROBE_VERSION and
    ffmpeg (`_prober`) and holding exactly MediaInfo's fields with values of their types
    (PROBE_FIELDS); any other is probed again. A file that fails to probe is not kept (it is
    probed again, and fails alone, each run)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.saved = time.monotonic()

    def _accept(self, loaded: dict) -> dict[str, dict]:
        return {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def probe(self, path: Path, sha256: str) -> media.MediaInfo:
        """The file's MediaInfo (its `path` the one given); MediaError as media.probe."""
        hit = self.known.get(sha256) or {}
        fields = {k: v for k, v in hit.items() if k != "made_by"}
        if (hit.get("made_by") == _prober() and fields.keys() == PROBE_FIELDS.keys()
                and all(ok(fields[k]) for k, ok in PROBE_FIELDS.items())):
            return media.MediaInfo(**fields | {"path": str(path),
                                               "audio_streams": tuple(fields["audio_streams"])})
        info = media.probe(path)
        self.known[sha256] = {k: v for k, v in asdict(info).items() if k != "path"} | {
            "made_by": _prober()}
        self.changed = True
        if time.monotonic() - self.saved > 10:     # a long first pass keeps what it probed
            try:
                self.save()
            except OSError as exc:                 # the folder's disk: told at the end
                log.warning("dataset: cannot save %s yet: %s", self.path, exc)
        return info

    def save(self) -> None:
        self.saved = time.monotonic()
        super().save()


def _hash_sources(cache: HashCache, files: Iterable[Path]) -> None:
    """Read the files whose digest `cache` does not know yet, with a progress bar in bytes,
    saving every 10 s (what is read survives an interruption) and at the end. A file that
    cannot be read is left out: its video fails alone when its digest is asked for."""
    todo = []
    for path in dict.fromkeys(files):
        try:
            if cache.cached(path) is None:
                todo.append((path, path.stat().st_size))
        except OSError:
            continue
    if not todo:
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("source digests", total=sum(size for _, size in todo))
        saved = time.monotonic()
        for path, size in todo:
            try:
                cache.sha256(path, progress=lambda n: bar.advance(task, n))
            except OSError as exc:
                log.warning("dataset: cannot read %s: %s", path, exc)
                bar.advance(task, size)
            if time.monotonic() - saved > 10:
                cache.save()
                saved = time.monotonic()
    cache.save()


def _silent_earlier(old: dict[str, list[dict]]) -> dict[str, dict]:
    """The windows an earlier build skipped as silent, by name, with the cut they were judged
    in (the skipped rows of `_old_index` that carry one): a rerun of the same cut skips them
    again without reading their sound."""
    return {r["name"]: r for r in old["skipped"] if isinstance(r.get("cut"), dict)}


def _rewrite(clip: Clip, dest: Path, truth: OnsetTruth, changes: dict) -> bool:
    """Write `clip` to `dest` with its meta `changes`, its picture features and sound as they
    are, its onsets read again from its sound if `truth` is not the one that read them
    (returned: whether they were)."""
    again = clip.meta.get("onset_truth", DETECTOR_TRUTH.meta()) != truth.meta()
    write_clip(dest, clip.features, clip.audio16k, events=clip.events, sustained=clip.sustained,
               onsets=truth.detect(clip.audio16k) if again else clip.onsets,
               meta=clip.meta | changes | {"onset_truth": truth.meta()})
    return again


def _relabel(clip: Clip, truth: OnsetTruth, rel: str, root: str,
             digests: dict[str, str]) -> dict:
    """Rewrite a kept window (as `read_clip` read it) with its onsets read again from its stored
    sound by `truth` if it was read by another, and the folder its video is now read from and
    its files' digests (the same files, moved, or a window from before those keys); its
    picture features and sound stay as they are."""
    row = {"name": clip.name, "source": rel, "root": root}
    try:
        again = _rewrite(clip, clip.path, truth, {"root": root, "digests": digests})
    except OSError as exc:
        return row | {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    return row | {"status": "relabelled" if again else "moved"}


def _relabel_job(job: dict) -> dict:
    """`_relabel` in a worker: the kept window read whole and rewritten; one whose arrays
    cannot be read is cut again (`job["remake"]`, its `_video_job`)."""
    path = Path(job["path"])
    try:
        clip = read_clip(path)
    except ValueError:
        _remove_window(path)
        return _video_job(job["remake"])
    return _relabel(clip, OnsetTruth(**job["onset_truth"]), job["rel"], job["root"],
                    job["digests"])


def _cut_from_elsewhere(out_dir: Path, name: str, windows: Sequence[Path], root: str,
                        inputs: dict[str, int], digests: dict[str, str]) -> str:
    """Why the video `name` must not be cut into out_dir now ("" if it may): the folder holds
    windows of that name from other files (meta `digests`, or `inputs` sizes before those)
    read from another folder, or from a folder not recorded (windows from before meta `root`)
    — two shows' R1.mov built into one dataset folder. The same files read from a folder moved
    elsewhere are the same video. `windows`: the files of the video's windows in out_dir."""
    for path in sorted(windows):
        meta = _read_meta(path)
        if meta is None:
            continue
        theirs = meta.get("root")
        same = (meta["digests"] == digests if "digests" in meta
                else meta.get("inputs", inputs) == inputs)
        if theirs == root or same:
            return ""
        delete = f"delete those windows ({out_dir / name}_*.npz) and run again"
        if theirs is None:
            return (f"{out_dir} holds windows of {meta.get('source')} ({path.name}, …) made "
                    "from other files, before windows recorded the folder they were cut from. "
                    f"If this reel or its stems were exported again, {delete}; if they are "
                    "another folder's reel of the same name, build this folder into a dataset "
                    "folder of its own")
        return (f"{out_dir} holds windows of {meta.get('source')} cut from {theirs} "
                f"({path.name}, …), and this is another file of that path. Build each folder "
                "into a dataset folder of its own, or cut the folder that holds both: their "
                f"paths differ there, and the windows cut from {theirs} are kept under "
                f"their new names. If it is the same reel moved and exported again, {delete}")
    return ""


def build_from_videos(video_dir: Path, out_dir: Path, clip_s: float = 5.0, workers: int = 2, *,
                      split: str = "train", keep_media: bool = False, audio_stream: int = 0,
                      stems: str | None = None, onset_truth: OnsetTruth = OnsetTruth(),
                      prune: bool = False, verify: bool = False) -> dict[str, Any]:
    """Cut every video under video_dir into clip_s windows of the same npz format (resumable);
    unreadable files and windows without sound are reported, never fatal.

    The windows' sound is the video's audio stream `audio_stream` (0 = the first), or with
    `stems` the video's sidecar stems whose names hold that tag (`match_stems`, placed by
    `align_stems`): a past reel's Foley stems, whose onsets are caused by the picture, where
    the mix also carries music and dialogue. A video with none of that sound is skipped; the
    picture of a video read with stems needs no audio stream. Changing the sound source, the
    split or `clip_s`, or the files (a video or stem exported again, a stem added or gone:
    meta `inputs` and `digests`), cuts those videos again on the next run: no window of the
    earlier cut stays (summary "removed": those past the end of the new cut, and the windows
    of a video now skipped for want of the sound asked for). Each window's onsets are read
    from its sound by `onset_truth` (meta `onset_truth`); a rerun with another one
    reads the kept windows' onsets again from their stored sound ("relabelled"), without
    touching their picture features.

    Each window records the folder its video was read from (meta `root`): the same files read
    from the folder moved elsewhere are kept (their `root` rewritten; while the first folder
    still holds them, a copy in a second folder leaves them the first's), and a video of another
    folder whose path inside it is the same (two shows' R1.mov built into one dataset) fails
    alone instead of replacing the other's windows (`_cut_from_elsewhere`). With `prune`, the
    windows cut from this folder of videos no longer in it (a reel taken out or renamed) are
    removed, files and index rows ("pruned"), and so are the windows of a folder no longer
    there of a reel that moved here with its stems exported again (the same picture, at a
    path that ends with its old one); other folders' windows and procedural clips stay.
    Windows of a video of this run cut before under another path (from a folder inside or
    around this one, or before its folder moved here) are kept under its new name when they are
    of this cut — the same files by content, window length, split and sound (summary
    "renamed"; their meta rewritten, nothing recomputed, silent verdicts kept too) — and
    removed otherwise ("removed"): it is cut again.

    A rerun keeps a window on `_peek`'s check (its keys, version and sound length, read without
    its arrays; with `verify`, the window read whole) and the files' digests (`.inputs.json`);
    the videos' probes are kept by digest too (`ProbeCache`), so a rerun that finds nothing to
    do reads no video. Windows to relabel are rewritten in the workers. The index is rewritten
    before the workers start when it names a window that went (it never does while they run),
    and when a build is stopped anywhere, with the rows of the windows done so far."""
    if stems is not None and (not stems.strip() or re.search(r"[/\\*?]", stems)):
        raise ValueError(f"stems tag {stems!r}: give a word of the stems' names, such as foley")
    if audio_stream < 0:
        raise ValueError(f"audio stream {audio_stream}: streams count from 0")
    t0 = time.perf_counter()
    video_dir, out_dir = Path(video_dir).resolve(), _prepare_folder(out_dir)
    source = sound_source(audio_stream, stems)
    paths = []
    for path in sorted(p for p in video_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS):
        rel = path.relative_to(video_dir).as_posix()
        hidden = any(part.startswith(".") for part in Path(rel).parts)
        try:
            inside = path.resolve().is_relative_to(out_dir.resolve())
        except (OSError, RuntimeError):   # a symlink loop: it fails alone when probed
            inside = False
        if not (hidden or inside):
            paths.append(path)
    sidecars = match_stems(paths, stems) if stems else {}
    digest = HashCache(out_dir / DIGESTS)
    probes = ProbeCache(out_dir / PROBES)
    _hash_sources(digest, paths + [st for found in sidecars.values() for st in found])
    jobs, relabels, early, existing = [], [], [], 0
    windows: dict[str, int] = {}       # each video read now: how many windows its cut has
    old = _old_index(out_dir)
    judged = _silent_earlier(old)
    root = str(video_dir)
    held: dict[str, list[Path]] = {}    # the folder's video windows by video, listed once
    for path in out_dir.glob("clip_*_[0-9][0-9][0-9][0-9].npz"):
        held.setdefault(_video_of(path.stem), []).append(path)
    names = {f"clip_{_slug(p.relative_to(video_dir).as_posix())}": p for p in paths}
    plan = []                           # the videos to cut: (name, file, probe, stems, keys)
    probed: dict[Path, tuple[str, dict[str, str]]] = {}   # files read now: path, digests
    for name, path in names.items():
        rel = path.relative_to(video_dir).as_posix()
        entry = {"name": name, "source": rel, "root": root}
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:        # bytes the file system holds that are not UTF-8
            shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
            early.append(entry | {"source": shown, "status": "failed",
                                  "reason": f"its name is not UTF-8 text ({shown}): rename it"})
            continue
        try:
            if not path.is_file():
                raise media.MediaError(f"{path}: no such media file (a link to nothing?)")
            info = probes.probe(path, digest.sha256(path))
            placed = align_stems(info, sidecars[path], video_dir) if stems else []
            # the files a window is made from, by size and content: a reel or stem exported
            # again, a stem added or gone, and its windows are made again (a clip from before
            # a key is kept)
            inputs = {rel: path.stat().st_size} | {st.rel: Path(st.path).stat().st_size
                                                    for st in placed}
            digests = {rel: digest.sha256(path)} | {st.rel: digest.sha256(Path(st.path))
                                                     for st in placed}
        except (media.MediaError, ValueError, OSError) as exc:
            early.append(entry | {"status": "failed", "reason": str(exc)})
            continue
        other = _cut_from_elsewhere(out_dir, name, held.get(name, []), root, inputs, digests)
        if other:        # another folder's video of the same name: its windows are not ours
            early.append(entry | {"status": "failed", "reason": other})
            continue
        probed[path.resolve()] = (rel, digests)
        have = len(info.audio_streams)
        if not info.has_video:
            why = "no video stream"
        elif stems and not placed:
            why = (f"no stem next to it named {path.stem}, a separator, then {stems} "
                   f"(e.g. {path.stem}_{stems.upper()}.wav)")
        elif not stems and audio_stream >= have:
            why = (f"no audio stream {audio_stream} (it has {have}: 0–{have - 1})" if have
                   else "no audio stream")
        else:
            why = ""
        if why:          # and its windows of an earlier build go: they are not of this sound
            windows[name] = 0
            early.append(entry | {"status": "skipped", "reason": why})
            continue
        n = max(1, int(round(clip_s * info.fps)))
        windows[name] = int((info.duration_s + 0.25 / info.fps) // (n / info.fps))
        plan.append((name, path, rel, info, n / info.fps, placed, inputs, digests))

    # windows of these files cut before under other names (the folder inside or around this
    # one was built, or the files moved here): kept under the new names when of the same cut,
    # removed otherwise; with --prune, the windows of this folder's videos no longer in it
    renamed, absent = _windows_elsewhere(held, old, set(names), probed, root, prune)
    now_of = {path.resolve(): name for name, path, *_ in plan}
    before: dict[str, str] = {}         # a video of this run → the name it was cut under
    for video, file in sorted(renamed.items(), key=lambda kv: (kv[0] not in held, kv[0])):
        if file in now_of:
            before.setdefault(now_of[file], video)
    done: list[dict] = []               # the workers' rows, as they finish
    sha_of = {name: digests[rel] for name, _, rel, *_, digests in plan}   # each video cut now
    # the file at another folder's path of a video cut now (two shows' R1.mov), for its rows
    # in the index: its digest, read here once (and cached)
    theirs_sha: dict[tuple[Any, Any], str | None] = {}
    for row in old["skipped"] + old["failed"]:
        theirs, src = row.get("root"), row.get("source")
        if (isinstance(theirs, str) and theirs != root and isinstance(src, str) and src
                and row["name"] in sha_of):
            try:
                file = Path(theirs) / src
                theirs_sha[theirs, src] = digest.sha256(file) if file.is_file() else None
            except OSError:
                theirs_sha[theirs, src] = None
    digest.save()
    probes.save()

    def beyond(window: str) -> bool:
        """A window past the end of its video's cut (a longer --clip-s, a shorter video)."""
        video, _, k = window.rpartition("_")
        return video in windows and k.isdigit() and int(k) >= windows[video]

    def forget(window: str, whole: bool = True) -> bool:
        """A window of an earlier cut, or an index row no longer true: past the end of its
        video's cut; the video cut now under another name, or gone (--prune); or (`whole`) a
        whole video's row (failed, skipped) for a video whose windows are cut now."""
        return (beyond(window) or (whole and windows.get(window, 0) > 0)
                or _video_of(window) in renamed.keys() | absent)

    def forget_row(row: dict) -> bool:
        """`forget` for an index row; a whole video's row of another folder that still holds
        another file of that path stands (two shows' R1.mov: the other's failure to cut it
        here is still true while this folder's windows hold the name)."""
        key = (row.get("root"), row.get("source"))
        theirs = theirs_sha.get(key) if all(isinstance(k, str) for k in key) else None
        return forget(row["name"], whole=theirs in (None, sha_of.get(row["name"])))

    try:          # stopped anywhere (^C): the index lists what is on disk, and the rows so far
        for name, path, rel, info, span, placed, inputs, digests in plan:
            was = {p.stem.rpartition("_")[2]: p for p in held.get(before.get(name, ""), [])}
            stems_of = [st.__dict__ for st in placed]
            for k in range(windows[name]):
                wname = f"{name}_{k:04d}"
                path_k = out_dir / f"{wname}.npz"
                cut = {"source": rel, "window": k, "split": split, "sound_source": source,
                       "clip_s": clip_s, "digests": digests, "silence_dbfs": SILENCE_DBFS}
                job = {"out_dir": str(out_dir), "name": wname, "src": str(path), "rel": rel,
                       "window": k, "start_s": k * span, "duration_s": span, "fps": info.fps,
                       "clip_s": clip_s, "split": split, "keep_media": keep_media,
                       "audio_stream": audio_stream, "sound_source": source,
                       "onset_truth": onset_truth.meta(), "inputs": inputs, "cut": cut,
                       "digests": digests, "root": root, "stems": stems_of}
                kept = _existing(path_k, {"sound_source": DEFAULT_SOUND, "inputs": inputs,
                                          "digests": digests}, whole=verify,
                                 source=rel, window=k, split=split, sound_source=source,
                                 clip_s=clip_s, inputs=inputs, digests=digests)
                if kept is not None:
                    # the window's folder: its own, or the one it was cut from while that still
                    # holds the same bytes (a copy in two folders is not rewritten run after run);
                    # a folder moved away, or no folder recorded, and it becomes this one
                    theirs = kept.get("root")
                    owner = (theirs if theirs and (theirs == root or (Path(theirs) / rel).exists())
                             else root)
                    if (kept.get("onset_truth", DETECTOR_TRUTH.meta()) == onset_truth.meta()
                            and "digests" in kept and owner == theirs):
                        existing += 1
                    else:            # rewritten in the workers (read whole there)
                        relabels.append({"path": str(path_k), "onset_truth": onset_truth.meta(),
                                         "rel": rel, "root": owner, "digests": digests,
                                         "remake": job})
                    continue
                # cut with another window length, sound or split, from files changed since, or
                # unreadable: it is remade, and if this cut of the window is silent or fails, no
                # window of the old cut stays
                old_k = was.get(f"{k:04d}")          # cut before under its old name
                if path_k.exists() or old_k is None:     # no media of another cut stay (with no
                    _remove_window(path_k)               # npz, a renaming stopped before 2a511c3)
                if old_k is not None:
                    row = _adopt(old_k, path_k, cut, root, onset_truth, inputs,
                                 _sound_meta(stems_of, audio_stream))
                    if row is not None:              # kept, not remade
                        early.append(row)
                        continue
                    _remove_window(path_k)           # cut again
                silent = judged.get(wname) or (judged.get(f"{before[name]}_{k:04d}")
                                               if name in before else None)
                if silent and _same_cut(silent["cut"], cut, (*CUT_KEYS, "silence_dbfs")):
                    early.append(silent | {"name": wname, "source": rel, "root": root,   # silent
                                           "cut": cut, "status": "skipped", "earlier": True})
                    continue
                jobs.append(job)

        unrenamed = {r["keep"] for r in early if r.get("keep")}     # kept where they were
        stale = [p for p in out_dir.glob("clip_*.npz")
                 if forget(p.stem) and str(p) not in unrenamed]
        pruned = sum(_video_of(p.stem) in absent for p in stale)
        for path in stale:            # a window kept under its new name takes its media
            video, _, k = path.stem.rpartition("_")
            heir = now_of.get(renamed[video]) if video in renamed else None
            _remove_window(path, out_dir / f"{heir}_{k}.npz" if heir else None)
        if _names_gone(out_dir):     # the index names no window removed or renamed above while
            _write_rows(out_dir, early, forget_row)      # the workers run
        _run(_relabel_job, relabels, workers, "windows relabelled", done)
        _run(_video_job, jobs, workers, "video windows", done)
        return _summary(out_dir, early + done, existing, t0, forget=forget_row,
                        removed=len(stale) - pruned, pruned=pruned)
    except BaseException:
        _write_rows(out_dir, early + done, forget_row)
        raise


def _windows_elsewhere(held: dict[str, list[Path]], old: dict[str, list[dict]], now: set[str],
                       cut: dict[Path, tuple[str, dict[str, str]]], root: str,
                       prune: bool) -> tuple[dict[str, Path], set[str]]:
    """The videos the dataset folder holds windows (`held`, by video) or index rows (`old`,
    `_old_index`) of that a build of the folder `root` must remove. `now`: the names of the
    videos in the folder; `cut`: the files this run cuts (probed, not another folder's), with
    their paths in the folder and the digests of the files each window is made from (the
    video's and its stems'). Returns (renamed, absent):
    - renamed: a file of `cut` cut before under another name, with the file of `cut` whose
      windows those are:
      - the same file by another path (from a folder inside or around this one);
      - or, its old path gone (moved here), the file of `cut` whose video and stems have the
        same digests, one old name to each file (two copies of a reel each keep a name: the
        one whose path ends the same). A file that holds windows under its own name (a copy
        of the reel, cut apart) takes none, unless a run stopped while renaming these to it
        (its windows' meta `adopted_from`);
    - absent, with `prune`: videos cut from this folder that are no longer in it; videos of a
      folder no longer there whose reel moved here with its stems exported again (the same
      picture, at a path that ends with its old one); and windows from before digests of a
      folder no longer there with a file here of the same name and size. Without `prune`
      those stay: a folder not there may be a disk not mounted. Windows and rows that do not
      record their folder are never pruned by the first rule: they may be another folder's.
    Only windows and rows of videos not in `now` are read."""
    renamed: dict[str, Path] = {}
    absent: set[str] = set()
    sizes = {(p.name, p.stat().st_size) for p in cut}
    claimed: set[Path] = set()

    def tail(a: str, b: str) -> int:
        """How many trailing parts two paths share."""
        n = 0
        for x, y in zip(reversed(Path(a).parts), reversed(Path(b).parts)):
            if x != y:
                break
            n += 1
        return n

    def judge(video: str, meta: dict, same_path: bool) -> None:
        """First pass (`same_path`): a window's recorded file is a file of this run. Second:
        its old path is gone (moved here, or a disk not mounted)."""
        theirs, rel = meta.get("root"), meta.get("source", "")
        was = (Path(theirs) / rel) if theirs else None
        if same_path:
            if was is not None and was.resolve() in cut:
                renamed[video] = was.resolve()           # the same file, another path to it
                if video in held:
                    claimed.add(was.resolve())
            return
        digests = meta.get("digests")
        if was is not None and was.exists():
            pass
        elif not isinstance(digests, dict) or rel not in digests:     # from before digests
            if prune and (Path(rel).name, meta.get("inputs", {}).get(rel)) in sizes:
                absent.add(video)
        else:
            mine = sorted(map(str, digests.values()))
            # a file with windows of its own (a copy of the reel, cut apart) takes none of
            # another's, unless a run stopped while renaming them to it
            free = [f for f, (now_rel, d) in cut.items()
                    if sorted(d.values()) == mine and f not in claimed
                    and renaming(f"clip_{_slug(now_rel)}") in (None, video)]
            if free:        # the same video and stems: the copy whose path ends the same
                renamed[video] = max(free, key=lambda f: (tail(rel, cut[f][0]), str(f)))
                claimed.add(renamed[video])
            elif prune and any(d.get(now_rel) == digests[rel]
                               and tail(rel, now_rel) == len(Path(rel).parts)
                               for now_rel, d in cut.values()):
                absent.add(video)    # its folder gone, its reel here with other stems
        if video not in renamed and prune and theirs == root:
            absent.add(video)

    @lru_cache(maxsize=None)
    def renaming(name: str) -> str | None:
        """The video whose windows were being renamed to `name` when a run stopped ("" for a
        name with windows of its own, None for one with none)."""
        if name not in held:
            return None
        meta = _read_meta(sorted(held[name])[0]) or {}
        return _video_of(meta["adopted_from"]) if meta.get("adopted_from") else ""

    told: list[tuple[str, dict]] = []
    for video, windows in sorted(held.items()):
        if video in now:
            continue
        # one window tells of its video
        meta = next(filter(None, map(_read_meta, windows)), None)
        if meta is not None and meta.get("kind") == "video":
            told.append((video, meta))
    for row in old["skipped"] + old["failed"]:
        video = _video_of(row["name"])
        judged_in = row.get("cut") if isinstance(row.get("cut"), dict) else {}
        if (video.startswith("clip_") and video not in now | held.keys()
                and isinstance(row.get("root"), str)):
            told.append((video, {"root": row["root"], "source": str(row.get("source", ""))}
                         | ({"digests": judged_in["digests"]}
                            if isinstance(judged_in.get("digests"), dict) else {})))
    for same_path in (True, False):
        for video, meta in told:
            if video not in renamed and video not in absent:
                judge(video, meta, same_path)
    return renamed, absent


# ---------------------------------------------------------------- Big Buck Bunny

BBB_PACKAGE = "moviepy==2.2.1"
BBB_ZIP = "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"
BBB_MEMBER = "moviepy_10_minutes/resources/bbb.mp4"
BBB_SHA256 = "475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0"


def fetch_big_buck_bunny(dest: Path) -> Path:
    """Big Buck Bunny (Blender Foundation, CC BY 3.0: credit it), the whole film — 9:56,
    1280x720 24 fps H.264, AAC stereo 44.1 kHz — from moviepy's source distribution through
    pip (no other network access). `dest` is a file or an existing folder; sha256-checked."""
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / "big_buck_bunny.mp4"
    if dest.exists() and sha256_file(dest) == BBB_SHA256:
        return dest
    with tempfile.TemporaryDirectory(prefix="foley-bbb-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                               ":all:", BBB_PACKAGE, "-d", tmp], capture_output=True, text=True)
        sdists = sorted(Path(tmp).glob("moviepy-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise RuntimeError(f"pip could not download {BBB_PACKAGE}: {proc.stderr[-400:]}")
        with tarfile.open(sdists[0]) as tar:
            src = tar.extractfile(BBB_ZIP)
            if src is None:
                raise RuntimeError(f"{sdists[0].name} has no {BBB_ZIP}")
            with open(Path(tmp) / "bbb.zip", "wb") as fh:
                shutil.copyfileobj(src, fh)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        with zipfile.ZipFile(Path(tmp) / "bbb.zip") as zf, zf.open(BBB_MEMBER) as film:
            with open(part, "wb") as fh:
                shutil.copyfileobj(film, fh)
    if sha256_file(part) != BBB_SHA256:
        part.unlink()
        raise RuntimeError(f"{BBB_MEMBER} in {BBB_PACKAGE} is not the expected file (sha256 differs)")
    os.replace(part, dest)
    return dest

