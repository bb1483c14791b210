"""Studio mode's database on a real Postgres: the provenance API contract (on SQLite too),
concurrent writers in separate processes, reel locks, the app / migration roles of
db/grants.sql, and surviving a server restart."""
from __future__ import annotations

import hashlib
import inspect as pyinspect
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from db import api, locks, migrate
from db.engine import normalize_url, redact_url
from tests.service_pg import PostgresServer, run_in_processes, wait_for_others

GRANTS = Path(api.__file__).resolve().parent / "grants.sql"
REEL = dict(timeline_path="/edit/R1.otio", rate_num=24000, rate_den=1001, drop_frame=False,
            start_frame=86400, start_timecode="01:00:00:00")


def _ref(content: str, mime: str = "application/json", size: int | None = None) -> dict[str, Any]:
    sha = hashlib.sha256(content.encode()).hexdigest()
    return {"uri": f"file:///store/{sha}.json", "sha256": sha,
            "bytes": len(content) if size is None else size, "mime": mime}


def _shot_fields(name: str, index: int = 0) -> dict[str, Any]:
    return dict(name=name, index=index, clip_name=f"{name}.mov", record_in_frame=index * 24,
                duration_frames=24, record_in_s=index * 1.001, duration_s=1.001,
                source_path=None, source_in_s=0.0, source_rate=23.976, foley_hint=None,
                skipped_reason=None)


def _make_shot(db: api.Database, reel: str = "R1", shot: str = "SH010") -> int:
    with db.session() as s:
        r = api.upsert_reel(s, name=reel, **REEL)
        (sh,) = api.upsert_shots(s, r, [_shot_fields(shot)])
        return sh.id


@pytest.fixture
def db(db_url: str) -> Any:
    database = api.connect(db_url)
    yield database
    database.dispose()


# ---------------------------------------------------------------- the API contract, both backends


def test_reels_and_shots_follow_the_edit(db: api.Database) -> None:
    with db.session() as s:
        reel = api.upsert_reel(s, name="R1", **REEL)
        api.upsert_shots(s, reel, [_shot_fields("SH010", 0), _shot_fields("SH020", 1)])
    with db.session() as s:
        reel = api.upsert_reel(s, name="R1", **{**REEL, "delivery_dir": "/out/R1"})
        api.upsert_shots(s, reel, [_shot_fields("SH020", 0)])  # SH010 was cut
    with db.session() as s:
        found = api.get_reel(s, "R1")
        assert found is not None and found.delivery_dir == "/out/R1"
        assert sorted((sh.name, sh.in_edit, sh.index) for sh in found.shots) == [
            ("SH010", False, 0), ("SH020", True, 0)]
        assert api.get_shot(s, "R1", "SH010") is not None and api.get_shot(s, "R1", "x") is None
        assert found.created_at is not None and found.updated_at is not None


def test_artifacts_and_agents_are_created_once(db: api.Database) -> None:
    big = _ref("camera original", "video/quicktime", size=5 * 2**30)  # > 2 GiB
    with db.session() as s:
        first = api.put_artifact(s, big)
        again = api.put_artifact(s, {**big, "uri": "s3://elsewhere"})
        assert first.id == again.id and again.uri == big["uri"] and again.bytes == 5 * 2**30
        assert api.get_agent(s, "user:anna").id == api.get_agent(s, "user:anna").id
        kinds = [api.get_agent(s, n).kind for n in ("user:x", "policy:auto", "model:m", "foley")]
        assert kinds == ["person", "policy", "model", "software"]
    with db.session() as s:
        assert api.find_artifact(s, big["sha256"]).ref() == big  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(api.Artifact)) == 1


