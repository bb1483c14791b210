"""The local artifact store when its folder cannot take a file, and after a kill mid-copy.

A full or read-only store is made real: a small tmpfs mounted for the test (root and
CAP_SYS_ADMIN, as on the project's machines and CI; skipped, saying so, where mounting is not
allowed).
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.store import INCOMING, LocalStore, StoreUnavailable


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at tmp_path/fs, unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the store's full / "
                    "read-only cases need a real file system that runs out")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def test_a_full_store_is_an_outage_naming_the_store(small_fs: Path, tmp_path: Path) -> None:
    """ENOSPC is StoreUnavailable (the pass stops with one line; no shot is failed for it),
    it names the store and what to do, and leaves no partial copy behind."""
    store = LocalStore(small_fs / "store")
    store.put_file(_file(tmp_path, "fits.wav", 200_000))
    with pytest.raises(StoreUnavailable) as err:
        store.put_file(_file(tmp_path, "too big.wav", 2_000_000))
    msg = str(err.value)
    assert msg.startswith(f"artifact store {small_fs / 'store'} cannot take a file: "
                          "No space left on device"), msg
    assert "completed work is kept" in msg
    assert list((small_fs / "store" / INCOMING).iterdir()) == []


def test_a_read_only_store_is_an_outage(small_fs: Path, tmp_path: Path) -> None:
    store = LocalStore(small_fs / "store")
    ref = store.put_file(_file(tmp_path, "before.wav", 1000))
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StoreUnavailable, match="cannot take a file: Read-only file system"):
        store.put_file(_file(tmp_path, "after.wav", 1000))
    assert store.local_path(ref).stat().st_size == 1000  # what it holds stays readable


def test_a_source_that_cannot_be_read_is_not_blamed_on_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "missing.wav")


def test_a_killed_copy_is_swept_by_the_next_store(tmp_path: Path) -> None:
    """kill -9 mid-copy leaves `.incoming/<pid>-…`: the next store on the folder removes it
    once its process is gone and it is an hour old; a live process's copy stays."""
    root = tmp_path / "store"
    child = subprocess.Popen(["sleep", "30"])
    try:
        LocalStore(root)
        (root / INCOMING).mkdir()
        live = root / INCOMING / f"{child.pid}-abc"
        gone_pid = _exited_pid()
        stale = root / INCOMING / f"{gone_pid}-def"
        fresh = root / INCOMING / f"{gone_pid}-ghi"
        for p in (live, stale, fresh):
            p.write_bytes(b"half a stem")
        old = time.time() - 7200
        os.utime(live, (old, old))
        os.utime(stale, (old, old))
        LocalStore(root)
        assert sorted(p.name for p in (root / INCOMING).iterdir()) == sorted(
            [live.name, fresh.name])
    finally:
        child.kill()
        child.wait()


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_pass_onto_a_read_only_store_stops_with_one_line(
        small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`foley run` with FOLEY_STORE_URL on a read-only file system: exit 1 and one line naming
    the store — not every shot failed one by one, then a conform traceback."""
    from flows.demo import make_demo_reel
    from tests.test_pass_e2e import foley

    (small_fs / "store").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    timeline = make_demo_reel(tmp_path / "edit", name="Reel 1")
    monkeypatch.setenv("FOLEY_STORE_URL", str(small_fs / "store"))  # foley() passes it on
    proc = foley("run", str(timeline), "--out", str(tmp_path / "out"), home=tmp_path / "home",
                 cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(
        f"error: artifact store {small_fs / 'store'} cannot take a file: Read-only file "
        "system"), proc.stderr
    assert not (tmp_path / "out").exists()
