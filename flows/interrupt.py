"""Stopping a command that runs flows on Prefect's ephemeral API server: Ctrl-C, SIGTERM, kill -9.

Without PREFECT_API_URL, Prefect starts its API server as a `uvicorn` subprocess
(`prefect.server.api.server.SubprocessASGIServer`) in the command's process group and stops
it from `atexit`. So a terminal's Ctrl-C (SIGINT to the whole group) killed the server too,
and Prefect spent over a minute retrying to record the Crashed state against it, ending in a
traceback and exit 1; a SIGTERM (Python's default skips `atexit`) or a kill -9 left the
server running, re-parented to init, for good (findings of session 27, items 1 and 2).

`keep_server_apart` starts that server in a session of its own (a terminal's signals do not
reach it) and, on Linux, with PR_SET_PDEATHSIG so the kernel sends it SIGTERM when the command
dies, however it dies. PDEATHSIG fires when the *thread* that started the child ends, so it is
set only when the server is started from the main thread (the flow engine starts it there).
It replaces the `subprocess` name that `prefect.server.api.server` uses with a copy whose
`Popen` adds those two options. Checked against prefect 3.8.8 (requirements/constraints.txt):
`SubprocessASGIServer._run_uvicorn_command` calls `subprocess.Popen(args=..., env=...)`.
`stopped_by_signal` turns SIGTERM into the same orderly path as Ctrl-C (KeyboardInterrupt),
so Prefect records the run as Crashed and `atexit` stops the server, and ends the command
with one line and exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports those signals.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

STOPPED_RUN = "stopped: finished stages are kept — run the same command again to carry on"
STOPPED_REVIEW = ("stopped: decisions taken and finished shots are kept — `foley review "
                  "apply` carries on")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGTERM the child when this thread ends; None where
    that is not possible (not Linux, not the main thread, no prctl)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec: no imports, no locks
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


class _ServerPopen(subprocess.Popen):  # type: ignore[type-arg]
    """`subprocess.Popen` for Prefect's API server: its own session, dies with the command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        if kwargs.get("preexec_fn") is None:
            kwargs["preexec_fn"] = _die_with_parent()
        super().__init__(*args, **kwargs)


def keep_server_apart() -> None:
    """Make the ephemeral API server Prefect may start in this process ignore the terminal's
    signals and die with the process (see the module's docstring). Call it before the first
    flow runs; a studio's server (PREFECT_API_URL) is left alone. Idempotent."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    from prefect.server.api import server

    if getattr(server.subprocess, "foleyflow_server_popen", False):
        return
    shim = types.ModuleType("subprocess", subprocess.__doc__)
    shim.__dict__.update(vars(subprocess))
    shim.Popen = _ServerPopen  # type: ignore[attr-defined]
    shim.foleyflow_server_popen = True  # type: ignore[attr-defined]
    server.subprocess = shim  # type: ignore[attr-defined]


def start_server_here() -> None:
    """Start the ephemeral API server now, from this (the main) thread, apart and dying with
    the process (`keep_server_apart`): for a long-running command whose flows start from
    worker threads (`foley review serve`'s apply worker), where the server would otherwise be
    started from a thread and PR_SET_PDEATHSIG could not be set. The flows' clients use this
    same server (Prefect keeps one per process). Nothing with PREFECT_API_URL set."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    keep_server_apart()
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().start()


class _CrashBySignal(logging.Filter):
    """Drops Prefect's "Crash detected! Execution was aborted by a … signal." (the command
    says it in its own line) and quiets all logging from then on: the process is ending, and
    what in-flight tasks log as they are cut short is noise (the run's state says Crashed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Crash detected!") and "signal" in message:
            logging.disable(logging.CRITICAL)
            return False
        return True


@contextmanager
def stopped_by_signal(said: str, *, server: bool = True) -> Iterator[None]:
    """Run a command's body so that Ctrl-C or SIGTERM stops it in order: Prefect records the
    run as Crashed, `atexit` stops its server, and the command prints `said` on stderr and
    exits 130 / 143 without a traceback. A second signal while it stops is ignored; logging
    stays off once stopping (the process is ending). `server`: also `keep_server_apart` (the
    body runs flows)."""
    got: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if got:                         # already stopping: let the clean-up finish
            return
        got.append(signum)
        logging.disable(logging.CRITICAL)
        raise KeyboardInterrupt(f"signal {signum}")

    before: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            before[signum] = signal.signal(signum, stop)
        except ValueError:              # not the main thread: signals are left as they are
            pass
    crash_line = _CrashBySignal()
    run_log = logging.getLogger("prefect.flow_runs")
    run_log.addFilter(crash_line)
    try:
        if server:
            keep_server_apart()
        yield
    except BaseException as exc:
        from prefect.exceptions import TerminationSignal  # SIGTERM while Prefect's handler is on

        if not isinstance(exc, (KeyboardInterrupt, TerminationSignal)):
            raise
        logging.disable(logging.CRITICAL)
        typer.secho(said, fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(128 + (got[0] if got else getattr(exc, "signal", signal.SIGINT))) from None
    finally:
        run_log.removeFilter(crash_line)
        for signum, handler in before.items():  # a handler not set from Python reads as None
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
