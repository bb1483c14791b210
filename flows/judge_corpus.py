"""`foley dataset judge`: recordings the synthesizer never saw, for the evaluation's judge.

`foley eval synth` names the category of every rendering with a classifier (the judge) that
must learn from recordings the generator never trained on. The held-out fifth of
`../shared/sfx` gives it 39 recordings (two breaks, two doors): too few to learn a category
from, so its own cross-validated accuracy was 0.54 and it could not measure a semantic
accuracy of 0.8. This module builds a larger judge corpus from Debian packages of free games
whose sound effects are real recordings, listed file by file in a curated manifest
(`models/judge_corpus.csv`: package, version, member — `archive.pk3!inner/path` for a member
of a zip archive inside the package —, category, material, licence, duration, sha256).

`build(out, …)` fetches each package with `apt-get download PKG=VERSION` (or takes the .deb
from `debs`, for a machine without the mirror), reads the listed members straight from the
package's data archive (nothing else is unpacked), checks each file's sha256 against the
manifest, leaves out any row whose sha256 is that of a recording in the sfx folder (the
generator's data; such rows are never fetched) and writes `out/CATEGORY/MATERIAL/PACKAGE_NAME`
with a `catalog.csv` in the sfx folder's format (so `tasks.library.index_library` reads it)
and each package's copyright file under `out/CREDITS/`. Files already in place with the right
hash are kept, so a rerun only fetches what is missing; the catalog is written last,
atomically. The recordings
stay outside the repository (third-party, like ../shared/sfx): the manifest says where they
come from and the builder makes the folder on any machine that reaches the Debian mirror.
"""
from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tasks.store import atomic_write
from tasks.store import sha256_file

MANIFEST = Path(__file__).resolve().parents[1] / "models" / "judge_corpus.csv"
CATALOG_FIELDS = ("path", "category", "material", "action", "caption", "package", "original",
                  "license_ref")
CAPTIONS = {"footsteps": "a footstep", "impacts": "an impact", "breaks": "something breaking",
            "doors": "a door"}


class CorpusError(ValueError):
    """The manifest, a package or a file is not what it should be (the message says which)."""


@dataclass(frozen=True)
class Entry:
    package: str
    version: str
    member: str
    category: str
    material: str
    license: str
    sha256: str

    @property
    def name(self) -> str:
        """The file name it is written under: package, the first 8 hex digits of its sha256
        (games reuse base names in different folders), the member's base name."""
        base = self.member.split("!")[-1].rsplit("/", 1)[-1]
        return f"{self.package}_{self.sha256[:8]}_{base}"

    @property
    def rel_path(self) -> str:
        return f"{self.category}/{self.material or 'misc'}/{self.name}"


def read_manifest(path: Path = MANIFEST) -> list[Entry]:
    """The manifest's rows (CorpusError naming the row and field when one is malformed)."""
    if not Path(path).is_file():
        raise CorpusError(f"{path}: no such manifest")
    entries = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            missing = [k for k in ("package", "version", "member", "category", "sha256")
                       if not (row.get(k) or "").strip()]
            if missing:
                raise CorpusError(f"{path}, line {i}: empty {', '.join(missing)}")
            if len(row["sha256"].strip()) != 64:
                raise CorpusError(f"{path}, line {i}: sha256 must be 64 hex digits")
            entries.append(Entry(row["package"].strip(), row["version"].strip(),
                                 row["member"].strip(), row["category"].strip(),
                                 (row.get("material") or "").strip(),
                                 (row.get("license") or "").strip(),
                                 row["sha256"].strip().lower()))
    names = [e.rel_path for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CorpusError(f"{path}: two rows write the same file: {', '.join(dup[:3])}")
    return entries


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sfx_hashes(sfx: Path) -> set[str]:
    """sha256 of every file under the sfx folder (the generator's recordings)."""
    return {sha256_file(p) for p in Path(sfx).rglob("*")
            if p.is_file() and p.suffix.lower() in (".ogg", ".wav", ".flac", ".mp3")}


def fetch_deb(package: str, version: str, cache: Path, debs: Path | None) -> Path:
    """The package's .deb: from `debs`, from `cache`, else `apt-get download` into `cache`."""
    # apt-get writes an epoch as %3a (warmux-data_1%3a11.04…); other tools drop it
    patterns = [f"{package}_{version.replace(':', '%3a')}_*.deb",
                f"{package}_{version.split(':')[-1]}_*.deb"]
    pattern = patterns[-1]

    def find(folder: Path) -> list[Path]:
        return sorted(p for pat in patterns for p in Path(folder).glob(pat))

    for folder in [d for d in (debs, cache) if d is not None]:
        found = find(folder)
        if found:
            return found[0]
    if debs is not None:
        raise CorpusError(f"{debs}: no {pattern}; put the package's .deb there or leave "
                          "--debs out to fetch it with apt-get")
    cache.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=cache,
                          capture_output=True, text=True)
    found = find(cache)
    if proc.returncode != 0 or not found:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise CorpusError(f"cannot fetch {package}={version} with apt-get"
                          f"{': ' + why[-1] if why else ''}; download the .deb where the Debian "
                          "mirror is reachable and pass its folder with --debs")
    return found[0]


