"""Content-addressed artifact store: a local folder by default, S3 / MinIO in a studio.

An artifact ref is `{uri, sha256, bytes, mime}`. The key is derived from the content hash, so
writing the same bytes twice is a no-op; a write lands under a temporary name and is renamed
into place, so a crash never leaves a half-written object under a real key. Reads are checked
against the ref's sha256, so a file changed behind the store's back is caught, not used.
"""
from __future__ import annotations

import errno
import hashlib
import json
import mimetypes
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlparse

from pydantic import SecretStr

ArtifactRef = dict[str, Any]
CHUNK = 1 << 20
T = TypeVar("T")

mimetypes.add_type("application/x-npz", ".npz")
mimetypes.add_type("audio/wav", ".wav")
mimetypes.add_type("application/json", ".json")
mimetypes.add_type("application/vnd.opentimelineio+json", ".otio")


class StoreError(OSError):
    """An artifact is missing or does not match its hash, or the store refused us."""


class StoreUnavailable(StoreError):
    """The store's server did not answer (refused, timed out, 5xx): retrying later may work.

    `hung`: it accepted the connection but sent nothing back within the read timeout (a hung
    or wedged server, or something that is not S3 listening on the port): `retry_io` gives
    such a server fewer tries, each of them having cost a whole read timeout.
    `answered`: it is up and answered with a server error (5xx, InternalError, SlowDown): the
    cause is on the server (its log says which: a full disk, no volume left, overload)."""

    def __init__(self, message: str, *, endpoint: str = "", reason: str = "",
                 hung: bool = False, answered: bool = False) -> None:
        super().__init__(message)  # one argument: OSError reads two as (errno, strerror)
        self.endpoint = endpoint
        self.reason = reason or message
        self.hung = hung
        self.answered = answered


def retry_io(fn: Callable[[], T], *, attempts: int = 5, base: float = 0.5,
             max_delay: float = 8.0, sleep: Callable[[float], None] = time.sleep,
             hung_attempts: int | None = None) -> T:
    """Call `fn`, retrying on `StoreUnavailable` with bounded exponential backoff.

    Waits base, 2·base, 4·base, … (each at most `max_delay`) between `attempts` tries; other
    errors pass straight through. A server that accepts connections and never answers
    (`StoreUnavailable.hung`) is given at most `hung_attempts` tries (None: `attempts`): each
    one has waited a whole read timeout already. The final error says how long we tried and
    what to do.
    """
    if attempts < 1:
        raise ValueError(f"retry_io needs at least one attempt, got {attempts}")
    start = time.monotonic()
    hung = 0
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except StoreUnavailable as e:
            last = e
            hung += bool(e.hung)
            if hung_attempts is not None and e.hung and hung >= hung_attempts:
                break
            if attempt < attempts:
                sleep(min(max_delay, base * 2 ** (attempt - 1)))
    elapsed = time.monotonic() - start
    if last.answered:
        what, check = "kept failing", "check the server's log (disk space, volumes, load)"
    elif last.hung:
        what, check = ("unreachable (it accepts connections but never answers: a hung or "
                       "overloaded server, or no S3 server on that port)"), "check the server"
    else:
        what, check = "unreachable", "check the server"
    raise StoreUnavailable(
        f"S3 endpoint {last.endpoint} {what} after {attempt} attempts over {elapsed:.1f} s: "
        f"{last.reason}; {check} and rerun — completed work is kept",
        endpoint=last.endpoint, reason=last.reason, hung=last.hung,
        answered=last.answered) from last


