"""`foley library index` on the odd files a real library holds: each bad file is skipped and
named with its reason in the warning, the good files of the same folder are indexed, and the
command exits 0 — a short catalog row, a silent texture, a NaN sample, empty catalog cells, and
any other error of one file. A store or database outage still stops the index (exit 1).

The four kinds of file run the real `foley` command (one per library, each with its own
FOLEY_HOME, all four at once to keep this quick); the two that need an error no file produces
run its entry point (`flows.cli.main`) in this process.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
FOLEY = Path(sys.executable).with_name("foley")
SR = 48000


def hit(path: Path, freq: float) -> None:
    """A 0.4 s decaying sine (a clean one-shot), 24-bit."""
    t = np.arange(int(0.4 * SR)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (np.exp(-t * 20) * np.sin(2 * np.pi * freq * t) * 0.5).astype("float32"), SR,
             subtype="PCM_24")


def short_row(lib: Path) -> None:
    """A catalog row without its trailing cells (as spreadsheet exports write them)."""
    hit(lib / "impacts/wood/hit1.wav", 800)
    hit(lib / "impacts/wood/hit2.wav", 600)
    (lib / "catalog.csv").write_text("path,category,material,action,caption\n"
                                     "impacts/wood/hit1.wav,impacts,wood\n")


def silent_texture(lib: Path) -> None:
    """12 s of digital silence (a texture by its length) between two hits."""
    hit(lib / "impacts/wood/hit1.wav", 800)
    hit(lib / "impacts/wood/hit2.wav", 600)
    sf.write(lib / "impacts/wood/roomtone.wav", np.zeros(12 * SR, "float32"), SR, subtype="PCM_24")


def nan_sample(lib: Path) -> None:
    """Two float files, one NaN sample in one and +inf in the other, beside two hits."""
    for i, f in enumerate((700, 800)):
        hit(lib / f"impacts/wood/hit{i}.wav", f)
    for name, bad in (("hit_nan", np.nan), ("hit_inf", np.inf)):
        x = sf.read(lib / "impacts/wood/hit0.wav", dtype="float32")[0]
        x[15000] = bad
        sf.write(lib / f"impacts/wood/{name}.wav", x, SR, subtype="FLOAT")


def empty_cells(lib: Path) -> None:
    """Catalog rows with empty category / material / action / caption cells."""
    for name, f in (("hit_a", 700), ("hit_b", 800), ("hit_c", 900)):
        hit(lib / f"impacts/wood/{name}.wav", f)
    (lib / "catalog.csv").write_text("path,category,material,action,caption\n"
                                     "impacts/wood/hit_a.wav,impacts,wood,hit,a wood hit\n"
                                     "impacts/wood/hit_b.wav,,,,\n"
                                     "impacts/wood/hit_c.wav,,,knock,\n")


@dataclass
class Indexed:
    proc: subprocess.CompletedProcess[str]
    home: Path
    name: str

    def rows(self) -> dict[str, tuple[str, str, str, str, float]]:
        return indexed(self.home, self.name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Indexed]:
    """Each odd library indexed by its own `foley library index` (own FOLEY_HOME, this
    checkout's code first), the four commands at once."""
    cmd = [str(FOLEY)] if FOLEY.exists() else [sys.executable, "-m", "flows.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("FOLEY_DB_URL", "FOLEY_STORE_URL")}
    env |= {"OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])}
    started = {}
    for make in (short_row, silent_texture, nan_sample, empty_cells):
        tmp = tmp_path_factory.mktemp(make.__name__)
        lib, home = tmp / f"lib_{make.__name__}", tmp / "home"
        make(lib)
        started[make.__name__] = (subprocess.Popen(
            [*cmd, "library", "index", str(lib), "--name", lib.name], cwd=tmp,
            env=env | {"FOLEY_HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True), home, lib.name)
    done = {}
    for key, (popen, home, name) in started.items():
        out, err = popen.communicate(timeout=300)
        done[key] = Indexed(subprocess.CompletedProcess(popen.args, popen.returncode, out, err),
                            home, name)
    return done


def indexed(home: Path, name: str) -> dict[str, tuple[str, str, str, str, float]]:
    """The library's rows in the home's database: rel_path → category, material, action,
    caption, loudness."""
    with sqlite3.connect(home / "foley.db") as c:
        rows = c.execute("select rel_path, category, material, action, caption, loudness_db "
                         "from library_sounds where library = ?", (name,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def ok_with_warning(proc: subprocess.CompletedProcess[str], n: int, *skips: str) -> None:
    """Exit 0, no traceback, `n` sounds indexed, and one warning naming each `rel (reason`."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert f"indexed {n} sounds" in proc.stdout, out
    if skips:
        warning = [line for line in proc.stderr.splitlines() if f"skipped {len(skips)} file" in line]
        assert len(warning) == 1, out
        for s in skips:
            assert s in warning[0], warning[0]
    else:
        assert "skipped" not in out, out


def test_catalog_row_missing_its_trailing_cells(runs: dict[str, Indexed]) -> None:
    run = runs["short_row"]
    ok_with_warning(run.proc, 2)
    rows = run.rows()  # the row's cells, the missing ones from the path
    assert rows["impacts/wood/hit1.wav"][:4] == ("impacts", "wood", "hit", "impacts wood hit 1")
    assert rows["impacts/wood/hit2.wav"][:4] == ("impacts", "wood", "hit", "impacts wood hit 2")


def test_silent_texture_is_skipped_and_nothing_of_it_is_stored(runs: dict[str, Indexed]) -> None:
    run = runs["silent_texture"]
    ok_with_warning(run.proc, 2, "impacts/wood/roomtone.wav (only silence)")
    rows = run.rows()
    assert sorted(rows) == ["impacts/wood/hit1.wav", "impacts/wood/hit2.wav"]
    assert all(np.isfinite(r[4]) for r in rows.values())
    stored = [p for p in run.home.rglob("*") if p.is_file() and p.read_bytes()[:4] == b"RIFF"]
    assert len(stored) == 2  # the two hits: no processed silence (NaN audio) in the store
    for p in stored:
        assert np.isfinite(sf.read(p, dtype="float32")[0]).all(), p


def test_float_file_with_a_nan_or_infinite_sample_is_skipped(runs: dict[str, Indexed]) -> None:
    run = runs["nan_sample"]
    ok_with_warning(run.proc, 2, "impacts/wood/hit_nan.wav (holds NaN or infinity",
                    "impacts/wood/hit_inf.wav (holds NaN or infinity")
    assert sorted(run.rows()) == ["impacts/wood/hit0.wav", "impacts/wood/hit1.wav"]


def test_empty_catalog_cells_are_filled_from_the_path(runs: dict[str, Indexed]) -> None:
    from tasks.library import LibrarySound
    from tasks.library_match import match_sounds

    run = runs["empty_cells"]
    ok_with_warning(run.proc, 3)
    rows = run.rows()
    assert {k: v[:4] for k, v in rows.items()} == {
        "impacts/wood/hit_a.wav": ("impacts", "wood", "hit", "a wood hit"),
        "impacts/wood/hit_b.wav": ("impacts", "wood", "hit", "impacts wood hit b"),
        "impacts/wood/hit_c.wav": ("impacts", "wood", "knock", "impacts wood hit c"),
    }
    sounds = [LibrarySound(rel_path=k, category=v[0], material=v[1], action=v[2], caption=v[3],
                           processed_path="", source_sha256="", duration_s=0.4, loudness_db=v[4],
                           kind="oneshot") for k, v in rows.items()]
    assert {s.rel_path for s in match_sounds(sounds, "wood", "impact")} == set(rows)


# ---------------------------------------------------------------- errors no file produces


def run_main(monkeypatch: pytest.MonkeyPatch, folder: Path) -> int:
    """`foley library index FOLDER` through the command's entry point, in this process."""
    import torch

    torch.set_num_threads(1)
    from flows import cli

    monkeypatch.setattr(sys, "argv", ["foley", "library", "index", str(folder)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return int(done.value.code or 0)


def fail_on(monkeypatch: pytest.MonkeyPatch, name: str, exc: Exception) -> None:
    """Make preparing the file called `name` raise `exc`."""
    from tasks import library

    decode = library._decode

    def failing(path: Path) -> tuple[np.ndarray, int]:
        if Path(path).name == name:
            raise exc
        return decode(path)

    monkeypatch.setattr(library, "_decode", failing)


def test_any_other_error_of_one_file_skips_that_file(foley_home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib_odd"
    for name, f in (("hit1", 700), ("odd", 800), ("hit2", 900)):
        hit(lib / f"impacts/wood/{name}.wav", f)
    fail_on(monkeypatch, "odd.wav", RuntimeError("decoder state\n  went bad"))
    with caplog.at_level("WARNING", logger="tasks.library"):
        assert run_main(monkeypatch, lib) == 0
    assert "indexed 2 sounds" in capsys.readouterr().out
    warning = [r.getMessage() for r in caplog.records if "skipped 1 file" in r.getMessage()]
    assert len(warning) == 1
    assert "impacts/wood/odd.wav (RuntimeError: decoder state went bad)" in warning[0]
    assert sorted(indexed(foley_home, "lib_odd")) == ["impacts/wood/hit1.wav",
                                                      "impacts/wood/hit2.wav"]


@pytest.mark.parametrize("outage", ["store", "database"])
def test_store_or_database_outage_still_stops_the_index(outage: str, foley_home: Path,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from db.engine import DatabaseUnavailable
    from tasks.store import StoreUnavailable

    lib = tmp_path / "lib_away"
    hit(lib / "impacts/wood/hit1.wav", 700)
    hit(lib / "impacts/wood/hit2.wav", 900)
    exc = (StoreUnavailable("S3 endpoint http://s3.example unreachable", endpoint="s3.example")
           if outage == "store" else DatabaseUnavailable("the provenance database is away"))
    fail_on(monkeypatch, "hit2.wav", exc)
    assert run_main(monkeypatch, lib) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and ("unreachable" in err or "is away" in err), err
    assert indexed(foley_home, "lib_away") == {}
