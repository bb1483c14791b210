"""The delivery folder `foley run EDIT --out DIR` writes: what it refuses before any work, and
what a delivery never does to what is already there.

Refused up front (one line naming --out and what to do, exit 2, nothing written — no folder,
no database): a DIR that is a file (or lies under one); a DIR where the delivery would write
its `<reel>.otio` / `.xml` / `.aaf` over the input edit itself; a DIR holding another reel's
delivery. Behind that, `deliver()` itself never replaces another reel's delivery (a review
re-conform into a folder another reel has since taken). A review re-conform after the edit was
moved reuses the delivery, stamped as before (not 1970). And a change to the code that writes
the stems (the BWF writer, the spatial stage's float WAV writer) re-renders what it wrote.

A two-shot demo reel is passed once per module (in process, real media); the refusals run the
real `foley` command.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import opentimelineio as otio
import pytest

from flows.demo import DEMO_SHOTS, make_demo_reel
from tasks import runtime, timeline_io
from tasks.bwf import read_bwf_info
from tests.fixtures_otio import media_clip

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FOLEY = [str(Path(sys.executable).with_name("foley"))]
REEL, OTHER = "reel_a", "reel_b"
SHOTS = (DEMO_SHOTS[0], DEMO_SHOTS[3])


def foley(*args: str, home: Path, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """`foley ARGS` with its own home, on the session's Prefect server."""
    cmd = FOLEY if Path(FOLEY[0]).exists() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, env={**os.environ, "FOLEY_HOME": str(home),
                                                       **(env or {})},
                          capture_output=True, text=True, timeout=900)


def refused(proc: subprocess.CompletedProcess[str], *says: str) -> None:
    """Exit 2 with one error line saying `says`, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr
    for s in says:
        assert s in proc.stderr, proc.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) by relative path, with its content hash."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return {t: c.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("reels", "shots", "activities", "artifacts")}


def runs(db: Path, task: str) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as c:
        return c.execute("select id, code_version from activities where task = ? and "
                         "status = 'completed' order by id", (task,)).fetchall()


def tiny_edit(path: Path) -> Path:
    """A one-clip edit named after its file (its media is missing: the shot would be skipped,
    the pass would still run and deliver)."""
    tl = otio.schema.Timeline(name=path.stem)
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    track.append(media_clip("clip 1", "media/missing.mp4", 0, 48, 24, media_duration=100))
    tl.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".otio":
        otio.adapters.write_to_file(tl, str(path))
    else:  # FCP7 XML, AAF: as foleyflow delivers them
        timeline_io.write_timeline(tl, path)
    return path


# ---------------------------------------------------------------- refused before any work


def test_out_that_is_a_file_is_refused_before_the_pass(tmp_path: Path) -> None:
    edit = tiny_edit(tmp_path / "cut" / "tiny.otio")
    notes = tmp_path / "notes.txt"
    notes.write_text("the editor's notes\n")
    proc = foley("run", str(edit), "--out", str(notes), home=tmp_path / "home", cwd=tmp_path)
    refused(proc, f"--out {notes} is a file, not a folder")
    assert notes.read_text() == "the editor's notes\n"
    assert not (tmp_path / "home").exists()
    proc = foley("run", str(edit), "--out", str(notes / "reel1"), home=tmp_path / "home",
                 cwd=tmp_path)
    refused(proc, f"{notes} is a file, so the delivery folder cannot be made there")
    assert not (tmp_path / "home").exists()


def test_reading_the_manual_makes_nothing_on_disk(tmp_path: Path) -> None:
    """`foley --help` typed in a media folder leaves no `.foley/` there."""
    cmd = FOLEY if Path(FOLEY[0]).exists() else [sys.executable, "-m", "flows.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOLEY_", "PREFECT_"))}
    for args in ([], ["--help"], ["run", "--help"], ["review", "serve", "--help"]):
        proc = subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert "Usage: foley" in proc.stdout + proc.stderr, proc.stderr
        assert list(tmp_path.iterdir()) == [], (args, list(tmp_path.rglob("*")))


@pytest.mark.parametrize("setting, says", [
    ({"FOLEY_DB_URL": "bogus://x"}, "the database URL cannot be used (Can't load plugin"),
    ({"FOLEY_STORE_URL": "ftp://x/y"}, "unsupported store URL 'ftp://x/y'"),
    ({"FOLEY_WORKERS": "abc"}, "FOLEY_WORKERS='abc': Input should be a valid integer"),
    ({"FOLEY_HOME": "/proc/nope"}, "FOLEY_HOME=/proc/nope cannot be used")])
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, setting: dict, says: str) -> None:
    """README: every command exits 2 on bad input named in one line; a setting is input."""
    env = {"FOLEY_HOME": str(tmp_path / "home"), **setting}
    proc = foley("review", "list", home=tmp_path / "home", cwd=tmp_path, env=env)
    refused(proc, says)
    assert "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("ext", ["otio", "xml", "aaf"])
def test_out_beside_the_edit_never_overwrites_it(tmp_path: Path, ext: str) -> None:
    """`foley run cut/tiny.EXT --out cut` would deliver cut/tiny.EXT over the editor's edit."""
    edit = tiny_edit(tmp_path / "cut" / f"tiny.{ext}")
    before = snapshot(edit.parent)
    proc = foley("run", str(edit), "--out", str(edit.parent), home=tmp_path / "home",
                 cwd=tmp_path)
    refused(proc, f"the delivery would write tiny.{ext} over the edit", "choose another --out")
    assert snapshot(edit.parent) == before
    assert not (tmp_path / "home").exists()


