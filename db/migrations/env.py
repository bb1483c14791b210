"""Alembic environment of the provenance database.

`db.migrate` hands over an open connection (already in a transaction and holding the
migration lock) in `config.attributes["connection"]`; without one (a developer running
autogenerate) the URL in the config is used. Offline mode (`--sql`) renders SQL for a DBA.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from db.engine import make_engine
from db.migrate import context_options
from db.schema import Base

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        **context_options(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if context.is_offline_mode():
        url = config.get_main_option("sqlalchemy.url")
        context.configure(
            url=url,
            target_metadata=Base.metadata,
            literal_binds=True,
            **context_options(url.split(":", 1)[0].split("+", 1)[0] if url else "sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
    elif connection is not None:
        run_on(connection)
    else:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or "", pooled=False)
        try:
            with engine.connect() as conn:
                run_on(conn)
                conn.commit()
        finally:
            engine.dispose()


main()