def _iter_package(deb: Path) -> Iterable[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """The package's files, streamed (dpkg-deb decompresses whatever the format; nothing is
    held but the member being read)."""
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise CorpusError("dpkg-deb is not installed: install the dpkg package (Debian and "
                          "Ubuntu have it) to read .deb files") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                yield tar, info
    except tarfile.TarError as exc:
        proc.kill()
        raise CorpusError(f"{deb}: not a readable Debian package ({exc}; "
                          f"{proc.stderr.read().decode(errors='replace').strip()})") from None
    finally:
        proc.stdout.close()
        if proc.wait() not in (0, -9):
            raise CorpusError(f"{deb}: not a readable Debian package "
                              f"({proc.stderr.read().decode(errors='replace').strip()})")
        proc.stderr.close()


# --- archives inside packages: games keep their sounds in their own container formats ------

def _zip_members(data: bytes) -> dict[str, Callable[[], bytes]]:
    """A zip archive (Quake .pk3, LÖVE .love, .zip)."""
    z = zipfile.ZipFile(io.BytesIO(data))
    return {n: (lambda n=n: z.read(n)) for n in z.namelist()}


def _c4group_members(data: bytes) -> dict[str, Callable[[], bytes]]:
    """An OpenClonk group (.ocg / .c4g): a gzip stream whose magic reads 1e 8c instead of
    1f 8b; in it a 204-byte header and 316-byte entries scrambled (bytes 0 and 2 of every
    3-byte block swapped, then each byte XOR 237); sub-groups are stored inline and named
    here as folders (`Hits.ocg/Wood1.ogg`)."""
    import gzip
    import struct

    header, entry = 204, 316

    def unscramble(b: bytes) -> bytes:
        x = bytearray(b)
        for i in range(0, len(x) - 2, 3):
            x[i], x[i + 2] = x[i + 2], x[i]
        return bytes(v ^ 237 for v in x)

    buf = gzip.decompress(b"\x1f\x8b" + data[2:])
    out: dict[str, Callable[[], bytes]] = {}

    def walk(base: int, prefix: str) -> None:
        h = unscramble(buf[base:base + header])
        if not h.startswith(b"RedWolf Design G"):
            raise CorpusError("not an OpenClonk group (bad header)")
        (count,) = struct.unpack("<i", h[36:40])
        table, start = base + header, base + header + count * entry
        for i in range(count):
            e = buf[table + i * entry:table + (i + 1) * entry]
            name = e[:260].split(b"\0")[0].decode("latin-1")
            _packed, child, size, _r, offset = struct.unpack("<iiiii", e[260:280])
            if child:
                walk(start + offset, f"{prefix}{name}/")
            else:
                lo = start + offset
                out[prefix + name] = lambda lo=lo, size=size: buf[lo:lo + size]

    walk(0, "")
    return out


def _rcc_members(data: bytes) -> dict[str, Callable[[], bytes]]:
    """A Qt binary resource file (.rcc, "qres"): a tree of nodes over a name table and a data
    table; a file's bytes are stored raw or zlib-compressed (qCompress: 4-byte length first)."""
    import struct
    import zlib

    if data[:4] != b"qres":
        raise CorpusError("not a Qt resource file (no qres magic)")
    version, tree, table, names = struct.unpack(">IIII", data[4:20])
    node = 14 if version == 1 else 22
    out: dict[str, Callable[[], bytes]] = {}

    def name(offset: int) -> str:
        (n,) = struct.unpack(">H", data[names + offset:names + offset + 2])
        return data[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")

    def read(offset: int, flags: int) -> bytes:
        (size,) = struct.unpack(">I", data[table + offset:table + offset + 4])
        raw = data[table + offset + 4:table + offset + 4 + size]
        if flags & 4:
            raise CorpusError("a zstd-compressed Qt resource: not supported")
        return zlib.decompress(raw[4:]) if flags & 1 else raw

    def walk(i: int, prefix: str) -> None:
        o = tree + i * node
        name_offset, flags = struct.unpack(">IH", data[o:o + 6])
        here = name(name_offset) if i > 0 else ""
        if flags & 2:
            count, first = struct.unpack(">II", data[o + 6:o + 14])
            for c in range(first, first + count):
                walk(c, f"{prefix}{here}/" if i > 0 else "")
        else:
            (offset,) = struct.unpack(">I", data[o + 10:o + 14])
            out[prefix + here] = lambda offset=offset, flags=flags: read(offset, flags)

    walk(0, "")
    return out


ARCHIVES = {".pk3": _zip_members, ".pk4": _zip_members, ".love": _zip_members,
            ".zip": _zip_members, ".ocg": _c4group_members, ".c4g": _c4group_members,
            ".rcc": _rcc_members}


def _archive(path: str, data: bytes) -> dict[str, Callable[[], bytes]]:
    kind = ARCHIVES.get(Path(path).suffix.lower())
    if kind is None:
        raise CorpusError(f"{path}: no reader for {Path(path).suffix or 'this'} archives "
                          f"(known: {', '.join(sorted(ARCHIVES))})")
    return kind(data)


def _norm(member: str) -> str:
    return member[2:] if member.startswith("./") else member.lstrip("/")


def read_members(deb: Path, members: Iterable[str]) -> tuple[dict[str, bytes], bytes | None]:
    """The bytes of `members` of the package (`a.pk3!x/y.ogg`: x/y.ogg inside the archive a.pk3,
    see ARCHIVES) and its copyright file (None if it has none). CorpusError for a member it
    lacks."""
    wanted = list(members)
    outer = {_norm(m.split("!")[0]) for m in wanted}
    files: dict[str, bytes] = {}
    copyright_ = None
    for tar, info in _iter_package(deb):
        name = _norm(info.name)
        if not info.isfile():
            continue
        if name in outer:
            files[name] = tar.extractfile(info).read()
        elif name.startswith("usr/share/doc/") and name.endswith("/copyright"):
            copyright_ = tar.extractfile(info).read()
    out: dict[str, bytes] = {}
    archives: dict[str, dict[str, Callable[[], bytes]]] = {}
    for m in wanted:
        head, _, inner = m.partition("!")
        data = files.get(_norm(head))
        if data is None:
            raise CorpusError(f"{deb.name}: no {head} in the package")
        if inner:
            if head not in archives:
                archives[head] = _archive(head, data)
            if inner not in archives[head]:
                raise CorpusError(f"{deb.name}: no {inner} in {head}")
            data = archives[head][inner]()
        out[m] = data
    return out, copyright_


def build(out: Path, *, manifest: Path = MANIFEST, sfx: Path, debs: Path | None = None,
          log: Callable[[str], Any] = print,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the judge corpus to `out` (see module doc). Returns {recordings, per_category,
    excluded (rows whose bytes are an sfx recording), packages}."""
    entries = read_manifest(manifest)
    out = Path(out)
    cache = out / ".debs"
    known = sfx_hashes(sfx)
    kept: list[Entry] = []
    excluded: list[str] = []
    packages = sorted({(e.package, e.version) for e in entries})
    for i, (package, version) in enumerate(packages):
        rows = [e for e in entries if (e.package, e.version) == (package, version)]
        excluded += [f"{package}:{e.member}" for e in rows if e.sha256 in known]
        rows = [e for e in rows if e.sha256 not in known]
        todo = [e for e in rows if not _in_place(out / e.rel_path, e.sha256)]
        if todo:
            deb = fetch_deb(package, version, cache, debs)
            data, copyright_ = read_members(deb, [e.member for e in todo])
            for e in todo:
                got = sha256_bytes(data[e.member])
                if got != e.sha256:
                    raise CorpusError(f"{package} {version}: {e.member} has sha256 {got[:12]}…, "
                                      f"the manifest says {e.sha256[:12]}…: the package changed; "
                                      "fix the manifest row")
                _write_bytes(out / e.rel_path, data[e.member])
            if copyright_ is not None:
                _write_bytes(out / "CREDITS" / f"{package}.copyright", copyright_)
            if deb.parent == cache:  # fetched here: its files are out, the package can go
                deb.unlink()
        kept += rows
        log(f"{package} {version}: {len(rows)} recordings ({len(todo)} fetched)")
        if progress is not None:
            progress(i + 1, len(packages))
    if excluded:
        log(f"left out {len(excluded)} file(s) identical to sfx recordings: "
            f"{', '.join(excluded[:3])}{', …' if len(excluded) > 3 else ''}")
    _write_catalog(out / "catalog.csv", kept)
    per_category: dict[str, int] = {}
    for e in kept:
        per_category[e.category] = per_category.get(e.category, 0) + 1
    return {"recordings": len(kept), "per_category": dict(sorted(per_category.items())),
            "excluded": excluded, "packages": [f"{p}={v}" for p, v in packages]}


def _in_place(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_bytes(data))


def _write_catalog(path: Path, entries: list[Entry]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CATALOG_FIELDS)
            w.writeheader()
            for e in sorted(entries, key=lambda e: e.rel_path):
                caption = CAPTIONS.get(e.category, e.category)
                if e.material:
                    caption += f" ({e.material})"
                w.writerow({"path": e.rel_path, "category": e.category,
                            "material": e.material, "action": "", "caption": caption,
                            "package": e.package,
                            "original": e.member.split("!")[-1].rsplit("/", 1)[-1],
                            "license_ref": f"CREDITS/{e.package}.copyright"})

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
