"""Find the media file behind each clip of an edit, and read its header.

Part of `tasks.ingest`. Order of the search, first hit wins:
1. the media reference's `target_url` (a `file://` URL, percent-decoded, or a plain path) if
   it is absolute and exists;
2. that path relative to the timeline's folder (and to an unpacked .otioz's folder);
3. its file name in the timeline's folder, then anywhere under `media_root`;
4. by name — the clip's name, the EDL reel, the media reference's name — with or without an
   extension, in the timeline's folder and under `media_root`.
Names are compared after Unicode NFC normalisation (macOS writes NFD), case-sensitively first,
then ignoring case. Of several files a name finds, a movie file beats a sound-only one (a
dual-system shoot keeps `video/A001C003.mov` beside `audio/A001C003.wav`: the clips are picture),
then the one sharing the most folders with the edit's path for it.

`MediaFinder.header` reads a found file's header (`tasks.media.probe` without the packet scan,
one short ffmpeg call a file, once per process while the file is unchanged): the picture's own
frame rate and whether it has video at all.
"""
from __future__ import annotations

import os
import re
import threading
import unicodedata
import urllib.parse
from collections import defaultdict
from pathlib import Path

import opentimelineio as otio

from tasks import media

MEDIA_SUFFIXES = frozenset({
    ".mov", ".mp4", ".m4v", ".mxf", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".mts", ".m2ts",
    ".ts", ".dnx", ".dnxhd", ".r3d", ".braw", ".ari", ".wmv", ".flv", ".3gp", ".y4m", ".ogv",
    ".wav", ".aif", ".aiff", ".bwf",
})
SOUND_SUFFIXES = frozenset({".wav", ".aif", ".aiff", ".bwf"})  # never picture


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _basename(location: str) -> str:
    return re.split(r"[\\/]", location.rstrip("\\/"))[-1]


def url_to_path(url: str) -> str | None:
    """A local path for a media URL or path; None for remote URLs (http, s3, …)."""
    url = url.strip()
    if not url:
        return None
    if url.lower().startswith("file:"):
        try:
            return otio.url_utils.filepath_from_url(url)
        except (IndexError, ValueError):  # "file://" with no path, say
            return urllib.parse.unquote(urllib.parse.urlsplit(url).path) or None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", url):
        return None
    return url


def _host_relative(url: str) -> str:
    """'file://shots/a.wav' (a relative path some writers turn into a URL) → 'shots/a.wav'."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file" and parts.netloc not in ("", "localhost"):
        return urllib.parse.unquote(parts.netloc + parts.path)
    return ""


class _Folder:
    """File names under one folder (recursively or not), indexed for lookups by name."""

    def __init__(self, root: Path, recursive: bool) -> None:
        self.root = root
        # exact name, folded name, exact stem, folded stem (stems of media files only)
        self.tables: tuple[dict[str, list[Path]], ...] = tuple(defaultdict(list) for _ in range(4))
        if not root.is_dir():
            return
        if recursive:
            walk = os.walk(root)
        else:
            walk = iter([(str(root), [], [e.name for e in os.scandir(root) if e.is_file()])])
        for folder, dirs, files in walk:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith("."):
                    continue
                p = Path(folder) / f
                name = _key(f)
                self.tables[0][name].append(p)
                self.tables[1][name.casefold()].append(p)
                if Path(name).suffix.lower() in MEDIA_SUFFIXES:
                    stem = Path(name).stem
                    self.tables[2][stem].append(p)
                    self.tables[3][stem.casefold()].append(p)

    def find(self, name: str, hint: str = "") -> Path | None:
        """A file called `name` (or, without a media extension, `name.<media ext>`)."""
        name = _key(name)
        for table, key in zip(self.tables, (name, name.casefold()) * 2, strict=True):
            hits = table.get(key)
            if hits:
                return _closest(hits, hint)
        return None


def _closest(hits: list[Path], hint: str) -> Path:
    """Of several files with one name, a movie before a sound file (picture clips want
    picture), then the one sharing the most trailing folders with `hint`."""
    if len(hits) == 1:
        return hits[0]
    want = [_key(p) for p in re.split(r"[\\/]", hint) if p][::-1]

    def score(p: Path) -> tuple[bool, int]:
        n = 0
        for a, b in zip([_key(x) for x in p.parts[::-1]], want, strict=False):
            if a != b:
                break
            n += 1
        return p.suffix.lower() not in SOUND_SUFFIXES, n

    return max(hits, key=score)  # the first of equals: walk order


def _exists(p: Path) -> Path | None:
    """`p` if it is a file, else the file whose path differs from it only in Unicode form."""
    if p.is_file():
        return p
    cur = Path(p.anchor) if p.is_absolute() else Path()
    for part in p.parts[1:] if p.is_absolute() else p.parts:
        if (cur / part).exists():
            cur = cur / part
            continue
        try:
            want = _key(part)
            cur = next(cur / e for e in os.listdir(cur or ".") if _key(e) == want)
        except (OSError, StopIteration):
            return None
    return cur if cur.is_file() else None


_HEADERS: dict[tuple[str, int, int], media.MediaInfo | None] = {}
_HEADERS_MAX = 4096
_HEADERS_LOCK = threading.Lock()


def _header(path: str) -> media.MediaInfo | None:
    """`media.probe` of the file's header, once per process while the file is unchanged (its
    size and modification time): `foley run` reads the edit to check it, then the pass reads
    it again, and the overnight scan reads every edit in the inbox each time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    with _HEADERS_LOCK:
        if key in _HEADERS:
            return _HEADERS[key]
    try:
        info: media.MediaInfo | None = media.probe(path, scan_packets=False)
    except (media.MediaError, OSError):
        info = None
    with _HEADERS_LOCK:
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[key] = info
    return info