def test_the_check_reads_only_and_passes_what_is_safe(tmp_path: Path) -> None:
    """Beside an edit the delivery does not overwrite (another name), into a folder of the same
    reel's earlier delivery, or a folder still to be made: no objection, nothing made. A
    manifest.json foleyflow did not write would be replaced: refused."""
    from tasks.delivery import DeliveryFolderError, check_delivery_folder

    edit = tiny_edit(tmp_path / "cut" / "tiny.otio")
    check_delivery_folder(edit.parent, "reel 1", edit=edit)
    check_delivery_folder(tmp_path / "new" / "reel 1", "tiny", edit=edit)
    assert not (tmp_path / "new").exists()
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "manifest.json").write_text(json.dumps({"reel": "tiny", "files": {}}))
    check_delivery_folder(tmp_path / "same", "tiny", edit=edit)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "manifest.json").write_text(json.dumps({"name": "stems", "v": 3}))
    with pytest.raises(DeliveryFolderError, match="not a foleyflow delivery manifest"):
        check_delivery_folder(tmp_path / "theirs", "tiny", edit=edit)
    (tmp_path / "same" / "shots" / "SH010").mkdir(parents=True)  # the edit's media, where a
    media = tmp_path / "same" / "shots" / "SH010" / "tiny_SH010_foley_mono.wav"  # stem goes
    media.write_bytes(b"RIFF")
    with pytest.raises(DeliveryFolderError, match="over media of the edit"):
        check_delivery_folder(tmp_path / "same", "tiny", edit=edit, media=[media])


# ---------------------------------------------------------------- a delivered reel


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict:
    """Reel A passed once (in process) into its delivery folder; reel B is the same cut under
    another name, beside it (not passed)."""
    from flows.foley_pass import foley_pass

    root = tmp_path_factory.mktemp("delivery-folder")
    edit = make_demo_reel(root / "edit", name=REEL, shots=SHOTS)
    tl = otio.adapters.read_from_file(str(edit))
    tl.name = OTHER
    other = edit.with_name(f"{OTHER}.otio")
    otio.adapters.write_to_file(tl, str(other))
    home, out = root / "home", root / "delivery a"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOLEY_HOME", str(home))
        mp.delenv("FOLEY_DB_URL", raising=False)
        mp.delenv("FOLEY_STORE_URL", raising=False)
        report = foley_pass(str(edit), str(out))
    assert report.exit_code == 0, report.failed
    return {"root": root, "edit": edit, "other": other, "home": home, "out": out,
            "db": home / "foley.db", "manifest": json.loads((out / "manifest.json").read_text())}


