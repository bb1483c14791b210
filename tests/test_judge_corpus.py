"""`foley dataset judge` (flows/judge_corpus.py) on a real Debian package built here with
dpkg-deb: members read from the package and from a zip inside it, checked against the
manifest's sha256, files identical to an sfx recording left out, reruns fetch nothing, bad
manifests and missing packages refused with exit 2; and `foley eval synth`'s judge learning
from such a corpus."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app
from flows.judge_corpus import read_manifest, CorpusError

SFX = Path(__file__).resolve().parents[2] / "shared" / "sfx"
PKG, VER = "foley-test-sounds", "1.0-1"


def _reencoded(src: Path, dst: Path, gain: float) -> bytes:
    """Another recording: the sfx file at another gain, encoded anew (other bytes)."""
    audio, sr = sf.read(src, dtype="float32")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, audio * gain, sr, format="OGG", subtype="VORBIS")
    return dst.read_bytes()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A .deb with a door recording, a footstep inside a .pk3 (zip) and a byte-for-byte copy
    of an sfx recording; the manifest listing all three."""
    root = tmp_path_factory.mktemp("deb")
    tree = root / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {PKG}\nVersion: {VER}\nArchitecture: all\nMaintainer: foleyflow tests "
        "<tests@example.org>\nDescription: sounds for the judge corpus test\n")
    doc = tree / "usr" / "share" / "doc" / PKG
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: CC-BY-SA-3.0\n")
    game = tree / "usr" / "share" / "games" / "test"
    door = _reencoded(SFX / "doors/wood/ufoai_door1-close.ogg", game / "sounds" / "door_slam.ogg",
                      0.5)
    step = _reencoded(SFX / "footsteps/carpet/ufoai_carpet1.ogg", root / "step.ogg", 0.7)
    with zipfile.ZipFile(game / "base.pk3", "w") as z:
        z.writestr("sound/steps/step_carpet.ogg", step)
    copy = SFX / "footsteps/carpet/ufoai_carpet2.ogg"
    shutil.copy(copy, game / "sounds" / "carpet2.ogg")
    debs = root / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree),
                    str(debs / f"{PKG}_{VER}_all.deb")], check=True, capture_output=True)
    rows = [("usr/share/games/test/sounds/door_slam.ogg", "doors", "wood", door),
            ("usr/share/games/test/base.pk3!sound/steps/step_carpet.ogg", "footsteps",
             "carpet", step),
            ("usr/share/games/test/sounds/carpet2.ogg", "footsteps", "carpet",
             copy.read_bytes())]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["package", "version", "member", "category", "material", "license",
                    "duration_s", "sha256"])
        for member, cat, mat, data in rows:
            w.writerow([PKG, VER, member, cat, mat, "CC-BY-SA-3.0", "0.5",
                        hashlib.sha256(data).hexdigest()])
    return debs, manifest


def _judge(*args: str):
    return CliRunner().invoke(app, ["dataset", "judge", *args])


def test_builds_the_corpus_from_the_package(package, tmp_path):
    debs, manifest = package
    out = tmp_path / "judge"
    res = _judge(str(out), "--manifest", str(manifest), "--debs", str(debs), "--sfx", str(SFX))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["recordings"] == 2 and report["per_category"] == {"doors": 1, "footsteps": 1}
    assert report["excluded"] == [f"{PKG}:usr/share/games/test/sounds/carpet2.ogg"]
    with open(out / "catalog.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].split("_", 1)[0] for r in rows] == [f"doors/wood/{PKG}",
                                                          f"footsteps/carpet/{PKG}"]
    assert [r["original"] for r in rows] == ["door_slam.ogg", "step_carpet.ogg"]
    for r in rows:
        audio, sr = sf.read(out / r["path"])
        assert len(audio) > 0 and r["license_ref"] == f"CREDITS/{PKG}.copyright"
    assert "CC-BY-SA-3.0" in (out / "CREDITS" / f"{PKG}.copyright").read_text()
    assert not list(out.rglob("*carpet2.ogg"))
    # a rerun finds every file in place and reads no package; the copy is never fetched
    (tmp_path / "empty").mkdir()
    res = _judge(str(out), "--manifest", str(manifest), "--debs", str(tmp_path / "empty"),
                 "--sfx", str(SFX))
    assert res.exit_code == 0 and "2 recordings (0 fetched)" in res.output, res.output
    assert json.loads(res.stdout)["recordings"] == 2


