"""Shared test set-up: a private Prefect home and one Prefect API server for the session, a
fresh embedded foleyflow home per test."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Real services for studio-mode tests: a throwaway Postgres and an S3 server on loopback.
pytest_plugins = ["tests.service_pg", "tests.service_s3"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SFX = SHARED / "sfx"

_prefect_home = Path(tempfile.mkdtemp(prefix="foley-test-prefect-"))
os.environ.setdefault("PREFECT_HOME", str(_prefect_home))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def foley_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded-mode home (SQLite + artifact folder) of its own, configured for this test."""
    home = tmp_path / "foley-home"
    monkeypatch.setenv("FOLEY_HOME", str(home))
    monkeypatch.delenv("FOLEY_DB_URL", raising=False)
    monkeypatch.delenv("FOLEY_STORE_URL", raising=False)
    from flows.settings import get_settings

    get_settings().configure_runtime()
    return home


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect API server for the whole session, as a studio runs one: the flows the tests
    run in this process and every `foley` command they start talk to it (PREFECT_API_URL is
    exported). Without it each command would start its own ephemeral server, ~10 s of CPU
    apiece. A test that means to exercise the ephemeral mode removes PREFECT_API_URL from its
    command's environment; servers of a test's own (workers, deployments) use `clean_env`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.service_prefect import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as server, \
            temporary_settings({PREFECT_API_URL: server.url}):
        os.environ["PREFECT_API_URL"] = server.url
        try:
            yield server.url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_harness(prefect_api: str) -> None:
    """The tests that run flows in this process name it: the session's Prefect server."""


@pytest.fixture(scope="session")
def sfx_dir() -> Path:
    if not (SFX / "catalog.csv").exists():
        pytest.fail(f"the shared Foley recordings are missing: expected {SFX}/catalog.csv")
    return SFX