class MediaFinder:
    """Resolve clips to media files for one timeline (folder listings are cached)."""

    def __init__(self, timeline_dir: Path, media_root: Path | None,
                 bundle_dir: Path | None = None) -> None:
        self.timeline_dir = timeline_dir
        self.media_root = media_root
        self.bundle_dir = bundle_dir
        self._folders: dict[tuple[Path, bool], _Folder] = {}
        self._headers: dict[str, media.MediaInfo | None] = {}

    def header(self, path: str) -> media.MediaInfo | None:
        """What the file's header says (frame rate, streams), read once per file; None when it
        cannot be read as media — the proxy stage reports that, with ffmpeg's reason."""
        if path not in self._headers:
            self._headers[path] = _header(path)
        return self._headers[path]

    def _folder(self, root: Path, recursive: bool) -> _Folder:
        if (root, recursive) not in self._folders:
            self._folders[(root, recursive)] = _Folder(root, recursive)
        return self._folders[(root, recursive)]

    def _search(self, name: str, hint: str = "") -> Path | None:
        roots = [(self.timeline_dir, False)]
        if self.bundle_dir:
            roots.append((self.bundle_dir, True))
        if self.media_root:
            roots.append((self.media_root, True))
        sound = None  # a sound file answers only if no folder has a movie of that name
        for root, recursive in roots:
            hit = self._folder(root, recursive).find(name, hint)
            if hit and hit.suffix.lower() not in SOUND_SUFFIXES:
                return hit
            sound = sound or hit
        return sound

    def places(self, location: str = "") -> str:
        """Where a search looked, for a person reading why a shot was skipped."""
        out = [location] if location and Path(location).is_absolute() else []
        out.append(f"{self.timeline_dir}")
        if self.bundle_dir:
            out.append(f"{self.bundle_dir}")
        out.append(f"{self.media_root} (and below)" if self.media_root else "no --media-root given")
        return ", ".join(out)

    def resolve(self, clip: otio.schema.Clip) -> tuple[str | None, str | None]:
        """(absolute media path, None) or (None, why the clip cannot be used)."""
        ref = clip.media_reference
        if isinstance(ref, otio.schema.GeneratorReference):
            kind = ref.generator_kind or "generator"
            return None, f"no source media: '{clip.name}' is a {kind} generator clip"
        if isinstance(ref, otio.schema.ImageSequenceReference):
            return None, (f"image-sequence media ({ref.target_url_base}{ref.name_prefix}…) is "
                          f"not supported: transcode '{clip.name}' to a movie file")
        location = ""
        if isinstance(ref, otio.schema.ExternalReference) and ref.target_url:
            location = url_to_path(ref.target_url) or ""
            hit = self._by_location(location) or self._by_location(_host_relative(ref.target_url))
            if hit:
                return str(hit.absolute()), None
            base = _basename(location or urllib.parse.urlparse(ref.target_url).path)
            if base:
                hit = self._search(base, location)
                if hit:
                    return str(hit.absolute()), None
        for name in self.names(clip):
            hit = self._search(name, location)
            if hit:
                return str(hit.absolute()), None
        label = _basename(location) if location else (clip.name or "unnamed clip")
        return None, f"media not found: {label} (looked in {self.places(location)})"

    def _by_location(self, location: str) -> Path | None:
        if not location:
            return None
        candidates = [location]
        unquoted = urllib.parse.unquote(location)
        if unquoted != location:
            candidates.append(unquoted)
        for loc in candidates:
            p = Path(loc)
            if p.is_absolute():
                hit = _exists(p)
            else:
                hit = _exists(self.timeline_dir / p) or (
                    _exists(self.bundle_dir / p) if self.bundle_dir else None)
            if hit:
                return hit
        return None

    @staticmethod
    def names(clip: otio.schema.Clip) -> list[str]:
        """The names a clip's media may go by: the clip's, its reference's, its EDL reel's."""
        names = [clip.name, getattr(clip.media_reference, "name", "")]
        cmx = clip.metadata.get("cmx_3600")
        if hasattr(cmx, "get") and isinstance(cmx.get("reel"), str):
            names.append(cmx["reel"])
        out: list[str] = []
        for n in names:
            n = (n or "").strip()
            if n and n not in out and n not in ("AX", "BL", "BLACK"):
                out.append(_basename(n))
        return out