def test_refuses_a_changed_file_and_a_missing_package(package, tmp_path):
    debs, manifest = package
    rows = manifest.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows[:2] + [rows[2][:-64] + "0" * 64]) + "\n")
    res = _judge(str(tmp_path / "out"), "--manifest", str(bad), "--debs", str(debs),
                 "--sfx", str(SFX))
    assert res.exit_code == 2 and "step_carpet.ogg has sha256" in res.output, res.output
    assert not (tmp_path / "out" / "catalog.csv").exists()
    (tmp_path / "none").mkdir()
    res = _judge(str(tmp_path / "out2"), "--manifest", str(manifest), "--debs",
                 str(tmp_path / "none"), "--sfx", str(SFX))
    assert res.exit_code == 2 and f"no {PKG}_1.0-1_*.deb" in res.output, res.output
    broken = tmp_path / "broken.csv"
    broken.write_text("package,version,member,category,sha256\nx,1,,doors,abc\n")
    with pytest.raises(CorpusError, match="line 2: empty member"):
        read_manifest(broken)


def _c4group(files: dict[str, bytes], sub: dict[str, dict[str, bytes]]) -> bytes:
    """An OpenClonk group as the game writes one: scrambled headers, a gzip stream with the
    1e 8c magic; `sub` groups stored inline."""
    import gzip
    import struct

    def scramble(b: bytes) -> bytes:
        x = bytearray(v ^ 237 for v in b)
        for i in range(0, len(x) - 2, 3):
            x[i], x[i + 2] = x[i + 2], x[i]
        return bytes(x)

    def group(entries: list[tuple[str, bytes, bool]]) -> bytes:
        header = bytearray(204)
        header[:24] = b"RedWolf Design GrpFolder"
        header[28:40] = struct.pack("<iii", 1, 2, len(entries))
        table, data = b"", b""
        for name, body, child in entries:
            table += name.encode().ljust(260, b"\0") + struct.pack(
                "<iiiii", 0, int(child), len(body), 0, len(data)) + bytes(36)
            data += body
        return scramble(bytes(header)) + table + data

    inner = [(n, group([(k, v, False) for k, v in fs.items()]), True) for n, fs in sub.items()]
    raw = gzip.compress(group([(k, v, False) for k, v in files.items()] + inner))
    return b"\x1e\x8c" + raw[2:]


def _rcc(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A version-1 Qt resource file holding `files` in one folder `snd` (compressed ones
    stored as qCompress: 4-byte length, then zlib)."""
    import struct
    import zlib

    names, data, nodes = b"", b"", []

    def name(text: str) -> int:
        nonlocal names
        offset = len(names)
        names += struct.pack(">HI", len(text), 0) + text.encode("utf-16-be")
        return offset

    def blob(body: bytes, compress: bool) -> int:
        nonlocal data
        offset = len(data)
        stored = struct.pack(">I", len(body)) + zlib.compress(body) if compress else body
        data += struct.pack(">I", len(stored)) + stored
        return offset

    nodes.append(struct.pack(">IHII", 0, 2, 1, 1))                      # root: one child
    nodes.append(struct.pack(">IHII", name("snd"), 2, len(files), 2))  # the folder
    for fname, (body, compress) in files.items():
        nodes.append(struct.pack(">IHHHI", name(fname), int(compress), 0, 0, blob(body, compress)))
    tree = b"".join(nodes)
    head = 20
    return (b"qres" + struct.pack(">IIII", 1, head, head + len(tree), head + len(tree) + len(data))
            + tree + data + names)


def test_reads_members_of_openclonk_groups_and_qt_resources(tmp_path):
    """The game-archive readers behind `a.ocg!x/y.ogg` and `a.rcc!x/y.ogg` members."""
    from flows.judge_corpus import _archive

    group = _c4group({"Hit1.ogg": b"one"}, {"Wood.ocg": {"WoodHit1.ogg": b"wood hit"}})
    members = _archive("Sound.ocg", group)
    assert members["Hit1.ogg"]() == b"one" and members["Wood.ocg/WoodHit1.ogg"]() == b"wood hit"
    res = _archive("voices.rcc", _rcc({"door.wav": (b"a door" * 10, False),
                                       "step.ogg": (b"a step" * 10, True)}))
    assert res["snd/door.wav"]() == b"a door" * 10 and res["snd/step.ogg"]() == b"a step" * 10
    with pytest.raises(CorpusError, match="no reader for .wad"):
        _archive("doom.wad", b"")
    with pytest.raises(CorpusError, match="qres"):
        _archive("x.rcc", b"nope")
