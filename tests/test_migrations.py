"""Migrations: from empty to head, models and migrations agree, upgrades are atomic and safe to
run from several processes at once, `connect` is cheap at head — on SQLite and on Postgres."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
from alembic import command
from sqlalchemy import create_engine, inspect, text

from db import api, migrate
from db.engine import normalize_url
from db.schema import Base
from tests.service_pg import run_in_processes, wait_for_others

REPO = Path(__file__).resolve().parents[1]
TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _sql(url: str, *statements: str) -> None:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head_and_matches_the_models(db_url: str) -> None:
    assert migrate.current(db_url) is None
    assert migrate.upgrade(db_url).endswith(f"(empty) → {migrate.head()}")
    assert migrate.current(db_url) == migrate.head()
    assert _tables(db_url) == TABLES
    migrate.check(db_url)  # autogenerate finds nothing to do: no drift
    assert migrate.upgrade(db_url).endswith(f"{migrate.head()} → {migrate.head()}")


def test_upgrade_message_hides_the_password(pg_url: str) -> None:
    password = normalize_url(pg_url).password
    assert password and password not in migrate.upgrade(pg_url)


def test_check_reports_drift(db_url: str) -> None:
    migrate.upgrade(db_url)
    _sql(db_url, "ALTER TABLE artifacts ADD COLUMN note TEXT",
         "DROP INDEX ix_decisions_envelope_id")
    with pytest.raises(migrate.SchemaDrift) as err:
        migrate.check(db_url)
    assert "note" in str(err.value) and "ix_decisions_envelope_id" in str(err.value)


def test_check_compares_column_types_on_postgres(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    _sql(pg_url, "ALTER TABLE decisions ALTER COLUMN params TYPE json USING params::json")
    with pytest.raises(migrate.SchemaDrift, match="params"):
        migrate.check(pg_url)


def test_check_refuses_a_database_behind_head(db_url: str) -> None:
    with pytest.raises(migrate.SchemaDrift, match="not at"):
        migrate.check(db_url)


def test_downgrade_to_empty_and_back(db_url: str) -> None:
    migrate.upgrade(db_url)
    command.downgrade(migrate.alembic_config(db_url), "base")
    assert _tables(db_url) == set() and migrate.current(db_url) is None
    migrate.upgrade(db_url)
    migrate.check(db_url)


def _a_shot_at(db_url: str, revision: str) -> None:
    """The database at `revision` with a person, two artifacts, a reel and its shot (id 1)."""
    command.upgrade(migrate.alembic_config(db_url), revision)
    _sql(db_url,
         "INSERT INTO agents (id, name, kind) VALUES (1, 'user:ed', 'person')",
         "INSERT INTO artifacts (id, sha256, uri, bytes, mime) VALUES "
         "(1, 'a', 'file:a', 1, 'application/json'), (2, 'b', 'file:b', 1, 'application/json')",
         "INSERT INTO reels (id, name, timeline_path, rate_num, rate_den, drop_frame, "
         "start_frame, start_timecode) VALUES (1, 'r', 'r.otio', 24, 1, false, 0, '00:00:00:00')",
         "INSERT INTO shots (id, reel_id, name, \"index\", clip_name, record_in_frame, "
         "duration_frames, record_in_s, duration_s, source_in_s, source_rate) "
         "VALUES (1, 1, 'SH010', 0, 'c', 0, 24, 0, 1, 0, 24)")


def test_0007_points_each_shot_at_the_run_it_used(db_url: str) -> None:
    """Before 0007 a shot's outputs were its latest completed run of the stage: the upgrade
    points each shot there, so nothing changes until the next pass sets the pointers."""
    _a_shot_at(db_url, "0006")
    _sql(db_url,
         "INSERT INTO activities (id, task, cache_key, code_version, shot_id, status, "
         "started_at, ended_at) VALUES "
         "(1, 'features', 'k1', 'v', 1, 'completed', '2026-01-01', '2026-01-01'), "
         "(2, 'features', 'k2', 'v', 1, 'completed', '2026-01-02', '2026-01-02'), "
         "(3, 'features', 'k3', 'v', 1, 'failed', '2026-01-03', '2026-01-03'), "
         "(4, 'proxy', 'k4', 'v', 1, 'completed', '2026-01-01', '2026-01-01'), "
         "(5, 'proxy', 'k5', 'v', NULL, 'completed', '2026-01-05', '2026-01-05')")
    migrate.upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT shot_id, task, activity_id FROM shot_stages "
                                     "ORDER BY task")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "features", 2), (1, "proxy", 4)]


def test_0006_stamps_the_predictions_saved_before_it_reported(db_url: str) -> None:
    """A prediction saved before 0006 was reported by the pass that saved it: the upgrade
    stamps it (its `created_at`), so the first pass after it says no old note again; a
    person's edit stays unstamped."""
    _a_shot_at(db_url, "0005")
    _sql(db_url,
         "INSERT INTO envelopes (shot_id, version, parent_version, artifact_id, content_sha256, "
         "source, created_by) VALUES (1, 1, NULL, 1, 'a', 'baseline', NULL), "
         "(1, 2, 1, 2, 'b', 'edit', 1)")
    migrate.upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, reported_at IS NOT NULL, "
                                     "reported_at = created_at FROM envelopes "
                                     "ORDER BY version")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(1, True, True), (2, False, None)]


