"""Studio mode under faults, through the real `foley` CLI on a real Postgres and S3 server.

The fast tests at the top check the pieces (database retries with backoff, a task that lost its
connection run again, one console message for an outage); the slow ones drive whole passes.

A short reel (3 shots of 2 s) is passed on Postgres + S3 and must deliver the same bytes as
the embedded SQLite + folder pass. Then the services are taken away mid-pass: a restart
within the retry budget is waited out; an outage that outlasts it ends the pass with one
clear message (exit 1, no traceback), and a rerun after recovery completes. A pass killed
with SIGKILL is rerun to completion. Two passes of the reel start at once. After each, the
database and bucket hold exactly what one clean run holds: the same rows per table, the same
object keys, no `running` activities, no object without an artifact row. Credentials never
reach the output, the database, the manifest or a delivered file.

The passes talk to the session's Prefect API server (`prefect_api` in conftest.py, as a studio
runs one), so each CLI run does not pay for an ephemeral server's start.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flows.demo import DemoShot, make_demo_reel
from models.scenes import SceneSpec
from tests.service_pg import PostgresServer
from tests.service_s3 import S3Server

slow = pytest.mark.slow

FOLEY = ([str(Path(sys.executable).with_name("foley"))]
         if Path(sys.executable).with_name("foley").exists() else [sys.executable, "-m", "flows.cli"])
REEL = "Studio Reel"
SHOTS = (
    DemoShot("bounce_24.mp4", SceneSpec("bounce", fps=24, duration_s=2.5, seed=1), 0.25, 2.0,
             "impacts wood"),
    DemoShot("steps_25.mp4", SceneSpec("steps", fps=25, duration_s=2.5, seed=2), 0.25, 2.0,
             "footsteps gravel"),
    DemoShot("still_25.mp4", SceneSpec("static", fps=25, duration_s=2.2, seed=3), 0.1, 2.0),
)
TABLES = ("activities", "artifacts", "envelopes", "decisions", "usages", "generations",
          "derivations", "shots", "reels", "agents", "library_sounds")
PREFIX = "studio/reels"

PROGRESS = re.compile(r"^\s*\w+ .*\d+/\d+ \d+:\d\d:\d\d\s*$")  # a rich progress line


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_reel(tmp_path_factory.mktemp("studio-edit"), name=REEL, shots=SHOTS)


@dataclass
class Studio:
    """One studio installation: a fresh Postgres database, a fresh bucket, a FOLEY_HOME."""

    pg: PostgresServer
    s3: S3Server
    root: Path
    prefect_api: str
    db_name: str = field(default_factory=lambda: f"foley_{uuid.uuid4().hex[:10]}")
    bucket: str = field(default_factory=lambda: f"foley-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.pg.create_database(self.db_name)

    @property
    def out(self) -> Path:
        return self.root / "delivery"

    def env(self, **settings: str) -> dict[str, str]:
        """The pass's environment; `settings` override FOLEY_* settings (e.g. shorter retry
        budgets where a test waits one out)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "FOLEY_", "PREFECT_API"))}
        env.update(
            FOLEY_HOME=str(self.root / "home"), FOLEY_DB_URL=self.pg.url(self.db_name),
            FOLEY_STORE_URL=f"s3://{self.bucket}/{PREFIX}",
            AWS_ENDPOINT_URL_S3=self.s3.endpoint, AWS_ACCESS_KEY_ID=self.s3.access_key,
            AWS_SECRET_ACCESS_KEY=self.s3.secret_key, AWS_REGION=self.s3.region,
            PREFECT_API_URL=self.prefect_api, PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.update({f"FOLEY_{k.upper()}": v for k, v in settings.items()})
        return env

    def start(self, timeline: Path, **settings: str) -> subprocess.Popen[str]:
        """`foley run` in the background (`settings`: FOLEY_* overrides, see `env`)."""
        return subprocess.Popen([*FOLEY, "run", str(timeline), "--out", str(self.out)],
                                cwd=self.root, env=self.env(**settings), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, timeline: Path) -> subprocess.CompletedProcess[str]:
        proc = self.start(timeline)
        out, err = proc.communicate(timeout=600)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # -- what the studio holds ------------------------------------------------------------

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg.port, user=self.pg.user,
                                password=self.pg.password, dbname=self.db_name,
                                connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def count(self, task: str, status: str) -> int:
        """Activities of `task` in `status` (0 while the schema or server is not there)."""
        try:
            return self.query("SELECT count(*) FROM activities WHERE task = %s AND status = %s",
                              task, status)[0][0]
        except Exception:
            return 0

    def counts(self) -> dict[str, int]:
        return {t: self.query(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}

    def keys(self) -> set[str]:
        """Every object key in the bucket."""
        client = self.s3.client()
        return {o.object_name for o in client.list_objects(self.bucket, recursive=True)}

    def artifact_keys(self) -> set[str]:
        """The object keys the artifact rows name (media registered in place are file://)."""
        from urllib.parse import unquote, urlparse

        keys = set()
        for (uri,) in self.query("SELECT uri FROM artifacts"):
            u = urlparse(uri)
            if u.scheme == "s3":
                assert u.netloc == self.bucket, uri
                keys.add(unquote(u.path).lstrip("/"))
        return keys

    def manifest_keys(self) -> set[str]:
        """The manifest objects: they name the run and the database, so they differ by run."""
        rows = self.query("SELECT a.uri FROM artifacts a "
                          "JOIN generations g ON g.artifact_id = a.id "
                          "JOIN activities t ON t.id = g.activity_id WHERE t.task = 'manifest'")
        return {uri.split(f"s3://{self.bucket}/", 1)[1] for (uri,) in rows}

    def snapshot(self) -> dict[str, Any]:
        return {"counts": self.counts(), "keys": self.keys(), "files": delivered(self.out),
                "manifest_keys": self.manifest_keys()}


def delivered(out: Path) -> dict[str, str]:
    """sha256 of every delivered file but manifest.json, plus the manifest's own file list."""
    files = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    return {**files, "manifest.json#files": json.dumps(manifest["files"], sort_keys=True)}


@pytest.fixture
def studio(pg_server: PostgresServer, s3_server: S3Server, tmp_path: Path,
           prefect_api: str) -> Iterator[Studio]:
    st = Studio(pg_server, s3_server, tmp_path, prefect_api)
    yield st
    if not pg_server.running:
        pg_server.start()
    if not s3_server.running:
        s3_server.start()
    pg_server.drop_database(st.db_name)


@pytest.fixture(scope="module")
def clean(pg_server: PostgresServer, s3_server: S3Server, prefect_api: str, reel: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One clean studio pass of the reel: what every faulty run must end up holding."""
    st = Studio(pg_server, s3_server, tmp_path_factory.mktemp("clean"), prefect_api)
    t0 = time.monotonic()
    proc = st.run(reel)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"studio": st, "proc": proc, "seconds": time.monotonic() - t0, **st.snapshot()}


def assert_like_clean(st: Studio, clean: dict[str, Any]) -> None:
    """Same delivered bytes, same rows per table, same objects; nothing left running or orphaned."""
    snap = st.snapshot()
    assert snap["files"] == clean["files"]
    assert snap["counts"] == clean["counts"]
    assert len(snap["manifest_keys"]) == len(clean["manifest_keys"]) == 1
    assert snap["keys"] - snap["manifest_keys"] == clean["keys"] - clean["manifest_keys"]
    assert st.query("SELECT task, id FROM activities WHERE status <> 'completed'") == []
    assert snap["keys"] == st.artifact_keys(), "objects without rows, or rows without objects"


def wait_until(cond: Any, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the pass ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def take_down(server: PostgresServer | S3Server) -> None:
    """Stop a service at once: Postgres in fast mode (connections cut), the S3 server killed."""
    if isinstance(server, S3Server) and server.proc is not None:
        server.proc.kill()
        server.proc.wait(timeout=30)
    server.stop()


def proxies_done(st: Studio) -> Any:
    return lambda: st.count("proxy", "completed") == len(SHOTS)


def features_running(st: Studio) -> Any:
    return lambda: st.count("features", "running") >= 1


# ---------------------------------------------------------------- the pieces (fast)


def _lost(reason: str = "server closed the connection unexpectedly") -> Exception:
    from sqlalchemy.exc import OperationalError

    class Driver(Exception):
        pass

    Driver.__module__ = "psycopg2.extensions"  # what is_transient looks at
    return OperationalError("SELECT 1", {}, Driver(reason), connection_invalidated=True)


def test_retry_db_backs_off_boundedly_then_names_the_database() -> None:
    from sqlalchemy.exc import OperationalError

    from db.engine import DatabaseUnavailable, RetryPolicy, retry_db

    url = "postgresql://foley:s3cr3t-pw@db.studio:5432/foley"
    policy = RetryPolicy(attempts=4, base_s=0.5, max_delay_s=1.5)
    slept: list[float] = []
    calls = iter([_lost(), _lost(), "done"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_db(flaky, url=url, policy=policy, sleep=slept.append) == "done"
    assert slept == [0.5, 1.0]

    slept.clear()

    def down() -> None:
        raise _lost("connection to server failed: Connection refused")

    with pytest.raises(DatabaseUnavailable) as err:
        retry_db(down, url=url, policy=policy, sleep=slept.append)
    assert slept == [0.5, 1.0, 1.5]  # bounded: attempts - 1 waits, each at most max_delay_s
    text = str(err.value)
    assert "postgresql://foley:***@db.studio:5432/foley" in text and "s3cr3t-pw" not in text
    assert "4 attempts" in text and "Connection refused" in text and "rerun" in text
    # the server just stayed away a whole budget: other work does not wait for it again
    slept.clear()
    with pytest.raises(DatabaseUnavailable):
        retry_db(down, url=url, policy=policy, sleep=slept.append)
    assert slept == []
    assert retry_db(lambda: 7, url=url, policy=policy) == 7  # reached again: waits resume
    with pytest.raises(DatabaseUnavailable):
        retry_db(down, url=url, policy=RetryPolicy(attempts=2, base_s=0.1), sleep=slept.append)
    assert slept == [0.1]

    class Auth(Exception):
        pass

    Auth.__module__ = "psycopg2"
    refused = OperationalError(None, None, Auth('password authentication failed for user "x"'))
    with pytest.raises(OperationalError):  # no amount of waiting fixes a wrong password
        retry_db(lambda: (_ for _ in ()).throw(refused), url=url, policy=policy,
                 sleep=slept.append)
    with pytest.raises(ZeroDivisionError):
        retry_db(lambda: 1 / 0, url=url, policy=policy, sleep=slept.append)
    assert slept == [0.1]


def test_transactions_wait_out_a_postgres_restart(pg_server: PostgresServer, pg_url: str,
                                                  tmp_path: Path) -> None:
    import threading

    from db import api
    from db.engine import DatabaseUnavailable, RetryPolicy, set_retry_policy
    from tasks import runtime
    from tasks.stage import transaction

    runtime.configure(pg_url, str(tmp_path / "store"))
    old = set_retry_policy(RetryPolicy(attempts=10, base_s=0.2, max_delay_s=1.0))
    try:
        transaction(lambda s: api.get_agent(s, "user:anna"))
        pg_server.stop()
        later = threading.Timer(1.5, pg_server.start)
        later.start()
        try:
            assert transaction(lambda s: api.get_agent(s, "user:anna").name) == "user:anna"
        finally:
            later.join()
        set_retry_policy(RetryPolicy(attempts=3, base_s=0.1))
        pg_server.stop()
        t0 = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as err:
            transaction(lambda s: api.get_agent(s, "user:bob"))
        assert time.monotonic() - t0 < 5
        assert "did not answer (3 attempts" in str(err.value)
        assert pg_server.password not in str(err.value)
    finally:
        set_retry_policy(old)
        if not pg_server.running:
            pg_server.start()
        runtime.db().dispose()


def test_a_task_that_lost_its_connection_is_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from db.engine import RetryPolicy, set_retry_policy
    from flows import foley_pass

    class Future:
        def __init__(self, outcome: Any) -> None:
            self.outcome = outcome

        def result(self) -> Any:
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome

    sh = foley_pass.ShotState(1, "SH010", "01:00:00:00", 2.0, 24.0, None)
    outcomes = iter([_lost(), "second try"])
    old = set_retry_policy(RetryPolicy(attempts=3, base_s=0.01))
    try:
        assert foley_pass._settle("envelope", sh, Future(_lost()),
                                  lambda _: Future(next(outcomes))) == "second try"
        with pytest.raises(ValueError):  # a real failure of the shot is not retried
            foley_pass._settle("envelope", sh, Future(ValueError("bad media")),
                               lambda _: pytest.fail("resubmitted"))
    finally:
        set_retry_policy(old)


def test_an_outage_reaches_the_console_as_one_message() -> None:
    import logging

    from db.engine import DatabaseUnavailable
    from flows.foley_pass import PassAborted, _OutageFilter
    from tasks.store import StoreUnavailable

    f = _OutageFilter()

    def record(msg: str, exc: BaseException | None = None, level: int = logging.ERROR) -> bool:
        info = (type(exc), exc, None) if exc else None
        return f.filter(logging.LogRecord("prefect.task_runs", level, __file__, 1, msg, None,
                                          info))

    try:
        raise PassAborted("S3 endpoint gone") from StoreUnavailable("S3 endpoint gone")
    except PassAborted as exc:
        aborted = exc
    assert not record("Encountered exception during execution", aborted)
    assert not record("Task run failed", DatabaseUnavailable("database gone"))
    assert not record("Task run failed", _lost())
    assert not record("Finished in state Failed('Task run encountered an exception "
                      "StoreUnavailable: S3 endpoint http://x unreachable')")
    assert not record("Finished in state Failed('OperationalError: (psycopg2.OperationalError) "
                      "server closed the connection unexpectedly')")
    assert record("Task run failed", ValueError("bad media"))  # real failures stay visible
    assert record("Finished in state Failed('ValueError: bad media')")
    assert record("a warning", level=logging.WARNING)


# ---------------------------------------------------------------- same files on both backends


@slow
def test_studio_pass_delivers_the_same_files_as_embedded(clean: dict[str, Any], reel: Path,
                                                         tmp_path: Path, prefect_api: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FOLEY_"))}
    env.update(FOLEY_HOME=str(tmp_path / "home"), PREFECT_API_URL=prefect_api)
    out = tmp_path / "delivery"
    proc = subprocess.run([*FOLEY, "run", str(reel), "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert delivered(out) == clean["files"]
    embedded = json.loads((out / "manifest.json").read_text())
    studio = json.loads((clean["studio"].out / "manifest.json").read_text())
    assert embedded["provenance"]["db"].startswith("sqlite:")
    assert studio["provenance"]["db"].startswith("postgresql://")
    strip = lambda m: {k: v for k, v in m.items() if k != "provenance"}  # noqa: E731
    assert strip(embedded) == strip(studio)  # the manifest differs only where it must


@slow
def test_credentials_never_leak(clean: dict[str, Any], pg_server: PostgresServer,
                                s3_server: S3Server) -> None:
    st: Studio = clean["studio"]
    secrets = {"postgres password": pg_server.password, "S3 secret key": s3_server.secret_key}
    proc = clean["proc"]
    places = {"stdout": proc.stdout, "stderr": proc.stderr,
              "manifest.json": (st.out / "manifest.json").read_text()}
    tables = [t for (t,) in st.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    assert set(TABLES) <= set(tables)
    for table in tables:  # every column of every row, text and JSON alike
        places[f"table {table}"] = "\n".join(
            r for (r,) in st.query(f"SELECT row_to_json(t)::text FROM {table} t"))
    for name, text in places.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} leaked into {name}"
    for path in st.out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for what, secret in secrets.items():
                assert secret.encode() not in data, f"the {what} leaked into {path}"
    assert pg_server.user in places["manifest.json"]  # the URL is there, redacted


# ---------------------------------------------------------------- services going away


@slow
@pytest.mark.parametrize("service", ["postgres", "s3"])
def test_a_service_restart_mid_pass_is_waited_out(service: str, studio: Studio, reel: Path,
                                                  clean: dict[str, Any]) -> None:
    """Postgres / S3 stopped while the features wave runs, back a few seconds later (inside the
    retry budget): the pass completes as if nothing happened."""
    server = studio.pg if service == "postgres" else studio.s3
    proc = studio.start(reel)
    wait_until(features_running(studio), proc, "the features wave started")
    stopped = time.time()
    take_down(server)
    try:  # well inside the budgets: ~15 s for the database and for the store
        time.sleep(3 if service == "postgres" else 1.5)
    finally:
        server.start()
    restarted = time.time()
    print(f"{service} was away for {restarted - stopped:.1f} s")
    res = finish(proc)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "error" not in res.stderr.lower(), res.stderr
    # the outage fell inside the pass: features work started before it and work ended after
    # it (not necessarily the same activity: on a loaded machine the shot seen running may
    # finish before the service is down, and its neighbours carry on through the outage)
    before, after = studio.query(
        "SELECT count(*) FILTER (WHERE task = 'features' AND started_at < to_timestamp(%s)), "
        "count(*) FILTER (WHERE ended_at > to_timestamp(%s)) FROM activities",
        stopped, restarted)[0]
    assert before > 0 and after > 0, (before, after)
    assert_like_clean(studio, clean)


@slow
@pytest.mark.parametrize("service", ["postgres", "s3"])
def test_a_service_that_stays_away_fails_clearly_then_a_rerun_completes(
        service: str, studio: Studio, reel: Path, clean: dict[str, Any]) -> None:
    server = studio.pg if service == "postgres" else studio.s3
    # the same give-up path as the defaults (tries with backoff, then the stage's retries),
    # on a shorter budget: 4 tries (3.5 s of backoff) and 1 s before a stage retries, instead
    # of 15.5 s and 10 s — the defaults would spend about a minute waiting here
    proc = studio.start(reel, retry_attempts="4", task_retry_delay_s="1")
    wait_until(proxies_done(studio), proc, "the proxy wave finished")
    take_down(server)
    t0 = time.monotonic()
    try:
        res = finish(proc)
    finally:
        server.start()
    print(f"{service} away: the pass gave up after {time.monotonic() - t0:.1f} s")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    # stderr holds the progress bars and then exactly one message: no warnings, no tracebacks
    errors = [ln for ln in res.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.stderr
    message = errors[0].lower()
    named = "provenance database postgresql://" if service == "postgres" else "s3 endpoint http://"
    assert named in message and "rerun" in message and "completed work is kept" in message
    assert studio.pg.password not in res.stderr and studio.s3.secret_key not in res.stderr
    assert studio.count("proxy", "completed") == len(SHOTS)  # what completed was kept

    rerun = studio.run(reel)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_like_clean(studio, clean)


@slow
def test_a_killed_pass_reruns_to_exactly_what_a_clean_run_holds(
        studio: Studio, reel: Path, clean: dict[str, Any]) -> None:
    proc = studio.start(reel)
    wait_until(lambda: studio.count("features", "completed") >= 1, proc,
               "a features activity completed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert studio.count("conform", "completed") == 0  # it really died mid-way
    running = studio.query("SELECT count(*) FROM activities WHERE status = 'running'")[0][0]

    rerun = studio.run(reel)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_like_clean(studio, clean)
    print(f"killed with {running} activities running; rerun took them over")


@slow
def test_two_passes_of_one_reel_at_once(studio: Studio, reel: Path, clean: dict[str, Any]) -> None:
    procs = [studio.start(reel) for _ in range(2)]
    results = [finish(p) for p in procs]
    for res in results:
        assert res.returncode == 0, res.stdout + res.stderr
    assert_like_clean(studio, clean)
    # the reel lock made them take turns: one pass computed every stage, the other reused it
    runs = studio.query("SELECT DISTINCT prefect_flow_run_id FROM activities WHERE task IN "
                        "('proxy', 'features', 'envelope-predict', 'synth', 'spatial', 'conform')")
    assert len(runs) == 1, runs


# ---------------------------------------------------------------- overhead


@slow
def test_provenance_and_storage_overhead_is_reported(
        pg_server: PostgresServer, s3_store_url: str, reel: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> None:
    """The figure `foley bench` reports, measured here for one studio pass in-process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.bench import pass_overhead

    name = f"foley_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("FOLEY_DB_URL", pg_server.create_database(name))
    monkeypatch.setenv("FOLEY_HOME", str(tmp_path / "home"))
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            report, overhead = pass_overhead(reel, tmp_path / "out")
    finally:
        from tasks import runtime

        runtime.db().dispose()
        pg_server.drop_database(name)
    assert report.exit_code == 0
    assert overhead["stages_computed"] > 0 and overhead["db_s"] > 0 and overhead["store_s"] > 0
    assert set(overhead["per_shot"]) == {sh.name for sh in report.shots}
    assert 0 < overhead["share_of_pass"] < 1
    print("studio overhead:", json.dumps(overhead))


def test_review_app_serves_studio_media_by_presigned_urls(
        clean: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """In studio mode the review app hands the browser a presigned, expiring S3 URL for the
    picture proxy (the bucket itself stays private); the S3 server answers range requests."""
    import re

    import httpx
    from fastapi.testclient import TestClient

    from db import review
    from flows.settings import get_settings
    from review import auth
    from review.app import create_app
    from tasks import runtime

    st: Studio = clean["studio"]
    for k, v in st.env().items():
        if k.startswith(("FOLEY_", "AWS_")):
            monkeypatch.setenv(k, v)
    get_settings().configure_runtime()
    with runtime.db().session() as s:
        if review.get_user(s, "vi") is None:
            review.create_user(s, "vi", "viewer", auth.hash_password("a long password"))
    with TestClient(create_app(applier=False)) as c:
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        c.post("/login", data={"username": "vi", "password": "a long password",
                               "csrf_token": token})
        r = c.get(f"/media/{REEL}/SH010/proxy.mp4", follow_redirects=False)
    assert r.status_code == 307, r.text
    url = r.headers["location"]
    assert url.startswith(st.s3.endpoint) and "X-Amz-Expires=3600" in url
    assert st.s3.secret_key not in url
    part = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.content[4:8] == b"ftyp"  # an MP4
    unsigned = httpx.get(url.split("?")[0])
    assert unsigned.status_code == 403  # private bucket: no signature, no picture
