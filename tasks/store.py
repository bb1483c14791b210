"""Content-addressed artifact store: a local folder by default, S3 / MinIO in a studio.

An artifact ref is `{uri, sha256, bytes, mime}`. The key is derived from the content hash, so
writing the same bytes twice is a no-op; a write lands under a temporary name and is renamed
into place, so a crash never leaves a half-written object under a real key.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

ArtifactRef = dict[str, Any]
CHUNK = 1 << 20

mimetypes.add_type("application/x-npz", ".npz")
mimetypes.add_type("audio/wav", ".wav")
mimetypes.add_type("application/json", ".json")
mimetypes.add_type("application/vnd.opentimelineio+json", ".otio")


class StoreError(OSError):
    """An artifact is missing or does not match its hash."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def guess_mime(path: str | Path) -> str:
    return mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def object_key(sha256: str, suffix: str) -> str:
    """`ab/cd/abcd….wav`: fan-out folders keep directory listings short."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix.lower()}"


class Store(Protocol):
    """What every artifact store offers."""

    url: str

    def put_file(self, path: str | Path, mime: str | None = None) -> ArtifactRef: ...

    def local_path(self, ref: ArtifactRef) -> Path: ...

    def exists(self, ref: ArtifactRef) -> bool: ...


class LocalStore:
    """Artifacts as files under one folder (the embedded default, `.foley/store`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def put_file(self, path: str | Path, mime: str | None = None) -> ArtifactRef:
        path = Path(path)
        sha = sha256_file(path)
        dest = self.root / object_key(sha, path.suffix)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return {
            "uri": dest.as_uri(),
            "sha256": sha,
            "bytes": dest.stat().st_size,
            "mime": mime or guess_mime(path),
        }

    def _path(self, ref: ArtifactRef) -> Path:
        u = urlparse(ref["uri"])
        if u.scheme != "file":
            raise StoreError(f"{ref['uri']} is not in the local store {self.root}")
        return Path(unquote(u.path))

    def local_path(self, ref: ArtifactRef) -> Path:
        p = self._path(ref)
        if not p.exists():
            raise StoreError(f"artifact {ref['sha256'][:12]} is missing from the store ({p})")
        if p.stat().st_size != ref["bytes"]:
            raise StoreError(f"artifact {p} is {p.stat().st_size} bytes, expected {ref['bytes']}")
        return p

    def exists(self, ref: ArtifactRef) -> bool:
        p = self._path(ref)
        return p.exists() and p.stat().st_size == ref["bytes"]


def open_store(url: str) -> Store:
    """The store at `url`: a folder path or `file://` URL."""
    u = urlparse(url)
    if u.scheme in ("", "file"):
        return LocalStore(unquote(u.path) if u.scheme else url)
    raise ValueError(f"unsupported store URL {url!r}: use a folder path or file:// URL")