def test_activities_record_lineage(db: api.Database) -> None:
    timeline, proxy, env = _ref("timeline"), _ref("proxy"), _ref("envelope")
    params = {"fps": 24, "nested": {"a": [1, 2.5, None, "ü"]}}
    with db.session() as s:
        a1 = api.start_activity(s, task="media", cache_key="k1", parameters=params,
                                code_version="v1", seed=7)
        api.finish_activity(s, a1.id, used={"timeline": timeline}, generated={"proxy": proxy},
                            result={"frames": 24})
        a2 = api.start_activity(s, task="envelope", cache_key="k2", code_version="v1")
        api.finish_activity(s, a2.id, used={"proxy": proxy}, generated={"envelope": env})
        bad = api.start_activity(s, task="media", cache_key="k3", code_version="v1")
        api.fail_activity(s, bad.id, "decoder exploded")
    with db.session() as s:
        done = api.find_completed(s, "media", "k1")
        assert done is not None and done.result == {"frames": 24} and done.parameters == params
        assert done.ended_at is not None and done.started_at is not None
        assert api.activity_outputs(s, done) == {"proxy": proxy}
        assert api.find_completed(s, "media", "k3") is None
        node = api.lineage(s, env["sha256"])
        assert node is not None and node.activity["task"] == "envelope"  # type: ignore[index]
        (src,) = node.inputs
        assert src.role == "proxy" and src.inputs[0].artifact == timeline
        assert s.scalar(select(func.count()).select_from(api.Derivation)) == 2


def test_envelope_versions_decisions_and_the_approval_rule(db: api.Database) -> None:
    sid = _make_shot(db)
    with db.session() as s:
        with pytest.raises(api.NotApproved, match="no envelope"):
            api.approved_envelope(s, sid)
        v1 = api.add_envelope(s, sid, _ref("v1"), content_sha256="a" * 64, source="model:m")
        with pytest.raises(api.NotApproved, match="SH010.*pending_review"):
            api.approved_envelope(s, sid)
        api.decide(s, v1.id, agent="policy:auto", decision="approved", params={"threshold": 0.5})
        assert api.approved_envelope(s, sid).version == 1
        v2 = api.add_envelope(s, sid, _ref("v2"), content_sha256="b" * 64, source="user:anna",
                              parent_version=1, created_by="user:anna")
        assert (v2.version, v2.parent_version, v2.state) == (2, 1, "pending_review")
        with pytest.raises(api.NotApproved):  # the newest version is not approved yet
            api.approved_envelope(s, sid)
        with pytest.raises(ValueError, match="decision must be one of"):
            api.decide(s, v2.id, agent="user:anna", decision="maybe")
        api.decide(s, v2.id, agent="user:anna", decision="retake_requested", comment="softer")
    with db.session() as s:
        env = api.latest_envelope(s, sid)
        assert env is not None and env.state == "retake_requested"
        assert [(d.agent.name, d.decision, d.params) for d in env.decisions] == [
            ("user:anna", "retake_requested", {})]


def test_the_database_refuses_impossible_rows(db: api.Database) -> None:
    """Check constraints back the API's rules for writers that bypass it."""
    sid = _make_shot(db)
    with db.session() as s:
        api.add_envelope(s, sid, _ref("v1"), content_sha256="a" * 64, source="x")
    for sql in ("UPDATE envelopes SET state = 'maybe'", "UPDATE envelopes SET version = 0"):
        with pytest.raises(IntegrityError), db.session() as s:
            s.execute(text(sql))


def test_library_is_replaced_as_a_whole(db: api.Database) -> None:
    def sound(rel: str, caption: str) -> dict[str, Any]:
        return dict(rel_path=rel, category="steps", material="gravel", action="walk",
                    caption=caption, kind="oneshot", source_sha256="c" * 64, duration_s=0.5,
                    loudness_db=-20.0, ref=_ref(rel + caption, "audio/wav"))

    with db.session() as s:
        api.replace_library(s, "kit", [sound("a.wav", "one"), sound("b.wav", "two")])
    with db.session() as s:
        assert api.replace_library(s, "kit", [sound("b.wav", "two, again")]) == 1
    with db.session() as s:
        assert [(r.rel_path, r.caption) for r in api.library_sounds(s, "kit")] == [
            ("b.wav", "two, again")]