def sha256_file(path: str | Path, progress: Callable[[int], Any] | None = None) -> str:
    """The file's SHA-256; `progress(n)` is called with the bytes of each block read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


SAMPLE_BLOCKS, SAMPLE_BYTES = 16, 4096


def sample_digest(path: str | Path, size: int) -> str:
    """A short digest of 16 blocks of 4 KiB spread evenly over the file (64 KiB read): what
    tells a file moved from another file that took its freed inode, name, size and mtime."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(SAMPLE_BLOCKS):
            f.seek(max(0, size - SAMPLE_BYTES) * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:32]


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a temporary sibling of its own, then rename it over `path`: a reader sees
    the old file or the new one, and two writers never share a temporary name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class JsonCache:
    """A dict kept in a JSON file next to what it describes: read once (a file that cannot be
    read holds nothing; `_accept` keeps the entries of the right shape), written by `save`
    when `changed` (a temporary name, then renamed: never half written)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = {}
        self.known: dict[str, Any] = self._accept(loaded if isinstance(loaded, dict) else {})
        self.changed = False

    def _accept(self, loaded: dict) -> dict[str, Any]:
        return loaded

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.known))
        os.replace(tmp, self.path)
        self.changed = False


class HashCache(JsonCache):
    """SHA-256 of files by (absolute path, size, mtime), kept in a JSON file (atomic writes):
    a file is read again only when it changed on disk or was copied. A file moved on its file
    system (the same device and inode, file name, size and mtime, and the same bytes at 16
    places spread over it: `sample_digest`) keeps its digest under its new path, so a show's
    folder renamed is not read again. Another file put at a known path (another inode) with
    the same size and mtime is taken for the known one only with the same sampled bytes. What
    is left trusted: a file changed in place, or replaced, keeping its size and mtime to the
    nanosecond (a forced mtime) and, if replaced, changed only between the samples. A cache
    file that cannot be read, or entries not of that shape, read as unknown."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.nodes = {self._node(k, v[3], v[4], v[0], v[1]): k
                      for k, v in self.known.items() if len(v) == 6}

    def _accept(self, loaded: dict) -> dict[str, list]:
        # path → [size, mtime_ns, sha256] and, since moves are followed, [device, inode, sample]
        return {k: v for k, v in loaded.items()
                if isinstance(v, list) and len(v) in (3, 6)
                and [type(x) for x in v] == [int, int, str, int, int, str][:len(v)]}

    @staticmethod
    def _node(key: str, dev: int, ino: int, size: int, mtime_ns: int) -> tuple:
        return dev, ino, size, mtime_ns, Path(key).name

    def _look(self, file: Path) -> tuple[str, os.stat_result, str | None]:
        """The file's key (resolved path), stat and the digest known for it as it is now
        (None: unknown)."""
        st = file.stat()
        try:
            key = str(file.resolve())
        except RuntimeError as exc:         # a symlink loop
            raise OSError(f"{file}: {exc}") from exc
        hit = self.known.get(key)
        if hit and hit[:2] == [st.st_size, st.st_mtime_ns] and (
                len(hit) == 3 or hit[3:5] == [st.st_dev, st.st_ino]
                or hit[5] == sample_digest(file, st.st_size)):   # another file put there
            return key, st, hit[2]
        was = self.known.get(self.nodes.get(
            self._node(key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), ""))
        if (was and was[:2] == [st.st_size, st.st_mtime_ns]          # moved here, it seems
                and was[3:5] == [st.st_dev, st.st_ino]
                and was[5] == sample_digest(file, st.st_size)):
            return key, st, was[2]
        return key, st, None

    def cached(self, file: Path) -> str | None:
        """The digest known for the file as it is now, without reading it whole (None:
        unknown)."""
        return self._look(file)[2]

    def sha256(self, file: Path, progress: Callable[[int], Any] | None = None) -> str:
        """The file's digest, read only when not known (OSError when it cannot be read)."""
        key, st, sha = self._look(file)
        if sha is None:
            sha = sha256_file(file, progress)
        hit = self.known.get(key)
        if hit and hit[:5] == [st.st_size, st.st_mtime_ns, sha, st.st_dev, st.st_ino]:
            return sha
        node = self._node(key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        old = self.nodes.get(node)
        if old is not None and old != key and not Path(old).exists():
            self.known.pop(old, None)                    # moved: its old path is gone
        self.known[key] = [st.st_size, st.st_mtime_ns, sha, st.st_dev, st.st_ino,
                           sample_digest(file, st.st_size)]
        self.nodes[node], self.changed = key, True
        return sha


def guess_mime(path: str | Path) -> str:
    return mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def object_key(sha256: str, suffix: str) -> str:
    """`ab/cd/abcd….wav`: fan-out folders keep directory listings short."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix.lower()}"


def make_ref(uri: str, sha256: str, size: int, mime: str) -> ArtifactRef:
    return {"uri": uri, "sha256": sha256, "bytes": size, "mime": mime}


class VerifiedFiles:
    """Local files whose sha256 matched their ref, remembered by stat signature.

    A file is hashed the first time it is handed out and again only when its inode, size or
    times change, so reading one artifact many times costs one hash.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, tuple[int, ...]]] = {}

    def check(self, path: Path, ref: ArtifactRef, name: str) -> None:
        """Raise StoreError (naming `name`) unless `path` holds exactly the ref's bytes."""
        st = path.stat()
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._seen.get(str(path)) == (ref["sha256"], sig):
            return
        if st.st_size != ref["bytes"]:
            raise StoreError(f"artifact {name} is {st.st_size} bytes, expected {ref['bytes']}: "
                             "it was changed behind the store; rerun the stage that made it")
        got = sha256_file(path)
        if got != ref["sha256"]:
            raise StoreError(f"artifact {name} failed its integrity check (sha256 {got[:12]}…, "
                             f"expected {ref['sha256'][:12]}…): it was changed behind the store; "
                             "rerun the stage that made it")
        self._seen[str(path)] = (ref["sha256"], sig)

    def remember(self, path: Path, ref: ArtifactRef) -> None:
        """Record `path` as verified (its bytes were hashed on the way in)."""
        st = path.stat()
        self._seen[str(path)] = (ref["sha256"], (st.st_ino, st.st_size, st.st_mtime_ns,
                                                 st.st_ctime_ns))


