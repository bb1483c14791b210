"""Stage work folders left by killed processes are removed (`tasks.stage.sweep_work_dirs`).

A stage computes in a temporary folder that it removes when it ends; a process killed outright
(kill -9, the OOM killer) cannot, and a conform's folder holds every reel-length mix. Real
processes are killed here with SIGKILL; an hour's wait is stood in for by setting the
leftovers' modification times back.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks import stage

REPO = Path(__file__).resolve().parents[1]

KILLED = r'''
import os, signal, sys
from pathlib import Path
from tasks import stage
tmp = stage.work_dir(sys.argv[1])
(Path(tmp.name) / "mix.wav").write_bytes(b"\0" * 4096)
print(tmp.name, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
tmp.cleanup()
'''


def _run(tmp: Path, task: str, how: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", KILLED, task, how], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [*folder.iterdir(), folder]:
        os.utime(p, (then, then), follow_symlinks=False)


def test_a_killed_stages_work_folder_is_removed_once_stale(tmp_path: Path) -> None:
    killed = _run(tmp_path, "envelope-predict", "kill")  # stage names may hold "-"
    assert killed.returncode == -signal.SIGKILL
    left = Path(killed.stdout.strip())
    assert left.parent == tmp_path and (left / "mix.wav").exists()
    assert left.name.startswith("foley-envelope-predict-")

    other = tmp_path / "foley-pg-abcd1234"  # not a stage's: never touched
    other.mkdir()
    (other / "PG_VERSION").write_text("15")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:  # a stage of a process still running, however old its files
            running = tmp_path / f"foley-spatial-{alive.pid}-k2j4h5g6"
            running.mkdir()
            (running / "stem.wav").write_bytes(b"\0")

            assert stage.sweep_work_dirs(tmp_path) == []  # written just now: kept
            for d in (left, other, running):
                _age(d, 2 * stage.STALE_WORK_S)
            assert stage.sweep_work_dirs(tmp_path) == [left]
        finally:
            alive.kill()
    assert not left.exists() and other.exists() and running.exists()


def test_the_first_stage_of_a_process_sweeps(tmp_path: Path) -> None:
    """The next pass removes what a killed one left, with no command to remember."""
    left = Path(_run(tmp_path, "conform", "kill").stdout.strip())
    _age(left, 2 * stage.STALE_WORK_S)
    done = _run(tmp_path, "features", "finish")
    assert done.returncode == 0, done.stderr
    assert not left.exists()
    assert list(tmp_path.iterdir()) == []  # and its own went when it ended
