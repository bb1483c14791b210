"""The delivery folder on disk: checking that a reel's delivery may be written there, and
copying the conform stage's rendered files into it (DESIGN.md, "Delivery folder").

Kept apart from `tasks.conform`, whose source is part of the conform stage's cache key: how
files are copied into a folder does not change a delivered byte, so a change here re-renders
nothing.

While files are being copied the folder holds no `manifest.json`: the previous delivery's
manifest is set aside as `.manifest.json.previous` (listing every file it listed and every file
this delivery writes) before the first copy, and the new one lands last. Those two records are
all foleyflow owns there: a file with a delivered name that neither lists is someone else's,
and the delivery is refused rather than overwrite or delete it. A folder with a
`manifest.json` is therefore a whole delivery — every file it lists is there with the digest it
names — and one without it is a delivery in progress or one that was stopped half-way, which
the next run finishes (`foley run` again, or the review app's re-conform). A file already in
the folder with the content it is to be given (its size and SHA-256) is left as it is, so a
re-conform (a retry, a decision on one shot) writes only what changed and the manifest.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tasks import runtime
from tasks.conform import MIXES, mix_name, shot_prefix
from tasks.spatial import STEMS
from tasks.store import ArtifactRef, StoreError, sha256_file

MANIFEST = "manifest.json"
PREVIOUS = ".manifest.json.previous"  # the folder's last manifest, while a delivery replaces it


class DeliveryFolderError(ValueError):
    """The delivery folder cannot take this delivery without harming what is there (one line:
    the folder, why, what to do). Bad input: `foley` exits 2, a review job is not retried."""

    exit_code = 2


class DeliveryDiskError(DeliveryFolderError):
    """The delivery folder's disk cannot take a file now (full, over quota, read-only): not the
    input's fault — `foley` exits 1 as for a service away, a review job is retried."""

    exit_code = 1