class Store(Protocol):
    """What every artifact store offers."""

    url: str

    def put_file(self, path: str | Path, mime: str | None = None) -> ArtifactRef: ...

    def local_path(self, ref: ArtifactRef) -> Path: ...

    def exists(self, ref: ArtifactRef) -> bool: ...

    def presigned_url(self, ref: ArtifactRef, expires: timedelta = timedelta(hours=1)) -> str: ...


# errno of a store folder that cannot take a file: read-only, full, over quota, not ours
_UNWRITABLE = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}
INCOMING = ".incoming"  # a file being stored: `<root>/.incoming/<pid>-<random>`, then renamed
STALE_INCOMING_S = 3600.0  # a dead process's incoming file untouched this long is removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class LocalStore:
    """Artifacts as files under one folder (the embedded default, `.foley/store`).

    A file is copied into `<root>/.incoming/<pid>-<random>` and renamed into place, so an
    object is whole or absent. A process killed mid-copy cannot remove its incoming file: the
    next store opened on the folder removes those whose process is gone and which nobody wrote
    to for an hour (a process of another machine sharing the folder looks dead from here: the
    hour is what keeps its copy). A folder that cannot take a file (read-only, full, over
    quota) is `StoreUnavailable`: the pass stops with one line, and the shots are not failed."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()
        self._verified = VerifiedFiles()
        self.sweep_incoming()

    def sweep_incoming(self, *, stale_s: float = STALE_INCOMING_S,
                       now: float | None = None) -> list[Path]:
        """Remove incoming files that dead processes left (see the class); returns them."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        try:
            entries = list(os.scandir(self.root / INCOMING))
        except OSError:  # none yet, or unreadable: nothing to judge
            return removed
        for e in entries:
            pid, _, _ = e.name.partition("-")
            try:
                if (not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid))
                        or now - e.stat(follow_symlinks=False).st_mtime < stale_s):
                    continue
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:  # gone meanwhile, or not ours to remove
                continue
        return removed

    def _unwritable(self, exc: OSError) -> StoreUnavailable:
        reason = f"{exc.strerror or exc} ({exc.filename2 or exc.filename or self.root})"
        return StoreUnavailable(
            f"artifact store {self.root} cannot take a file: {reason}; free space there or "
            "make it writable (FOLEY_STORE_URL names it), then rerun — completed work is kept",
            endpoint=str(self.root), reason=reason)

    def put_file(self, path: str | Path, mime: str | None = None) -> ArtifactRef:
        path = Path(path)
        sha = sha256_file(path)
        dest = self.root / object_key(sha, path.suffix)
        if not dest.exists():
            tmp = None
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                (self.root / INCOMING).mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.root / INCOMING, prefix=f"{os.getpid()}-")
                os.close(fd)
                shutil.copyfile(path, tmp)
                os.replace(tmp, dest)
            except OSError as exc:
                # (a copy names its source first and the store's file second; reading the
                # source is not the store's fault)
                if exc.errno in _UNWRITABLE and (exc.filename2 or exc.filename != str(path)):
                    raise self._unwritable(exc) from exc
                raise
            finally:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
        return make_ref(dest.as_uri(), sha, dest.stat().st_size, mime or guess_mime(path))

    def _path(self, ref: ArtifactRef) -> Path:
        u = urlparse(ref["uri"])
        if u.scheme != "file":
            raise StoreError(f"{ref['uri']} is not in the local store {self.root}")
        return Path(unquote(u.path))

    def local_path(self, ref: ArtifactRef) -> Path:
        """The stored file itself, after checking it still holds the ref's bytes."""
        p = self._path(ref)
        if not p.exists():
            raise StoreError(f"artifact {ref['sha256'][:12]} is missing from the store ({p})")
        self._verified.check(p, ref, str(p))
        return p

    def exists(self, ref: ArtifactRef) -> bool:
        p = self._path(ref)
        return p.exists() and p.stat().st_size == ref["bytes"]

    def presigned_url(self, ref: ArtifactRef, expires: timedelta = timedelta(hours=1)) -> str:
        """The file:// URI (a local folder needs no signature; `expires` is ignored)."""
        if not self.exists(ref):
            raise StoreError(f"artifact {ref['sha256'][:12]} is missing from the store "
                             f"({self._path(ref)})")
        return ref["uri"]


