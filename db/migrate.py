"""Schema migrations of the provenance database (Alembic, configured in code).

The migrations ship inside the `db` package, so an installed foleyflow can migrate its own
database: `upgrade(url)` (what `foley db upgrade` runs), `current(url)`, `check(url)` (models
and migrations agree). `db.api.connect` calls `ensure_head`, which costs one version query
when the database is already at head.

Two processes upgrading at once take turns: on Postgres the whole upgrade runs in one
transaction (Postgres DDL is transactional) holding a transaction-level advisory lock; on
SQLite it runs in one `BEGIN IMMEDIATE` transaction, which SQLite grants one writer at a
time. Either way the second process finds the schema at head and does nothing, and a failed
upgrade leaves the database as it was.

An embedded database made by the old `create_all` (before migrations existed) is adopted: it
is rebuilt as the first revision with its rows, then upgraded as usual.
"""
from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db.engine import make_engine, redact_url
from db.locks import advisory_key
from db.schema import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
INITIAL = "0001"
MIGRATE_LOCK = advisory_key("foleyflow:migrate")


class MigrationError(RuntimeError):
    """The database cannot be brought to (or is not at) the schema this foleyflow needs."""


class SchemaDrift(MigrationError):
    """The models in db/schema.py and the database the migrations built differ."""


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for Alembic's migration context, shared by env.py and `check`."""
    return {"compare_type": True, "render_as_batch": dialect_name == "sqlite"}


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolates '%': a password may contain one.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this foleyflow ships."""
    rev = _scripts().get_current_head()
    assert rev is not None, f"no migrations found in {MIGRATIONS}"
    return rev


def known_revisions() -> set[str]:
    return {s.revision for s in _scripts().walk_revisions()}


def revision_of(conn: Connection) -> str | None:
    """The database's revision (None for a database no migration has touched)."""
    return MigrationContext.configure(conn).get_current_revision()


def current(url: str) -> str | None:
    """The revision the database at `url` is at."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    finally:
        engine.dispose()


def upgrade(url: str) -> str:
    """Bring the database at `url` to head; returns `url: before → after` (password hidden)."""
    engine = make_engine(url, pooled=False)
    try:
        before, after = upgrade_engine(engine)
    finally:
        engine.dispose()
    return f"{redact_url(url)}: {before or '(empty)'} → {after}"


def ensure_head(engine: Engine) -> None:
    """Upgrade the database behind `engine` unless it is at head (one query when it is)."""
    with engine.connect() as conn:
        rev = revision_of(conn)
    if rev == head():
        return
    try:
        upgrade_engine(engine)
    except DBAPIError as exc:
        raise MigrationError(
            f"{redact_url(engine.url)} is at schema revision {rev or '(empty)'}, this foleyflow "
            f"needs {head()}, and upgrading it failed: {exc.orig}. If this account may not "
            "change the schema (studio app role), run `foley db upgrade` with the migration "
            "role's URL."
        ) from exc


def upgrade_engine(engine: Engine) -> tuple[str | None, str]:
    """Upgrade to head under the migration lock; returns (revision before, revision after)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with _migration_transaction(engine) as conn:
        before = revision_of(conn)
        if before is not None and before not in known_revisions():
            raise MigrationError(
                f"{redact_url(engine.url)} is at schema revision {before}, which this foleyflow "
                f"does not know (its newest is {head()}): upgrade foleyflow"
            )
        cfg.attributes["connection"] = conn
        if before is None and inspect(conn).has_table("agents"):
            _adopt_create_all_database(conn, cfg)
        command.upgrade(cfg, "head")
        after = revision_of(conn)
    assert after is not None
    return before, after


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that no other migrating process shares."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # Foreign keys off while tables are rebuilt (batch mode drops and re-creates them;
            # with enforcement on, dropping a parent table would cascade-delete its children).
            # The pragma is a no-op inside a transaction, so it comes first.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()  # ends SQLAlchemy's autobegun (empty) transaction
            try:
                with conn.begin():
                    # pysqlite leaves DDL outside transactions: open a real one ourselves.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield conn
                    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise MigrationError(f"foreign keys broken by the migration: {problems}")
            finally:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
        else:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(MIGRATE_LOCK)))
                yield conn


def _adopt_create_all_database(conn: Connection, cfg: Config) -> None:
    """Rebuild a SQLite database made by `create_all` as the first revision, keeping its rows.

    Its tables are set aside, the first revision creates them afresh (exact types, defaults,
    checks and indexes), the rows are copied across and the old tables dropped — all inside
    the migration's transaction."""
    if conn.dialect.name != "sqlite":
        raise MigrationError(
            f"{redact_url(conn.engine.url)} has foleyflow tables but no schema revision; "
            "it predates migrations. Dump its rows, upgrade an empty database and reload them."
        )
    insp = inspect(conn)
    tables = [t for t in insp.get_table_names() if t != "alembic_version"]
    for table in tables:
        for index in insp.get_indexes(table):  # index names are global: free them
            conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
        conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "_legacy_{table}"')
    command.upgrade(cfg, INITIAL)
    created = inspect(conn)
    for table in tables:
        new = {c["name"] for c in created.get_columns(table)} if created.has_table(table) else set()
        old = [c["name"] for c in insp.get_columns(f"_legacy_{table}")]
        cols = ", ".join(f'"{c}"' for c in old if c in new)
        if cols:
            conn.exec_driver_sql(
                f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "_legacy_{table}"'
            )
        conn.exec_driver_sql(f'DROP TABLE "_legacy_{table}"')


def check(url: str) -> None:
    """Raise SchemaDrift unless the database at `url` is at head and matches the models."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            rev = revision_of(conn)
            if rev != head():
                raise SchemaDrift(f"{redact_url(url)} is at {rev or '(empty)'}, not at {head()}")
            ctx = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    if diffs:
        lines = "\n".join(f"  {d}" for d in diffs)
        raise SchemaDrift(
            f"db/schema.py and the migrations differ ({redact_url(url)}):\n{lines}\n"
            "write a migration for the change (python -m db.migrate revision URL -m WHAT)"
        )


def revision(url: str, message: str) -> str:
    """Autogenerate a new revision from the models against an up-to-date database at `url`.

    Review the file it writes by hand before committing it. Returns its path."""
    if current(url) != head():
        raise MigrationError(f"{redact_url(url)} is not at head: upgrade it first")
    script = command.revision(alembic_config(url), message=message, autogenerate=True,
                              rev_id=f"{int(head()) + 1:04d}")
    assert script is not None and not isinstance(script, list)
    return script.path


def main(argv: list[str] | None = None) -> None:
    """`python -m db.migrate {upgrade,current,check,revision} URL` (without the foley CLI)."""
    p = argparse.ArgumentParser(prog="python -m db.migrate", description=main.__doc__)
    p.add_argument("action", choices=["upgrade", "current", "check", "revision"])
    p.add_argument("url")
    p.add_argument("-m", "--message", default="change")
    a = p.parse_args(argv)
    if a.action == "upgrade":
        print(upgrade(a.url))
    elif a.action == "current":
        print(current(a.url) or "(empty)")
    elif a.action == "check":
        check(a.url)
        print(f"{redact_url(a.url)}: at {head()}, matches db/schema.py")
    else:
        print(revision(a.url, a.message))


if __name__ == "__main__":
    main()
