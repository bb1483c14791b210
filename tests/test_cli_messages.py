"""What the `foley` command prints: the traceback Prefect's in-process server logs when the
command ends while one of its services is still flushing (cancelled by the server's own
shutdown) is kept off the console, and only that; a name or number that cannot be right is
one line and exit 2."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import _ShutdownNoise, app


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_only_a_shutdown_cancellation_is_dropped() -> None:
    log = logging.getLogger("prefect.server.services.task_run_recorder")
    keep, noise = _Keep(), _ShutdownNoise()
    log.addHandler(keep)
    log.addFilter(noise)
    try:
        try:
            try:
                raise asyncio.CancelledError("Cancelled via cancel scope")
            except asyncio.CancelledError as exc:
                raise RuntimeError("flush failed") from exc
        except RuntimeError:
            log.error("Error flushing 1 events (1 to retry, 0 dropped)", exc_info=True)
        try:
            raise OSError("disk full")
        except OSError:
            log.error("Error flushing 1 events", exc_info=True)
        log.error("a plain error")
    finally:
        log.removeHandler(keep)
        log.removeFilter(noise)
    assert [r.getMessage() for r in keep.records] == ["Error flushing 1 events", "a plain error"]


def test_an_unknown_library_and_an_impossible_port_are_refused(foley_home: Path) -> None:
    res = CliRunner().invoke(app, ["library", "list", "nosuch"])
    assert res.exit_code == 2 and "no library 'nosuch' (indexed: none" in res.output, res.output
    res = CliRunner().invoke(app, ["serve", "--port", "99999"])
    assert res.exit_code == 2 and "--port 99999: a TCP port is 1–65535" in res.output, res.output


def test_flags_show_no_value_type_in_help() -> None:
    """`--json` and `--help` take no value: the help shows no `<bool>` beside them, while an
    option that takes one keeps its type."""
    res = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}, terminal_width=120)
    assert res.exit_code == 0 and "<bool>" not in res.output, res.output
    assert "<float>" in res.output  # --fps
    res = CliRunner().invoke(app, ["provenance", "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0 and "--json" in res.output and "<bool>" not in res.output