@dataclass(frozen=True)
class S3Config:
    """How to reach an S3 server. Built by `flows.settings` from the standard AWS_* variables."""

    endpoint: str | None = None  # e.g. http://minio:9000; None = AWS
    access_key: str | None = field(default=None, repr=False)
    secret_key: SecretStr | None = None
    region: str = "us-east-1"
    ca_bundle: Path | None = None  # CA certificates for https; None = certifi's
    cache_dir: Path = Path(".foley/cache/s3")  # where local_path() downloads to
    part_size: int = 16 << 20  # multipart above this size, in parts of this size
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0  # longest silence of one socket read (a transfer moving)
    # Longest wait for the answer to a HEAD (a stat or a bucket check: every store call starts
    # with one, and the server has nothing to compute or move for it); at most read_timeout_s.
    head_timeout_s: float = 15.0
    attempts: int = 6  # retry budget for an unreachable server (see retry_io): 15.5 s
    # ... and for one that takes the connection and never answers (read timeouts): with the
    # defaults a call to a hung server fails after 15 + 0.5 + 15 s ≈ 31 s (it was 6 × 60 s of
    # read timeouts + 15.5 s of backoff ≈ 6.3 min)
    hung_attempts: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0


class StoreURLError(ValueError):
    """A store URL foleyflow cannot open (FOLEY_STORE_URL, an s3:// inbox): a setting to fix."""


def open_store(url: str, s3: S3Config | None = None) -> Store:
    """The store at `url`: a folder path, a `file://` URL or `s3://bucket/prefix` (with `s3`)."""
    u = urlparse(url)
    if u.scheme in ("", "file"):
        return LocalStore(unquote(u.path) if u.scheme else url)
    if u.scheme == "s3":
        from tasks.store_s3 import S3Store

        if not u.netloc:
            raise StoreURLError(f"store URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3Store(u.netloc, unquote(u.path).strip("/"), s3 or S3Config())
    raise StoreURLError(f"unsupported store URL {url!r}: use a folder path, file:// or s3:// "
                        "URL")