def test_urls_are_normalised_and_redacted(db_url: str) -> None:
    u = normalize_url(db_url)
    assert u.get_backend_name() in ("sqlite", "postgresql")
    if u.get_backend_name() == "postgresql":
        assert u.drivername == "postgresql+psycopg2" and db_url.startswith("postgresql://")
        assert u.password and u.password not in api.redact_url(db_url)
    assert normalize_url("postgres://u:p@h/d").drivername == "postgresql+psycopg2"
    assert "s3cret" not in redact_url("postgresql://foley:s3cret@db:5432/foley")
    assert redact_url("postgresql://foley@db/foley?password=s3cret&sslmode=require") == \
        "postgresql://foley@db/foley?password=***&sslmode=require"


def test_store_suite_runs_against_postgres(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_store_db.py, unchanged, with FOLEY_DB_URL=postgresql://… (studio mode)."""
    from tests import test_store_db as suite

    cases = [fn for name, fn in vars(suite).items()
             if name.startswith("test_") and pyinspect.isfunction(fn)
             and "foley_home" in pyinspect.signature(fn).parameters]
    assert len(cases) >= 4
    for i, case in enumerate(cases):
        work = tmp_path / f"case{i}"
        work.mkdir()
        db = api.connect(pg_url)  # a clean slate per case, like the suite's fresh home
        with db.engine.begin() as conn:
            names = ", ".join(t.name for t in api.Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        db.dispose()
        home = work / "foley-home"
        monkeypatch.setenv("FOLEY_HOME", str(home))
        monkeypatch.setenv("FOLEY_DB_URL", pg_url)
        monkeypatch.delenv("FOLEY_STORE_URL", raising=False)
        from flows.settings import get_settings
        from tasks import runtime

        get_settings().configure_runtime()
        assert runtime.db().engine.dialect.name == "postgresql"
        kwargs = {"foley_home": home, "tmp_path": work}
        case(**{k: v for k, v in kwargs.items() if k in pyinspect.signature(case).parameters})


# ---------------------------------------------------------------- concurrent writers


def _same_keys_worker(url: str, shot_id: int, worker: int, rounds: int) -> list[int]:
    """Each round, every worker writes the same artifact, agent and a new envelope version."""
    db = api.connect(url)
    versions = []
    try:
        for i in range(rounds):
            wait_for_others()
            with db.session() as s:
                api.put_artifact(s, _ref(f"shared {i}"))
                api.get_agent(s, f"user:editor{i}")
                env = api.add_envelope(s, shot_id, _ref(f"env {i}"), content_sha256="e" * 64,
                                       source=f"worker{worker}", created_by=f"model:m{i}")
                versions.append(env.version)
    finally:
        db.dispose()
    return versions


def test_processes_writing_the_same_keys_create_no_duplicates(db_url: str) -> None:
    db = api.connect(db_url)
    sid = _make_shot(db)
    workers, rounds = 3, 15
    results = run_in_processes(_same_keys_worker,
                               [(db_url, sid, w, rounds) for w in range(workers)])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(api.Artifact)) == 2 * rounds
        assert s.scalar(select(func.count()).select_from(api.Agent)) == 2 * rounds
        versions = sorted(s.scalars(select(api.Envelope.version).where(
            api.Envelope.shot_id == sid)))
    assert versions == list(range(1, workers * rounds + 1))
    assert sorted(v for vs in results for v in vs) == versions
    db.dispose()


def _slow_envelope_writer(url: str, shot_id: int, tag: str) -> int:
    """Add a version, then keep the transaction open a while (a slow pass or review click)."""
    db = api.connect(url)
    try:
        wait_for_others()
        with db.session() as s:
            env = api.add_envelope(s, shot_id, _ref(tag), content_sha256=tag * 64, source=tag)
            time.sleep(0.5)
            return env.version
    finally:
        db.dispose()


def test_two_writers_of_one_shot_get_consecutive_versions(db_url: str) -> None:
    db = api.connect(db_url)
    sid = _make_shot(db)
    with db.session() as s:
        api.add_envelope(s, sid, _ref("v1"), content_sha256="0" * 64, source="model")
    got = run_in_processes(_slow_envelope_writer, [(db_url, sid, "a"), (db_url, sid, "b")])
    assert sorted(got) == [2, 3]
    with db.session() as s:
        assert [e.version for e in s.get(api.Shot, sid).envelopes] == [1, 2, 3]  # type: ignore
    db.dispose()


# ---------------------------------------------------------------- reel locks


def _pass_over_reel(url: str, reel: str, log: str, tag: str) -> None:
    db = api.connect(url)
    try:
        wait_for_others()
        with api.reel_lock(db, reel):
            for step in ("start", "end"):
                with open(log, "a") as f:
                    f.write(f"{tag} {step}\n")
                time.sleep(0.3)
    finally:
        db.dispose()


def test_two_passes_of_one_reel_take_turns(db_url: str, tmp_path: Path) -> None:
    api.connect(db_url).dispose()
    log = tmp_path / "passes.log"
    run_in_processes(_pass_over_reel, [(db_url, "R1", str(log), t) for t in "ab"])
    lines = log.read_text().split()
    steps = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    first, second = steps[0][0], steps[2][0]
    assert first != second
    assert steps == [(first, "start"), (first, "end"), (second, "start"), (second, "end")]


def _hold_reel(url: str, reel: str, flag: str, release: str) -> None:
    db = api.connect(url)
    try:
        with api.reel_lock(db, reel):
            Path(flag).touch()
            wait_for_others()  # the main process is told through `flag`; others line up here
            deadline = time.monotonic() + 60
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        db.dispose()


def test_a_held_reel_times_out_and_other_reels_are_free(db_url: str, tmp_path: Path) -> None:
    import concurrent.futures

    db = api.connect(db_url)
    flag, release = tmp_path / "held", tmp_path / "release"
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        holder = ex.submit(run_in_processes, _hold_reel, [(db_url, "R1", str(flag), str(release))])
        deadline = time.monotonic() + 60
        while not flag.exists() and not holder.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert flag.exists(), holder.result() if holder.done() else "holder never started"
            with pytest.raises(api.LockTimeout, match="reel 'R1' is locked"):
                with api.reel_lock(db, "R1", timeout=0.3):
                    pass
            with api.reel_lock(db, "R2", timeout=5):  # another reel: not blocked
                pass
        finally:
            release.touch()
        holder.result(timeout=60)
    with api.reel_lock(db, "R1", timeout=5):  # released with the holder
        pass
    db.dispose()


# ---------------------------------------------------------------- roles and server restarts


def test_grants_make_an_app_role_that_cannot_change_the_schema(pg_server: PostgresServer) -> None:
    name = f"foley_{secrets.token_hex(6)}"
    pg_server.create_database(name)
    suffix = secrets.token_hex(3)
    migrator, app = f"foley_migrator_{suffix}", f"foley_app_{suffix}"
    mpw, apw = secrets.token_hex(8), "it's%a@secret"  # quoting and URL escaping exercised
    grants = ["-v", f"migrator_role={migrator}", "-v", f"migrator_password={mpw}",
              "-v", f"app_role={app}", "-v", f"app_password={apw}", "-f", str(GRANTS)]
    migrator_url = pg_server.url(name, user=migrator, password=mpw)
    app_url = pg_server.url(name, user=app, password=apw)
    try:
        pg_server.psql(*grants, dbname=name)
        with pytest.raises(migrate.MigrationError, match="migration role"):
            api.connect(app_url)  # the app role cannot create the schema
        assert "(empty) → " in migrate.upgrade(migrator_url)
        pg_server.psql(*grants, dbname=name)  # again, as documented, after the first upgrade

        db = api.connect(app_url)
        sid = _make_shot(db)
        with db.session() as s:
            env = api.add_envelope(s, sid, _ref("v1"), content_sha256="a" * 64, source="x")
            api.decide(s, env.id, agent="user:anna", decision="approved")
            s.delete(s.get(api.Decision, 1))
        for sql in ("DROP TABLE decisions", "ALTER TABLE artifacts ADD COLUMN x INTEGER",
                    "TRUNCATE artifacts CASCADE", "CREATE TABLE mine (id INTEGER)",
                    "UPDATE alembic_version SET version_num = 'x'"):
            with pytest.raises(ProgrammingError) as err, db.session() as s:
                s.execute(text(sql))
            assert err.value.orig.pgcode == "42501", sql  # type: ignore[union-attr]
        db.dispose()
        migrate.check(migrator_url)
        assert "→ " + migrate.head() in migrate.upgrade(migrator_url)
    finally:
        pg_server.drop_database(name)


def test_connections_survive_a_server_restart(pg_server: PostgresServer, pg_url: str) -> None:
    db = api.connect(pg_url)
    sid = _make_shot(db)
    pg_server.stop()
    try:
        with pytest.raises(DBAPIError), db.session() as s:
            api.get_agent(s, "user:anna")
    finally:
        pg_server.start()
    with db.session() as s:  # pooled connections were cut: pre-ping replaces them
        api.add_envelope(s, sid, _ref("after restart"), content_sha256="f" * 64, source="x")
    with api.reel_lock(db, "R1", timeout=5):
        pass
    db.dispose()


def test_a_held_reel_lock_is_taken_again_after_a_server_restart(
    pg_server: PostgresServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart drops every advisory lock; the pass that held one takes it back, so a second
    pass started after the restart still waits for the first."""
    monkeypatch.setattr(locks, "KEEPALIVE_S", 0.2)
    db, other = api.connect(pg_url), api.connect(pg_url)
    try:
        with api.reel_lock(db, "R1", timeout=5):
            pg_server.stop()
            time.sleep(0.5)  # the keeper notices the dead connection while the server is away
            pg_server.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the keeper has re-taken it
                try:
                    with api.reel_lock(other, "R1", timeout=0.1):
                        pass
                except api.LockTimeout:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the reel lock was not taken again within 10 s of the restart")
        with api.reel_lock(other, "R1", timeout=5):  # released at the end of the block
            pass
    finally:
        db.dispose()
        other.dispose()


# ---------------------------------------------------------------- review decisions


def _decide_in_process(url: str, user: str, decision: str) -> str:
    """One supervisor's decision on R1 SH010 v1, seen pending; returns 'ok' or the conflict."""
    from db import review

    database = api.connect(url)
    try:
        wait_for_others()
        with database.session() as s:
            sh = api.get_shot(s, "R1", "SH010")
            review.take_decision(s, sh, version=1, decision=decision, comment="x",
                                 user=review.get_user(s, user), expect_state="pending_review")
        return "ok"
    except review.StaleReview as exc:
        return f"conflict: {exc}"
    finally:
        database.dispose()


def test_two_supervisors_deciding_one_shot_at_once(db: api.Database, db_url: str) -> None:
    """Both saw v1 pending and decide in the same instant from two processes: exactly one
    decision is written; the other gets a conflict naming who decided."""
    from db import review

    sid = _make_shot(db)
    with db.session() as s:
        api.add_envelope(s, sid, _ref("v1"), content_sha256="a" * 64, source="baseline")
        for name in ("anna", "bo"):
            review.create_user(s, name, "supervisor", "not-a-real-hash")
    results = run_in_processes(_decide_in_process, [(db_url, "anna", "approved"),
                                                    (db_url, "bo", "omitted")])
    assert sorted(r.split(":")[0] for r in results) == ["conflict", "ok"], results
    winner = "user:anna" if results[0] == "ok" else "user:bo"
    loser = next(r for r in results if r.startswith("conflict"))
    assert f"(by {winner})" in loser and "nothing was written" in loser
    with db.session() as s:
        env = api.latest_envelope(s, sid)
        assert [d.agent.name for d in env.decisions] == [winner]
        assert env.state == ("approved" if winner == "user:anna" else "omitted")
        assert len(review.pending_jobs(s)) == 1
        assert [a.actor for a in review.audit_trail(s) if a.action.startswith("decision:")] == [
            winner]