def test_a_failed_upgrade_leaves_the_database_untouched(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All DDL of an upgrade runs in one transaction (SQLite too, via BEGIN IMMEDIATE)."""
    real_upgrade = command.upgrade

    def upgrade_then_fail(*args: object, **kwargs: object) -> None:
        real_upgrade(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("power cut after the last migration, before commit")

    monkeypatch.setattr(migrate.command, "upgrade", upgrade_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        migrate.upgrade(db_url)
    assert _tables(db_url) == set() and migrate.current(db_url) is None


def test_connect_creates_the_schema_then_only_checks_the_version(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = api.connect(db_url)
    db.dispose()
    assert migrate.current(db_url) == migrate.head()

    def must_not_run(*_: object) -> None:
        raise AssertionError("connect upgraded a database already at head")

    monkeypatch.setattr(migrate, "upgrade_engine", must_not_run)
    db = api.connect(db_url)
    with db.session() as s:
        assert api.get_agent(s, "user:anna").kind == "person"
    db.dispose()


def _connect_and_report(url: str) -> str | None:
    wait_for_others()
    db = api.connect(url)
    try:
        with db.engine.connect() as conn:
            return migrate.revision_of(conn)
    finally:
        db.dispose()


def test_processes_connecting_to_an_empty_database_at_once(db_url: str) -> None:
    revisions = run_in_processes(_connect_and_report, [(db_url,)] * 3)
    assert revisions == [migrate.head()] * 3
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()
    migrate.check(db_url)


def test_a_create_all_database_is_adopted(tmp_path: Path) -> None:
    """Embedded databases made before migrations existed keep their rows and end up exactly
    as the migrations would have made them (64-bit sizes, checks, defaults, indexes)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        for ddl in CREATE_ALL_BEFORE_MIGRATIONS.split(";\n"):
            conn.exec_driver_sql(ddl)
        conn.execute(text("INSERT INTO agents (name, kind) VALUES ('user:anna', 'person')"))
        conn.execute(text("INSERT INTO artifacts (sha256, uri, bytes, mime) "
                          "VALUES ('ab', 'file:///a', 7, 'text/plain')"))
        conn.execute(text("INSERT INTO activities (task, cache_key, parameters, code_version, "
                          "status, result) VALUES ('media', 'k', '{\"fps\": 24}', 'v', "
                          "'completed', '{}')"))
        conn.execute(text("INSERT INTO generations VALUES (1, 1, 'proxy')"))
    engine.dispose()
    db = api.connect(url)
    with db.session() as s:
        assert api.get_agent(s, "user:anna").id == 1
        done = api.find_completed(s, "media", "k")
        assert done is not None and done.parameters == {"fps": 24}
        assert api.activity_outputs(s, done)["proxy"]["uri"] == "file:///a"
    db.dispose()
    migrate.check(url)
    assert {t for t in _tables(url) if t.startswith("_legacy")} == set()


def test_a_database_from_newer_code_is_refused(db_url: str) -> None:
    migrate.upgrade(db_url)
    _sql(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(migrate.MigrationError, match="9999.*upgrade foleyflow"):
        api.connect(db_url)


def test_command_line_entry_point(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = [sys.executable, "-m", "db.migrate"]
    up = subprocess.run([*run, "upgrade", url], cwd=REPO, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert f"(empty) → {migrate.head()}" in up.stdout
    ok = subprocess.run([*run, "check", url], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "matches db/schema.py" in ok.stdout, ok.stderr


def test_migrations_ship_inside_the_package() -> None:
    """An installed foleyflow (not only a checkout) can migrate: the folders are packages and
    the revision template is package data."""
    packages = setuptools.find_packages(str(REPO), include=["db*"])
    assert {"db.migrations", "db.migrations.versions"} <= set(packages)
    assert (migrate.MIGRATIONS / "script.py.mako").is_file()
    revisions = sorted(p.name for p in (migrate.MIGRATIONS / "versions").glob("0*.py"))
    assert revisions[0].startswith(migrate.INITIAL)


# What `Base.metadata.create_all` made before migrations existed (the schema of 2fd935d).
CREATE_ALL_BEFORE_MIGRATIONS = """\
CREATE TABLE agents (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, kind VARCHAR(20) NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, CONSTRAINT pk_agents PRIMARY KEY (id), CONSTRAINT uq_agents_name UNIQUE (name));
CREATE TABLE artifacts (id INTEGER NOT NULL, sha256 VARCHAR(64) NOT NULL, uri TEXT NOT NULL, bytes INTEGER NOT NULL, mime VARCHAR(100) NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, CONSTRAINT pk_artifacts PRIMARY KEY (id), CONSTRAINT uq_artifacts_sha256 UNIQUE (sha256));
CREATE TABLE reels (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, timeline_path TEXT NOT NULL, timeline_artifact_id INTEGER, rate_num INTEGER NOT NULL, rate_den INTEGER NOT NULL, drop_frame BOOLEAN NOT NULL, start_frame INTEGER NOT NULL, start_timecode VARCHAR(20) NOT NULL, delivery_dir TEXT, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, CONSTRAINT pk_reels PRIMARY KEY (id), CONSTRAINT uq_reels_name UNIQUE (name), CONSTRAINT fk_reels_timeline_artifact_id_artifacts FOREIGN KEY(timeline_artifact_id) REFERENCES artifacts (id));
CREATE TABLE library_sounds (id INTEGER NOT NULL, library VARCHAR(200) NOT NULL, rel_path TEXT NOT NULL, category VARCHAR(100) NOT NULL, material VARCHAR(100) NOT NULL, action VARCHAR(100) NOT NULL, caption TEXT NOT NULL, kind VARCHAR(20) NOT NULL, source_sha256 VARCHAR(64) NOT NULL, artifact_id INTEGER NOT NULL, duration_s DOUBLE NOT NULL, loudness_db DOUBLE NOT NULL, CONSTRAINT pk_library_sounds PRIMARY KEY (id), CONSTRAINT uq_library_sounds_library_rel_path UNIQUE (library, rel_path), CONSTRAINT fk_library_sounds_artifact_id_artifacts FOREIGN KEY(artifact_id) REFERENCES artifacts (id));
CREATE TABLE shots (id INTEGER NOT NULL, reel_id INTEGER NOT NULL, name VARCHAR(100) NOT NULL, "index" INTEGER NOT NULL, clip_name TEXT NOT NULL, record_in_frame INTEGER NOT NULL, duration_frames INTEGER NOT NULL, record_in_s DOUBLE NOT NULL, duration_s DOUBLE NOT NULL, source_path TEXT, source_in_s DOUBLE NOT NULL, source_rate DOUBLE NOT NULL, foley_hint TEXT, in_edit BOOLEAN NOT NULL, skipped_reason TEXT, CONSTRAINT pk_shots PRIMARY KEY (id), CONSTRAINT uq_shots_reel_id_name UNIQUE (reel_id, name), CONSTRAINT fk_shots_reel_id_reels FOREIGN KEY(reel_id) REFERENCES reels (id) ON DELETE CASCADE);
CREATE TABLE envelopes (id INTEGER NOT NULL, shot_id INTEGER NOT NULL, version INTEGER NOT NULL, parent_version INTEGER, artifact_id INTEGER NOT NULL, content_sha256 VARCHAR(64) NOT NULL, source TEXT NOT NULL, state VARCHAR(20) NOT NULL, created_by INTEGER, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, CONSTRAINT pk_envelopes PRIMARY KEY (id), CONSTRAINT uq_envelopes_shot_id_version UNIQUE (shot_id, version), CONSTRAINT fk_envelopes_shot_id_shots FOREIGN KEY(shot_id) REFERENCES shots (id) ON DELETE CASCADE, CONSTRAINT fk_envelopes_artifact_id_artifacts FOREIGN KEY(artifact_id) REFERENCES artifacts (id), CONSTRAINT fk_envelopes_created_by_agents FOREIGN KEY(created_by) REFERENCES agents (id));
CREATE TABLE activities (id INTEGER NOT NULL, task VARCHAR(100) NOT NULL, cache_key VARCHAR(64) NOT NULL, parameters JSON NOT NULL, code_version VARCHAR(100) NOT NULL, checkpoint_sha256 VARCHAR(64), seed INTEGER, reel_id INTEGER, shot_id INTEGER, agent_id INTEGER, prefect_flow_run_id VARCHAR(64), prefect_task_run_id VARCHAR(64), status VARCHAR(20) NOT NULL, error TEXT, result JSON NOT NULL, started_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, ended_at DATETIME, CONSTRAINT pk_activities PRIMARY KEY (id), CONSTRAINT fk_activities_reel_id_reels FOREIGN KEY(reel_id) REFERENCES reels (id) ON DELETE SET NULL, CONSTRAINT fk_activities_shot_id_shots FOREIGN KEY(shot_id) REFERENCES shots (id) ON DELETE SET NULL, CONSTRAINT fk_activities_agent_id_agents FOREIGN KEY(agent_id) REFERENCES agents (id));
CREATE TABLE decisions (id INTEGER NOT NULL, envelope_id INTEGER NOT NULL, agent_id INTEGER NOT NULL, decision VARCHAR(20) NOT NULL, comment TEXT, params JSON NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, CONSTRAINT pk_decisions PRIMARY KEY (id), CONSTRAINT fk_decisions_envelope_id_envelopes FOREIGN KEY(envelope_id) REFERENCES envelopes (id) ON DELETE CASCADE, CONSTRAINT fk_decisions_agent_id_agents FOREIGN KEY(agent_id) REFERENCES agents (id));
CREATE TABLE usages (activity_id INTEGER NOT NULL, artifact_id INTEGER NOT NULL, role VARCHAR(300) NOT NULL, CONSTRAINT pk_usages PRIMARY KEY (activity_id, artifact_id, role), CONSTRAINT fk_usages_activity_id_activities FOREIGN KEY(activity_id) REFERENCES activities (id) ON DELETE CASCADE, CONSTRAINT fk_usages_artifact_id_artifacts FOREIGN KEY(artifact_id) REFERENCES artifacts (id));
CREATE TABLE generations (activity_id INTEGER NOT NULL, artifact_id INTEGER NOT NULL, role VARCHAR(300) NOT NULL, CONSTRAINT pk_generations PRIMARY KEY (activity_id, artifact_id, role), CONSTRAINT fk_generations_activity_id_activities FOREIGN KEY(activity_id) REFERENCES activities (id) ON DELETE CASCADE, CONSTRAINT fk_generations_artifact_id_artifacts FOREIGN KEY(artifact_id) REFERENCES artifacts (id));
CREATE TABLE derivations (derived_id INTEGER NOT NULL, source_id INTEGER NOT NULL, activity_id INTEGER NOT NULL, CONSTRAINT pk_derivations PRIMARY KEY (derived_id, source_id, activity_id), CONSTRAINT fk_derivations_derived_id_artifacts FOREIGN KEY(derived_id) REFERENCES artifacts (id), CONSTRAINT fk_derivations_source_id_artifacts FOREIGN KEY(source_id) REFERENCES artifacts (id), CONSTRAINT fk_derivations_activity_id_activities FOREIGN KEY(activity_id) REFERENCES activities (id) ON DELETE CASCADE);
CREATE INDEX ix_activities_task_cache_key ON activities (task, cache_key)"""  # noqa: E501
