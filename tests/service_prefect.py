"""A real Prefect API server, work pool, deployments and worker processes for tests.

Every process is started in its own session and stopped by process group (`os.killpg`), so
flow-run subprocesses a worker started never outlive the test. The deployments are the
studio's own `infra/prefect.yaml`, with its pull step pointed at this checkout instead of the
image's /opt/foleyflow.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.service_pg import free_port

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any foleyflow / Prefect API / S3 settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "FOLEY_", "PREFECT_API", "PREFECT_HOME"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
               PYTHONPATH=str(REPO), **extra)
    return env


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # flow runs the worker left behind
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class PrefectServer:
    """One Prefect API server on loopback with its own home and database."""

    home: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(PREFECT_API_URL=self.url, PREFECT_HOME=str(self.home / "client"),
                         **extra)

    def start(self, timeout_s: float = 120) -> None:
        env = clean_env(PREFECT_HOME=str(self.home), PREFECT_UI_ENABLED="0")
        log = open(self.home / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, (self.home / "server.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"Prefect server did not start in {timeout_s} s"
            time.sleep(0.3)

    def prefect(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run the Prefect CLI against this server; returns stdout (asserts success)."""
        out = subprocess.run([*PREFECT, "--no-prompt", *args], cwd=REPO, env=env or self.env(),
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def deploy(self, tmp: Path, pool: str = "foley", **env: str) -> None:
        """The work pool and every deployment of infra/prefect.yaml, run from this checkout."""
        spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
        spec["pull"] = [{"prefect.deployments.steps.set_working_directory":
                         {"directory": str(REPO)}}]
        for d in spec["deployments"]:
            d["work_pool"]["name"] = pool
        path = tmp / "prefect.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.prefect("work-pool", "create", pool, "--type", "process")
        self.prefect("deploy", "--all", "--prefect-file", str(path), env=self.env(**env))

    def start_worker(self, name: str, env: dict[str, str], pool: str = "foley",
                     limit: int = 1) -> subprocess.Popen:
        """`prefect worker start` on `pool`; its flow runs inherit `env`."""
        log = open(self.home / f"worker-{name}.log", "wb")
        proc = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", name,
             "--limit", str(limit)],
            cwd=REPO, env={**self.env(PREFECT_WORKER_QUERY_SECONDS="1",
                                      PREFECT_WORKER_PREFETCH_SECONDS="5"), **env},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.workers.append(proc)
        return proc

    def worker_log(self, name: str) -> str:
        return (self.home / f"worker-{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for w in self.workers:
            stop(w)
        if self.proc is not None:
            stop(self.proc)


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    server = PrefectServer(home)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def wait_flow_run(server: PrefectServer, run_id: object, timeout_s: float = 600) -> str:
    """Wait until the flow run is final; returns its state name."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: server.url}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                return state.name
            time.sleep(1)
    raise AssertionError(f"flow run {run_id} not finished in {timeout_s} s")
