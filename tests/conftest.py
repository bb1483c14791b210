"""Shared test set-up: a private Prefect home, a fresh embedded foleyflow home per test."""
from __future__ import annotations

import os
import tempfile
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


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the session (it takes ~14 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def sfx_dir() -> Path:
    if not (SFX / "catalog.csv").exists():
        pytest.fail(f"the shared Foley recordings are missing: expected {SFX}/catalog.csv")
    return SFX