@pytest.fixture
def in_home(delivered: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """This process works in the delivered reel's home."""
    from flows.settings import get_settings

    monkeypatch.setenv("FOLEY_HOME", str(delivered["home"]))
    monkeypatch.delenv("FOLEY_DB_URL", raising=False)
    monkeypatch.delenv("FOLEY_STORE_URL", raising=False)
    get_settings().configure_runtime()
    yield delivered


def delivery_dir(db: Path, reel: str) -> Path:
    with sqlite3.connect(db) as c:
        return Path(c.execute("select delivery_dir from reels where name = ?",
                              (reel,)).fetchone()[0])


def test_a_second_reel_into_the_folder_is_refused_before_the_pass(delivered: dict) -> None:
    out, db = delivered["out"], delivered["db"]
    before, rows = snapshot(out), counts(db)
    proc = foley("run", str(delivered["other"]), "--out", str(out), home=delivered["home"],
                 cwd=delivered["root"])
    refused(proc, f"--out {out} holds the delivery of reel {REEL!r}",
            "give each reel its own folder")
    assert snapshot(out) == before  # reel A's delivery is whole
    assert counts(db) == rows       # and reel B was not even ingested


def test_a_delivery_is_never_made_around_or_inside_another(delivered: dict) -> None:
    """README: each reel gets a folder of its own. A --out that holds another reel's delivery
    a folder down (a root of deliveries), or lies inside one (its shots/ folder), is refused
    like the folder itself: the files would mix, and no manifest would list them all."""
    out, root, db = delivered["out"], delivered["root"], delivered["db"]
    before, rows = snapshot(out), counts(db)
    for bad, says in ((root, f"holds the delivery of reel {REEL!r} in {out.name}/"),
                      (out / "shots" / "SH010", f"is inside the delivery of reel {REEL!r}")):
        proc = foley("run", str(delivered["other"]), "--out", str(bad), home=delivered["home"],
                     cwd=root)
        refused(proc, f"--out {bad} {says}", "a folder of its own")
    assert not (root / "manifest.json").exists() and not (out / "shots" / "SH010" / "shots").exists()
    assert snapshot(out) == before and counts(db) == rows


def test_a_re_conform_after_the_edit_moved_reuses_the_delivery(in_home: dict) -> None:
    """The editor archives the edit; a review re-conform then renders nothing and stamps the
    stems as the pass did (the edit's save time), never 1970-01-01."""
    from flows.review import apply_decisions

    db, edit = in_home["db"], in_home["edit"]
    out = delivery_dir(db, REEL)
    stem = out / in_home["manifest"]["shots"][0]["stems"]["stereo"]
    stamp = read_bwf_info(stem)["origination_date"]
    assert not stamp.startswith("1970")
    before, conforms = snapshot(out), runs(db, "conform")
    archived = edit.with_name(edit.name + ".archived")
    edit.rename(archived)
    try:
        report = apply_decisions(REEL, reason="re-conform after the edit moved")
    finally:
        archived.rename(edit)
    assert report.conformed
    assert runs(db, "conform") == conforms  # reused: nothing re-rendered
    assert read_bwf_info(stem)["origination_date"] == stamp
    assert snapshot(out) == before


def test_a_re_conform_never_replaces_another_reels_delivery(in_home: dict) -> None:
    """Reel A's folder was archived and reel B delivered where it was; A's review re-conform
    into its recorded folder is refused, B's delivery untouched."""
    from flows.foley_pass import foley_pass
    from flows.review import apply_decisions

    db = in_home["db"]
    out = delivery_dir(db, REEL)
    archived = out.with_name(out.name + " (archived)")
    out.rename(archived)
    try:
        report = foley_pass(str(in_home["other"]), str(out))
        assert report.exit_code == 0, report.failed
        theirs = snapshot(out)
        assert json.loads((out / "manifest.json").read_text())["reel"] == OTHER
        with pytest.raises(ValueError, match=f"holds the delivery of reel {OTHER!r}"):
            apply_decisions(REEL, reason="re-conform into a folder reel B has taken")
        assert snapshot(out) == theirs
        from db import review
        from review import auth

        with runtime.db().session() as s:
            review.create_user(s, "anna", "supervisor", auth.hash_password("correct horse"))
        proc = foley("review", "approve", REEL, "SH010", "--by", "anna", home=in_home["home"],
                     cwd=in_home["root"])
        refused(proc, f"holds the delivery of reel {OTHER!r}",  # one line, not a traceback
                "the decision is recorded: do not decide again")
        assert snapshot(out) == theirs
    finally:
        shutil.rmtree(out, ignore_errors=True)
        archived.rename(out)


def test_a_change_to_the_stem_writers_re_renders_what_they_wrote(delivered: dict,
                                                                 tmp_path: Path) -> None:
    """The same pass with the code of tasks/bwf.py (every delivered WAV) and tasks/wavfloat.py
    (the spatial stems) changed: the spatial and conform stages run again (README: cached
    results are keyed by content, parameters and code version)."""
    code = tmp_path / "code"
    shutil.copytree(REPO / "tasks", code / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("bwf.py", "wavfloat.py"):
        with open(code / "tasks" / name, "a") as f:
            f.write("\n# a fix to the writer\n")
    db = delivered["db"]
    spatial, conforms = runs(db, "spatial"), runs(db, "conform")
    out = delivered["root"] / "delivery code"
    proc = foley("run", str(delivered["edit"]), "--out", str(out), home=delivered["home"],
                 cwd=delivered["root"],
                 env={"PYTHONPATH": os.pathsep.join(filter(None, [
                     str(code), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new_spatial = [r for r in runs(db, "spatial") if r not in spatial]
    new_conform = [r for r in runs(db, "conform") if r not in conforms]
    assert len(new_spatial) == len(SHOTS), (spatial, new_spatial)
    assert len(new_conform) == 1, (conforms, new_conform)
    assert new_conform[0][1] not in {v for _, v in conforms}
    assert (out / "manifest.json").exists()


KILLED_DELIVERY = r'''
import json, os, signal, sys
from pathlib import Path
from flows.settings import get_settings
from tasks import delivery, runtime

get_settings().configure_runtime()
store, out, work = runtime.store(), Path(sys.argv[1]), Path(sys.argv[2])

def put(rel, data):
    p = work / rel.replace("/", "_")
    p.write_text(data)
    return store.put_file(p, "text/plain")

def render(files):
    refs = {rel: put(rel, text) for rel, text in files.items()}
    man = {"reel": "r1", "files": {rel: ref["sha256"] for rel, ref in refs.items()}}
    return refs | {"manifest.json": put("manifest.json", json.dumps(man))}

first = render({"r1_foley_stereo.wav": "v1", "shots/SH010/envelope_v1.json": "v1"})
second = render({"r1_foley_stereo.wav": "v2", "shots/SH010/envelope_v2.json": "v2"})
third = render({"r1_foley_stereo.wav": "v3", "shots/SH010/envelope_v3.json": "v3"})
if sys.argv[3] == "first":
    delivery.deliver(first, out)
elif sys.argv[3] == "killed":  # kill -9 as the stale envelope_v1.json is removed
    real = Path.unlink
    def unlink(self, *a, **k):
        if self.name == "envelope_v1.json":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **k)
    Path.unlink = unlink
    delivery.deliver(second, out)
elif sys.argv[3] == "first-killed":  # kill -9 during a first delivery's second copy
    import shutil
    real_copy, copies = shutil.copyfile, []
    def copyfile(*a, **k):
        copies.append(a)
        if len(copies) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_copy(*a, **k)
    shutil.copyfile = copyfile
    delivery.deliver(first, out)
else:  # the next retake
    delivery.deliver(third, out)
'''


def delivering(tmp_path: Path, script: str = KILLED_DELIVERY, *, prefix: Sequence[str] = ()
               ) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Run a step of `script` (KILLED_DELIVERY) into tmp_path/out in its own embedded home,
    under the command `prefix` if one is given."""
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "FOLEY_HOME": str(tmp_path / "home")}
    env.pop("FOLEY_DB_URL", None), env.pop("FOLEY_STORE_URL", None)

    def run(step: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-c", script, str(out), str(work), step],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    return run


def deliveries(tmp_path: Path) -> Callable[[str], int]:
    """A step of KILLED_DELIVERY's exit code (-9 when it killed itself)."""
    run = delivering(tmp_path)
    return lambda step: run(step).returncode


def test_a_delivery_killed_half_way_is_finished_by_the_next(tmp_path: Path) -> None:
    """A re-conform killed (SIGKILL) after its copies, while removing a stale file: the next
    delivery — another retake — removes both the stale file the old manifest lists and the
    killed delivery's own, which no manifest names; nothing stays behind (the killed one's
    envelope did, for good, when stale files came from the folder's manifest alone)."""
    out, run = tmp_path / "out", deliveries(tmp_path)
    assert run("first") == 0
    assert run("killed") == -9
    # Half-way, the folder claims no delivery: the old manifest, which would name the new
    # stereo mix with the old one's digest, was set aside with this reel's files before the
    # first copy.
    assert (out / "r1_foley_stereo.wav").read_text() == "v2"
    assert not (out / "manifest.json").exists()
    aside = json.loads((out / ".manifest.json.previous").read_text())
    assert aside["reel"] == "r1"
    # ... listing the files the old manifest listed and every file this delivery writes: what
    # the killed delivery copied is recorded as foleyflow's before it is copied
    assert set(aside["files"]) == {"r1_foley_stereo.wav", "shots/SH010/envelope_v1.json",
                                   "shots/SH010/envelope_v2.json"}
    assert (out / "shots/SH010/envelope_v2.json").exists()
    from tasks.delivery import DeliveryFolderError, check_delivery_folder
    with pytest.raises(DeliveryFolderError, match="holds the delivery of reel 'r1'"):
        check_delivery_folder(out, "r2", edit=tmp_path / "r2.otio")
    assert run("third") == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "manifest.json", "r1_foley_stereo.wav", "shots/SH010/envelope_v3.json"]
    assert (out / "r1_foley_stereo.wav").read_text() == "v3"
    man = json.loads((out / "manifest.json").read_text())
    assert {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest()
            for rel in man["files"]} == man["files"]


def test_a_delivery_an_older_foleyflow_stopped_is_finished_too(tmp_path: Path) -> None:
    """Before session 27 the aside list named only what the folder held before the delivery,
    not what it copied: its own files are on no record. Such a folder is finished as it was
    then (the delivered names count as foleyflow's), not refused as holding a user's files."""
    out, run = tmp_path / "out", deliveries(tmp_path)
    assert run("first") == 0
    assert run("killed") == -9
    aside = out / ".manifest.json.previous"
    aside.write_text(json.dumps({"reel": "r1", "files": ["r1_foley_stereo.wav",
                                                         "shots/SH010/envelope_v1.json"]}))
    assert (out / "shots/SH010/envelope_v2.json").exists()  # the killed one's, unlisted
    assert run("third") == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "manifest.json", "r1_foley_stereo.wav", "shots/SH010/envelope_v3.json"]


def test_a_first_delivery_killed_half_way_keeps_the_folder_for_its_reel(tmp_path: Path) -> None:
    """Killed during its copies, a first delivery leaves no manifest but the aside file names
    its reel: another reel is refused the folder, and the next run of this one finishes."""
    out, run = tmp_path / "out", deliveries(tmp_path)
    assert run("first-killed") == -9
    assert not (out / "manifest.json").exists()
    from tasks.delivery import DeliveryFolderError, check_delivery_folder
    with pytest.raises(DeliveryFolderError, match="holds the delivery of reel 'r1'"):
        check_delivery_folder(out, "r2", edit=tmp_path / "r2.otio")
    assert run("first") == 0
    man = json.loads((out / "manifest.json").read_text())
    assert not (out / ".manifest.json.previous").exists()
    assert {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest()
            for rel in man["files"]} == man["files"]


# ---------------------------------------------------------------- files that are not foleyflow's


USER_FILES = {  # a user's own files with names the delivery of reel r1 writes
    "shots/SH010/envelope_v7.json": '{"note": "my own hand-made envelope, keep"}',
    "shots/SH090/r1_SH090_foley_stereo.wav": "my own stem, for a shot the reel does not have",
    "r1.xml": "<xmeml>the editor's own FCP7 export, v12 with temp music</xmeml>",
}


def test_a_users_file_with_a_delivered_name_is_refused_never_touched(tmp_path: Path) -> None:
    """What foleyflow owns in a delivery folder is what its manifest lists: a user's files
    that merely look delivered — a hand-made envelope, a stem of a shot the reel lacks, the
    editor's own <reel>.xml — survive a rerun untouched, and the rerun is refused naming the
    file (the old code deleted the first two and overwrote the third)."""
    from tasks.delivery import DeliveryFolderError, check_delivery_folder

    out, run = tmp_path / "out", delivering(tmp_path)
    assert run("first").returncode == 0
    for rel, text in USER_FILES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    before = snapshot(out)
    proc = run("first")  # a plain rerun
    assert proc.returncode == 1 and "DeliveryFolderError" in proc.stderr, proc.stderr
    assert (f"delivery folder {out}: r1.xml (and 2 more) has a name the delivery of reel 'r1' "
            "writes, but no manifest of the folder lists it") in proc.stderr
    assert "move it out of the folder or choose another delivery folder" in proc.stderr
    assert snapshot(out) == before
    with pytest.raises(DeliveryFolderError, match="r1.xml .and 2 more. has a name the "
                       "delivery of reel 'r1' writes.* choose another --out"):
        check_delivery_folder(out, "r1", edit=tmp_path / "r1.otio")
    for rel in USER_FILES:  # moved away: the folder is the delivery's again
        (out / rel).unlink()
    assert run("third").returncode == 0
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted([*man["files"], "manifest.json"])


def test_a_first_delivery_beside_the_editors_export_is_refused(tmp_path: Path) -> None:
    """The editor's own <reel>.xml in the folder before any delivery: refused up front."""
    from tasks.delivery import DeliveryFolderError, check_delivery_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r1.xml").write_text(USER_FILES["r1.xml"])
    with pytest.raises(DeliveryFolderError, match="r1.xml has a name the delivery"):
        check_delivery_folder(tmp_path / "out", "r1", edit=tmp_path / "r1.otio")
    assert delivering(tmp_path)("first").returncode == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r1.xml"]
    assert (tmp_path / "out" / "r1.xml").read_text() == USER_FILES["r1.xml"]


def test_a_users_file_is_refused_in_the_pass_folder_too(delivered: dict) -> None:
    """`foley run` into a delivered folder holding a user's file with a delivered name: one
    line, exit 2, before any work; nothing in the folder touched."""
    out = delivered["out"]
    mine = out / "shots" / "SH010" / "envelope_v7.json"
    mine.write_text(USER_FILES["shots/SH010/envelope_v7.json"])
    try:
        before, rows = snapshot(out), counts(delivered["db"])
        proc = foley("run", str(delivered["edit"]), "--out", str(out), home=delivered["home"],
                     cwd=delivered["root"])
        refused(proc, f"--out {out}: shots/SH010/envelope_v7.json has a name the delivery of "
                f"reel {REEL!r} writes", "move it out of the folder or choose another --out")
        assert snapshot(out) == before and counts(delivered["db"]) == rows
    finally:
        mine.unlink()


DISK_FULL = r"""
import json, os, resource, signal, subprocess, sys
from pathlib import Path
from flows.settings import get_settings
from tasks import delivery, runtime

get_settings().configure_runtime()
store, out, work, how = runtime.store(), Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def put(rel, data):
    p = work / rel
    p.write_bytes(data)
    return store.put_file(p, "audio/wav")

refs = {"r1_foley_51.wav": put("51", b"\0" * 4096),
        "r1_foley_stereo.wav": put("stereo", b"\1" * 300_000)}
man = {"reel": "r1", "files": {rel: ref["sha256"] for rel, ref in refs.items()}}
refs["manifest.json"] = put("manifest.json", json.dumps(man).encode())
if how == "fsize":  # no file of more than 64 KiB: the write fails with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, hard))
try:
    delivery.deliver(refs, out)
    said = None
except delivery.DeliveryFolderError as exc:
    said = str(exc)
files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
if how == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
else:
    subprocess.run(["mount", "-o", "remount,size=1m", str(out)], check=True)
delivery.deliver(refs, out)  # the same delivery again, once there is room
after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
print(json.dumps({"said": said, "files": files, "after": after}))
"""


def _tmpfs(out: Path) -> list[str]:
    """A command prefix that runs its command with `out` a 64 KiB tmpfs (in a user namespace
    of its own), else skip."""
    prefix = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{out}" && '
              'exec "$@"', "sh"]
    out.mkdir(parents=True, exist_ok=True)
    if shutil.which("unshare") is None or subprocess.run(
            [*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no unprivileged user namespaces)")
    return prefix


@pytest.mark.parametrize("how, says", [
    ("tmpfs", "no space left on device (writing r1_foley_stereo.wav) — free space there (or "
              "deliver elsewhere) and run again; completed work is kept"),
    ("fsize", "file too large (writing r1_foley_stereo.wav) — deliver to a disk that takes "
              "files this large and run again; completed work is kept")])
def test_a_full_delivery_disk_is_one_error_naming_the_folder(tmp_path: Path, how: str,
                                                             says: str) -> None:
    """A copy the delivery folder's disk cannot take (a real 64 KiB tmpfs, or a file size
    limit) leaves no temporary file and says so in one line naming the folder — not the
    store's FOLEY_HOME; the same delivery once there is room completes it."""
    out = tmp_path / "out"
    prefix = _tmpfs(out) if how == "tmpfs" else []
    proc = delivering(tmp_path, DISK_FULL, prefix=prefix)(how)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["said"] == f"delivery folder {out}: {says}"
    assert not [f for f in got["files"] if f.endswith(".partial")], got["files"]
    # stopped half-way: no manifest, the aside list for the next run (which finishes it)
    assert "manifest.json" not in got["files"] and ".manifest.json.previous" in got["files"]
    assert got["after"] == ["manifest.json", "r1_foley_51.wav", "r1_foley_stereo.wav"]


def test_a_copy_error_names_the_destination_not_foley_home(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """An OSError of a copy from the store (in FOLEY_HOME) to a folder elsewhere is not a bad
    FOLEY_HOME; one whose destination is in FOLEY_HOME is."""
    import errno

    from flows.settings import setting_error

    home = tmp_path / "home"
    monkeypatch.setenv("FOLEY_HOME", str(home))
    src, dst = home / "store" / "ab" / "cd", tmp_path / "out" / ".r1_foley_51.wav.partial"
    full = OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))
    assert setting_error(full) is None
    into_home = OSError(errno.ENOSPC, "No space left on device", str(dst), None, str(src))
    assert setting_error(into_home) == (f"FOLEY_HOME={home.resolve()} cannot be used: No space "
                                        f"left on device ({src}); point it at a folder you can "
                                        "write")
