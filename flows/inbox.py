"""The inbox: where reels land during the day for the overnight pass to find.

An inbox is a folder or an `s3://bucket/prefix`. Every timeline file in it (`.otio .otioz .edl
.xml .fcpxml .aaf`, at any depth) is a reel: the edit plus the media it names, found beside
the edit (relative paths, or by file name anywhere under the edit's folder — give each reel a
folder of its own). A reel's *version* is the SHA-256 over the edit's bytes and, in order,
each media file's path relative to the inbox and content hash: a re-exported edit, a re-rendered
shot or a file that arrives later makes a new version, which the nightly pass takes again
(unchanged shots come from the cache). Media hashes are remembered by (path, size, mtime) in
`<home>/cache/inbox-hashes.json`, so an unchanged camera file is read once, not every night;
a folder moved within the inbox's file system is not read again either (`HashCache`).

A reel still being copied is left alone: it is *settling* until none of its files (edit and
media) changed for `settle_s` seconds (FOLEY_INBOX_SETTLE_S, default 120). Copy the media first
and the edit last, or copy into a folder outside the inbox and move it in (a move is instant).

An s3:// inbox is mirrored into `<home>/cache/inbox/<bucket>/` first (objects whose size or
time changed are downloaded, files whose object is gone are removed; each local file carries its
object's last-modified time), then scanned as a folder. S3 objects appear whole, so settling
there only waits for a reel's other files (uploaded after its edit) to arrive.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from tasks import ingest
from tasks.store import HashCache, S3Config

TIMELINES = (".otio", ".otioz", ".edl", ".xml", ".fcpxml", ".aaf")
BUNDLE_DIR = ".otioz.media"  # where read_timeline unpacks an .otioz: not reels of their own


@dataclass(frozen=True)
class Arrival:
    """A reel version ready for the pass."""

    path: str  # the edit, relative to the inbox (POSIX)
    timeline: Path  # the edit on this machine
    content_sha256: str
    reel: str  # the reel's name as the pass will call it
    shots: int
    media_files: int
    bytes: int  # edit + media
    picture_s: float


@dataclass
class Scan:
    """What one look at the inbox found."""

    inbox: str
    root: Path  # the folder scanned (an s3:// inbox: its local mirror)
    ready: list[Arrival] = field(default_factory=list)
    settling: list[tuple[str, float]] = field(default_factory=list)  # (path, seconds to wait)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def hash_cache(home: Path) -> HashCache:
    """The media hashes every scan under `home` shares."""
    return HashCache(home / "cache" / "inbox-hashes.json")


def timelines_in(root: Path) -> list[Path]:
    """Every edit under `root`, sorted; hidden files and unpacked .otioz bundles skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not d.endswith(BUNDLE_DIR))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(TIMELINES)]
    return found


def scan_folder(root: Path, *, inbox: str, settle_s: float, hashes: HashCache,
                fps: float | None = None, now: float | None = None) -> Scan:
    """Look at every edit under `root`: ready (with its version), settling, or unreadable."""
    now = time.time() if now is None else now
    out = Scan(inbox=inbox, root=root)
    for tl in timelines_in(root):
        rel = tl.relative_to(root).as_posix()
        try:
            _, spec = ingest.read_timeline(tl, fps=fps, media_root=tl.parent)
        except ingest.TimelineError as exc:
            wait = settle_s - (now - tl.stat().st_mtime)
            if wait > 0:  # a half-written edit does not parse: give it its settling time
                out.settling.append((rel, wait))
            else:
                out.unreadable.append((rel, str(exc)))
            continue
        media = sorted({Path(sh.source_path) for sh in spec.shots if sh.source_path})
        files = [tl, *media]
        wait = settle_s - (now - max(f.stat().st_mtime for f in files))
        if wait > 0:
            out.settling.append((rel, wait))
            continue
        out.ready.append(Arrival(
            path=rel, timeline=tl, content_sha256=version_hash(tl, media, root, hashes),
            reel=spec.name, shots=len(spec.shots), media_files=len(media),
            bytes=sum(f.stat().st_size for f in files), picture_s=spec.duration_s))
    hashes.save()
    return out


def version_hash(timeline: Path, media: Iterable[Path], root: Path, hashes: HashCache) -> str:
    """SHA-256 over the edit's content and each media file's inbox path and content."""
    h = hashlib.sha256(b"foleyflow-inbox-v1\0")
    h.update(hashes.sha256(timeline).encode())
    for m in media:
        try:
            where = m.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # media outside the inbox (an absolute path in the edit)
            where = str(m.resolve())
        h.update(f"\0{where}\0{hashes.sha256(m)}".encode())
    return h.hexdigest()


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"inbox {url!r}: use a folder or s3://bucket/prefix")
    return u.netloc, unquote(u.path).strip("/")


def mirror_s3(url: str, config: S3Config, dest: Path) -> Path:
    """Bring the local mirror of an s3:// inbox up to date; returns the mirror's root."""
    from tasks.store_s3 import make_client

    bucket, prefix = split_s3(url)
    client = make_client(config)
    root = dest / bucket / prefix if prefix else dest / bucket
    root.mkdir(parents=True, exist_ok=True)
    seen = set()
    for obj in client.list_objects(bucket, prefix=f"{prefix}/" if prefix else None,
                                   recursive=True):
        if obj.is_dir or obj.object_name.endswith("/"):
            continue
        rel = obj.object_name[len(prefix) + 1:] if prefix else obj.object_name
        local = root / rel
        seen.add(local)
        stamp = obj.last_modified.timestamp()
        if local.is_file() and local.stat().st_size == obj.size and \
                abs(local.stat().st_mtime - stamp) < 1e-3:
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        client.fget_object(bucket, obj.object_name, str(tmp))
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, local)
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath) / f
            if p not in seen and BUNDLE_DIR not in p.as_posix():
                p.unlink()
    return root


def scan(inbox: str, *, settle_s: float, home: Path, s3: S3Config | None = None,
         fps: float | None = None) -> Scan:
    """Scan a folder or s3:// inbox (see the module docstring)."""
    hashes = hash_cache(home)
    if inbox.startswith("s3://"):
        if s3 is None:
            raise ValueError(f"inbox {inbox}: S3 settings (AWS_*) are needed for an s3:// inbox")
        root = mirror_s3(inbox, s3, (home / "cache" / "inbox").resolve())
    else:
        root = Path(unquote(urlparse(inbox).path) if inbox.startswith("file://") else inbox)
        if not root.is_dir():
            raise ValueError(f"inbox {inbox} is not a folder: create it or set FOLEY_INBOX "
                             "to the folder (or s3://bucket/prefix) reels are dropped into")
        root = root.resolve()
    return scan_folder(root, inbox=inbox, settle_s=settle_s, hashes=hashes, fps=fps)