def _same_file(a: Path, b: str | Path) -> bool:
    """Whether `a` and `b` are one file (False when either does not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_delivery_folder(out_dir: str | Path, reel: str, *, edit: str | Path,
                          media: Iterable[str | Path | None] = (), option: str = "--out") -> None:
    """Raise DeliveryFolderError unless the delivery of `reel` can be written into `out_dir`:
    it is (or can be made) a folder; no file the delivery writes there is the edit `edit` or
    one of the shots' `media` (an editor's `<reel>.otio`/`.xml`/`.aaf` beside which the delivery
    was asked for); and it holds no other reel's delivery (each reel has its own folder: a
    re-conform replaces what its own previous manifest listed). Reads only, writes nothing —
    run it before the pass does any work. `option` names the folder in the message."""
    out = Path(out_dir)
    where = f"{option} {out}"
    probe = out
    while not (probe.exists() or probe.is_symlink()):  # the nearest part that exists
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe == out and out.exists() and not out.is_dir():
        raise DeliveryFolderError(f"{where} is a file, not a folder: give a folder for the "
                                  "delivery (it is made if missing)")
    if probe.is_symlink() and not probe.exists():
        raise DeliveryFolderError(f"{where}: {probe} is a broken link; choose another {option}")
    if probe.exists() and not probe.is_dir():
        raise DeliveryFolderError(f"{where}: {probe} is a file, so the delivery folder cannot "
                                  f"be made there; choose another {option}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise DeliveryFolderError(f"{where}: {probe} is not writable; choose another {option} "
                                  "or make it writable")
    _not_nested(out, where=where, option=option)
    if not out.is_dir():
        return
    inputs = [(Path(edit), f"the edit {edit}")]
    inputs += [(Path(m), f"media of the edit ({m})") for m in media if m]
    try:
        ours = list(_would_write(out, reel))
    except OSError as exc:
        raise DeliveryFolderError(f"{where}: cannot be read ({exc.strerror}: {exc.filename}); "
                                  f"choose another {option} or fix its permissions") from None
    for dest in ours:
        if dest.is_dir() and not dest.is_symlink():
            raise DeliveryFolderError(
                f"{where}: {dest.relative_to(out).as_posix()} is a folder where the delivery "
                f"writes a file; move it away or choose another {option}")
        for path, what in inputs:
            if _same_file(dest, path):
                raise DeliveryFolderError(
                    f"{where}: the delivery would write {dest.relative_to(out).as_posix()} "
                    f"over {what} itself; choose another {option} (a folder of the "
                    "delivery's own)")
    owned = _previous_files(out, reel, where=where, option=option)
    if not _legacy_in_progress(out):  # (an older foleyflow's stopped delivery: by name)
        _refuse_unrecorded(out, reel, ours, owned, where=where, option=option)


def _refuse_unrecorded(out: Path, reel: str, found: Iterable[Path], owned: set[str], *,
                       where: str, option: str) -> None:
    """DeliveryFolderError naming the first of `found` (files in `out` with a name a delivery
    of `reel` writes) that no record of the folder lists (`owned`: its manifest, or the list a
    delivery in progress set aside): someone else's file — an editor's own `<reel>.xml`, a
    hand-made envelope — which a delivery would overwrite, or a later one delete."""
    theirs = [rel for rel in (p.relative_to(out).as_posix() for p in found)
              if rel not in owned and rel != MANIFEST and not _is_partial(rel)]
    if theirs:
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise DeliveryFolderError(
            f"{where}: {theirs[0]}{more} has a name the delivery of reel {reel!r} writes, but "
            f"no manifest of the folder lists it, so it is not foleyflow's; move it out of the "
            f"folder or choose another {option}")


OWNS = "listed"  # PREVIOUS's mark: its list holds the stopped delivery's own files too


def _legacy_in_progress(out: Path) -> bool:
    """Whether `out` holds a delivery an older foleyflow stopped half-way: a PREVIOUS without
    the OWNS mark lists only what the folder held before that delivery, not what it copied, so
    there the files with a delivered name count as foleyflow's (as they did then), once."""
    try:
        doc = json.loads((out / PREVIOUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("owns") != OWNS


def _is_partial(rel: str) -> bool:
    """Whether `rel` is the temporary name a delivery copies a file to (`.NAME.partial`)."""
    name = Path(rel).name
    return name.startswith(".") and name.endswith(".partial")


NESTED_DEPTH = 2  # how deep under --out another delivery is looked for


def _delivery_at(folder: Path) -> str | None:
    """The reel whose delivery `folder` holds (its manifest, or the one a stopped delivery set
    aside), '?' for a manifest that does not name one, else None."""
    for name in (MANIFEST, PREVIOUS):
        man = folder / name
        if man.is_file():
            try:
                reel = json.loads(man.read_text(encoding="utf-8")).get("reel")
            except (OSError, ValueError, AttributeError):
                return "?"
            return reel if isinstance(reel, str) else "?"
    return None


def _not_nested(out: Path, *, where: str, option: str) -> None:
    """DeliveryFolderError if `out` lies inside another delivery folder (its shots/ folder, a
    shot's folder), or holds one within NESTED_DEPTH folders down (a root of deliveries): a
    delivery's files would mix with another's, and its manifest would not list them."""
    absolute = Path(os.path.abspath(out))
    for above in absolute.parents:
        reel = _delivery_at(above)
        if reel is not None:
            raise DeliveryFolderError(
                f"{where} is inside the delivery of reel {reel!r} ({above}); give each reel a "
                f"folder of its own, outside any other delivery (choose another {option})")
    if not out.is_dir():
        return
    level = [out]
    for _ in range(NESTED_DEPTH):
        below = []
        for folder in level:
            try:
                subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
            for sub in subs:
                reel = _delivery_at(sub)
                if reel is not None:
                    raise DeliveryFolderError(
                        f"{where} holds the delivery of reel {reel!r} in "
                        f"{sub.relative_to(out).as_posix()}/; give each reel a folder of its "
                        f"own, e.g. {out / '<reel>'} (choose another {option})")
                below.append(sub)
        level = below


def _would_write(out: Path, reel: str) -> Iterator[Path]:
    """The files already in `out` that a delivery of `reel` writes over (or through the
    temporary names it copies to)."""
    top = {f"{reel}.otio", f"{reel}.xml", f"{reel}.aaf", f"{reel}_preview.mp4", "manifest.json",
           *(mix_name(reel, m.kind) for m in MIXES)}
    for name in sorted(top):
        for p in (out / name, out / f".{name}.partial"):
            if p.exists():
                yield p
    shots = out / "shots"
    if not shots.is_dir():
        return
    for folder in sorted(shots.iterdir()):
        if not folder.is_dir():
            continue
        prefix = re.escape(shot_prefix(reel, folder.name))
        kinds = "|".join(map(re.escape, STEMS))
        ours = re.compile(rf"{prefix}_(?:{kinds})\.wav|{prefix}_position\.json"
                          r"|envelope_v\d+\.(?:json|png)")
        for p in sorted(folder.iterdir()):
            name = p.name
            if name.startswith(".") and name.endswith(".partial"):
                name = name[1:-len(".partial")]
            if ours.fullmatch(name) and p.exists():
                yield p


def _previous_files(out: Path, reel: str | None, *, where: str, option: str) -> set[str]:
    """The files the delivery of `reel` already in `out` lists — its manifest.json, and the
    manifest a delivery stopped half-way set aside (PREVIOUS) — to be replaced; none if there is
    neither. DeliveryFolderError if either is another reel's, or not a foleyflow manifest: the
    delivery would replace it and lose that record."""
    files: set[str] = set()
    for name in (MANIFEST, PREVIOUS):
        man = out / name
        if not (man.exists() or man.is_symlink()):
            continue
        try:
            doc = json.loads(man.read_text(encoding="utf-8"))
            other = doc["reel"]
            files |= {str(rel) for rel in doc["files"]}
            if not isinstance(other, str):
                raise TypeError(other)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise DeliveryFolderError(
                f"{where}: its {name} is not a foleyflow delivery manifest, and the delivery "
                f"would replace it; choose another {option}") from None
        if other != reel:
            raise DeliveryFolderError(f"{where} holds the delivery of reel {other!r}; give each "
                                      f"reel its own folder (choose another {option})")
    return files


def deliver(outputs: dict[str, ArtifactRef], out_dir: Path, *,
            keep: Iterable[str | Path] = ()) -> None:
    """Copy the rendered files into `out_dir`, each via a temporary name, the manifest last.

    What foleyflow owns in the folder is what a record lists — its manifest.json, or the list a
    delivery in progress set aside (PREVIOUS) — never what a name suggests. Before the first
    copy the manifest is set aside as PREVIOUS, listing the files it listed plus every file
    this delivery writes, so until the new manifest lands the folder claims no delivery and a
    delivery stopped anywhere (killed, disk full) leaves every file it wrote listed for the
    next, which finishes it. A re-conform (after a retake, an omission) replaces an earlier
    delivery of the same reel: files the records list and this delivery does not (an old
    envelope version, the stems of a shot now omitted) are removed, then the new manifest is
    put in place and PREVIOUS removed. A destination that already holds the file's content (a
    regular file of the same size and SHA-256 as the artifact) is not written again: a second
    identical delivery writes only the set-aside manifest and the new one.

    Files foleyflow did not deliver are never touched: a file with a name this reel's delivery
    writes that no record lists, a folder holding another reel's delivery (its manifest names
    that reel), a manifest.json foleyflow did not write, or writing over a file in `keep` (the
    reel's edit) is refused before anything is copied (DeliveryFolderError). A copy the folder
    cannot take (its disk full, read-only) removes its temporary file and raises one
    DeliveryFolderError naming the folder and what to do."""
    store = runtime.store()
    where = f"delivery folder {out_dir}"
    reel = _delivered_reel(store, outputs)
    before = _previous_files(out_dir, reel, where=where, option="delivery folder") \
        if out_dir.is_dir() else set()
    for rel in outputs:
        dest = out_dir / rel
        for path in keep:
            if _same_file(dest, path):
                raise DeliveryFolderError(f"{where}: the delivery would write {rel} over "
                                          f"the edit {path} itself; deliver elsewhere")
    found = list(_would_write(out_dir, reel)) if reel is not None and out_dir.is_dir() else []
    if reel is not None:
        found += [out_dir / rel for rel in outputs
                  if rel != MANIFEST and (out_dir / rel).exists() and out_dir / rel not in found]
        if _legacy_in_progress(out_dir):  # an older foleyflow's stopped delivery: by name
            before |= {p.relative_to(out_dir).as_posix() for p in found
                       if not _is_partial(p.name)} - {MANIFEST}
        else:
            _refuse_unrecorded(out_dir, reel, found, before, where=where,
                               option="delivery folder")
    with _writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    # What a stopped copy left half-way: the temporary names of what a record lists or this
    # delivery writes (a `.NAME.partial` is only ever a delivery's).
    partials = {_partial(out_dir / rel) for rel in before | set(outputs)}
    partials |= {p for p in found if _is_partial(p.name)}
    for tmp in sorted(partials):
        with contextlib.suppress(OSError):
            tmp.unlink()
    (out_dir / f".{PREVIOUS}.partial").unlink(missing_ok=True)

    man, previous = out_dir / MANIFEST, out_dir / PREVIOUS
    if reel is not None:
        # Set the old manifest aside with all the records and this delivery say are this
        # reel's (on a first delivery just this delivery's files: the folder is claimed for
        # this reel all the same): a copy stopped from here on is finished by the next, which
        # reads the list back, and another reel is refused the folder meanwhile.
        tmp = out_dir / f".{PREVIOUS}.partial"
        listed = sorted((before | set(outputs)) - {MANIFEST})
        with _writing(out_dir, PREVIOUS, tmp):
            tmp.write_text(json.dumps({"reel": reel, "owns": OWNS, "files": listed}, indent=2,
                                      ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, previous)
        man.unlink(missing_ok=True)

    def put(rel: str, ref: ArtifactRef) -> None:
        dest = out_dir / rel
        if _holds(dest, ref):
            return  # what a previous delivery (or one stopped half-way) put there already
        src = store.local_path(ref)  # (the store's own trouble is not the folder's)
        tmp = _partial(dest)
        with _writing(out_dir, rel, tmp):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)

    for rel, ref in sorted(outputs.items()):
        if rel != MANIFEST:
            put(rel, ref)
    for rel in sorted(before - set(outputs)):
        stale = (out_dir / rel).resolve()
        if stale.is_relative_to(out_dir.resolve()) and stale.is_file():
            stale.unlink()
            with contextlib.suppress(OSError):  # its shot folder, if now empty
                stale.parent.rmdir()
    if MANIFEST in outputs:
        put(MANIFEST, outputs[MANIFEST])
        previous.unlink(missing_ok=True)


def _partial(dest: Path) -> Path:
    """The temporary name `dest` is copied to before it is put in place."""
    return dest.with_name(f".{dest.name}.partial")


FULL = {errno.ENOSPC: "free space there (or deliver elsewhere) and run again",
        errno.EDQUOT: "free space there (or deliver elsewhere) and run again",
        errno.EFBIG: "deliver to a disk that takes files this large and run again"}


@contextlib.contextmanager
def _writing(out_dir: Path, rel: str | None = None, tmp: Path | None = None
             ) -> Iterator[None]:
    """Write `rel` into `out_dir` (via `tmp`): on an OSError `tmp` is removed, and a failure of
    the folder's own disk (full, over a quota or a file size limit, read-only, not writable)
    becomes one DeliveryFolderError naming the folder, the cause and what to do."""
    try:
        yield
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, StoreError):
            raise
        named = isinstance(exc.filename, (str, bytes, os.PathLike))
        at = Path(os.fsdecode(exc.filename)) if named else None
        ours = at is not None and (at == out_dir or out_dir in at.parents
                                   or at in out_dir.parents)
        if exc.errno in FULL:
            advice = FULL[exc.errno]
        elif exc.errno == errno.EROFS or (ours and exc.errno in (errno.EACCES, errno.EPERM)):
            advice = "make it writable (or deliver elsewhere) and run again"
        else:
            raise
        cause = (exc.strerror or str(exc)).rstrip(".")
        writing = f" (writing {rel})" if rel else ""
        raise DeliveryDiskError(
            f"delivery folder {out_dir}: {cause[:1].lower()}{cause[1:]}{writing} — "
            f"{advice}; completed work is kept") from exc


def _holds(dest: Path, ref: ArtifactRef) -> bool:
    """Whether `dest` is a regular file (not a link) with the artifact's size and SHA-256."""
    try:
        st = dest.lstat()  # (a link is not followed: S_ISREG is False for it)
        if not stat.S_ISREG(st.st_mode) or st.st_size != int(ref["bytes"]):
            return False
        return sha256_file(dest) == ref["sha256"]
    except (OSError, KeyError, TypeError, ValueError):
        return False


def _delivered_reel(store: Any, outputs: dict[str, ArtifactRef]) -> str | None:
    """The reel whose delivery `outputs` is (as its manifest.json names it)."""
    ref = outputs.get("manifest.json")
    if ref is None:
        return None
    return json.loads(Path(store.local_path(ref)).read_text(encoding="utf-8")).get("reel")
