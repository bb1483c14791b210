"""`foley serve`: the overnight pass on one machine, without setting up a Prefect server.

It serves three deployments from this process (`prefect.serve`; each run a subprocess):

| deployment | when |
|---|---|
| `foley-nightly/nightly` | on the cron (FOLEY_NIGHTLY_CRON, default 01:00) in FOLEY_TIMEZONE |
| `foley-pass/serve` | on demand: `prefect deployment run foley-pass/serve -p timeline=… -p out=…` |
| `foley-shots/shots` | the shot runs of a pass with FOLEY_SHOTS_PER_RUN > 0 |

Schedules need a Prefect server (an ephemeral one has no scheduler): with PREFECT_API_URL set,
that server is used; otherwise `foley serve` starts one of its own (`prefect server start`,
its database under `<FOLEY_HOME>/prefect`, the UI on --port) and stops it on exit. The nightly
schedule is left active when `foley serve` stops (`pause_on_shutdown=False`): the runs the
server schedules meanwhile wait as Late and run as soon as `foley serve` is back.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

NIGHTLY = "foley-nightly/nightly"


def serve(
    cron: Annotated[Optional[str], typer.Option(help="When the nightly pass runs, as cron (default FOLEY_NIGHTLY_CRON, `0 1 * * *`: 01:00 every day).")] = None,
    timezone: Annotated[Optional[str], typer.Option(help="IANA time zone of the schedule (default FOLEY_TIMEZONE, else this machine's zone).")] = None,
    run_now: Annotated[bool, typer.Option("--run-now", help="Also start one nightly run right away (the inbox as it is now).")] = False,
    limit: Annotated[int, typer.Option(help="Flow runs at once in this process (a nightly pass, shot runs, on-demand passes).")] = 4,
    port: Annotated[int, typer.Option(help="Port of the Prefect server (and its UI) `foley serve` starts when PREFECT_API_URL is not set.")] = 4200,
) -> None:
    """Serve the overnight pass: every night, new or changed reels in the inbox are passed and
    the queue is full in the morning.

    Set FOLEY_INBOX (a folder or s3://bucket/prefix where reels land: one folder per reel, the
    edit plus its media) and FOLEY_DELIVERIES (where `<reel>/` delivery folders go). Each run
    takes every reel whose files have not changed for FOLEY_INBOX_SETTLE_S (still copying
    otherwise), once per version (content hash of edit and media), runs the pass with
    FOLEY_NIGHTLY_APPROVE (queue: supervisors approve in `foley review serve`; auto: the
    predictions that meet FOLEY_NIGHTLY_APPROVE_THRESHOLD are approved, the rest wait), and
    writes the morning summary (Prefect UI artifact `foley-nightly-summary`; JSON to
    FOLEY_WEBHOOK_URL).

    Examples: `foley serve` (01:00 local every night); `foley serve --cron "30 22 * * 1-5"
    --timezone Europe/London --run-now`. Stop with Ctrl-C; the schedule stays active.
    More: docs/OPERATIONS.md.
    """
    from flows.cli import _prefect_defaults, fail
    from flows.settings import get_settings

    if not 1 <= port <= 65535:
        fail(f"--port {port}: a TCP port is 1–65535")
    try:
        settings = get_settings()
    except ValueError as exc:
        from flows.settings import setting_error

        fail(setting_error(exc) or f"bad setting: {exc}")
    tz = timezone or settings.resolved_timezone()
    cron = cron or settings.nightly_cron
    try:
        _check_schedule(cron, tz)
        from flows.foley_pass import check_approval

        check_approval(settings.nightly_approve, settings.nightly_approve_threshold,
                       names=("FOLEY_NIGHTLY_APPROVE", "FOLEY_NIGHTLY_APPROVE_THRESHOLD"))
    except ValueError as exc:
        fail(str(exc))
    if not settings.inbox:
        fail("no inbox: set FOLEY_INBOX to the folder (or s3://bucket/prefix) reels land in")
    _prefect_defaults()
    with prefect_server(Path(os.environ["PREFECT_HOME"]), port):
        _serve(cron, tz, run_now=run_now, limit=limit)


def _check_schedule(cron: str, tz: str) -> None:
    """Raise ValueError naming the option unless Prefect accepts the cron and the zone."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=tz)
    except ValidationError as exc:
        field = "--timezone" if "timezone" in str(exc) else "--cron"
        raise ValueError(f"{field}: {exc.errors()[0]['msg']} (cron {cron!r}, zone {tz!r}; "
                         "e.g. --cron '0 1 * * *' --timezone Europe/London)") from None


def _serve(cron: str, tz: str, *, run_now: bool, limit: int) -> None:
    from prefect import serve as prefect_serve
    from prefect.schedules import Cron

    from flows.foley_pass import worker_pass
    from flows.nightly import nightly
    from flows.scaleout import worker_shot_batch

    deployments = [
        nightly.to_deployment("nightly", schedule=Cron(cron, timezone=tz),
                              tags=["foleyflow", "nightly"],
                              description="Overnight pass over the inbox, morning summary."),
        worker_pass.to_deployment("serve", tags=["foleyflow", "pass"],
                                  parameters={"approve": "queue"},
                                  description="Foley pass on demand (envelopes wait for review)."),
        worker_shot_batch.to_deployment("shots", tags=["foleyflow", "shots"],
                                        description="A batch of one reel's shots (scale-out)."),
    ]
    typer.secho(f"nightly pass: cron '{cron}' ({tz}); stop with Ctrl-C (the schedule stays "
                "active)", err=True)
    if run_now:
        threading.Thread(target=_trigger_when_registered, daemon=True).start()
    prefect_serve(*deployments, pause_on_shutdown=False, limit=limit)


def _trigger_when_registered(timeout_s: float = 120.0) -> None:
    """Start one nightly run once `serve` has registered the deployment."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(NIGHTLY)
                break
            except ObjectNotFound:
                time.sleep(0.5)
    run = run_deployment(NIGHTLY, timeout=0)
    typer.secho(f"nightly run started now: {run.name}", err=True)


@contextlib.contextmanager
def prefect_server(home: Path, port: int) -> Iterator[None]:
    """A Prefect server (for schedules; for benchmarks) unless PREFECT_API_URL names one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    import httpx

    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise typer.Exit(_server_failed(home, port))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise typer.Exit(_server_failed(home, port))
            time.sleep(0.5)
        typer.secho(f"Prefect server and UI: http://127.0.0.1:{port} (log {home}/server.log)",
                    err=True)
        os.environ["PREFECT_API_URL"] = url  # for the runs it starts
        with temporary_settings({PREFECT_API_URL: url}):  # for this process
            yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _server_failed(home: Path, port: int) -> int:
    typer.secho(f"error: the Prefect server did not start on port {port} (in use? try --port, "
                f"or set PREFECT_API_URL to a running server); see {home}/server.log",
                fg=typer.colors.RED, err=True)
    return 2
