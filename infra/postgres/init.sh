#!/usr/bin/env bash
# foleyflow's databases and roles on the studio Postgres. Idempotent; passwords come from the
# environment (infra/.env), never from this file or the command line.
#
#   foley    provenance database; roles from db/grants.sql: foley_migrator owns the tables
#            (runs `foley db upgrade`), foley_app reads and writes rows (workers, review app)
#   prefect  the Prefect server's own database, owned by the role `prefect`
#
# It runs in two places (docker-compose.yml):
#   - postgres:  mounted in /docker-entrypoint-initdb.d, so the image runs it once, on the
#                first start of an empty data volume (over the local socket);
#   - db-grants: a one-shot after every `migrate`, over TCP (PGHOST=postgres): db/grants.sql
#                wants a second run once the first upgrade created alembic_version, and the
#                re-run also applies passwords changed in infra/.env.
#
# Needs POSTGRES_PASSWORD's superuser (PGPASSWORD over TCP), FOLEY_MIGRATOR_PASSWORD,
# FOLEY_APP_PASSWORD and PREFECT_DB_PASSWORD; db/grants.sql mounted at FOLEY_GRANTS_SQL.
# psql >= 15 (\getenv). Passwords are interpolated into URLs: keep them URL-safe (hex).

foleyflow_db_setup() (
    set -Eeuo pipefail
    : "${FOLEY_MIGRATOR_PASSWORD:?set FOLEY_MIGRATOR_PASSWORD (infra/.env)}"
    : "${FOLEY_APP_PASSWORD:?set FOLEY_APP_PASSWORD (infra/.env)}"
    : "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD (infra/.env)}"
    local foley_db=foley prefect_db=prefect prefect_role=prefect
    local grants="${FOLEY_GRANTS_SQL:-/foleyflow/grants.sql}"
    [ -r "$grants" ] || { echo "init.sh: $grants is not mounted (db/grants.sql)" >&2; return 1; }

    sql() { psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" "$@"; }

    # 1. The Prefect server's role, both databases; nobody else may connect to them.
    sql --dbname postgres -v foley_db="$foley_db" -v prefect_db="$prefect_db" \
        -v prefect_role="$prefect_role" <<'SQL'
\getenv prefect_password PREFECT_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'prefect_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'prefect_role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'prefect_role', :'prefect_password') \gexec
SELECT format('CREATE DATABASE %I', :'foley_db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'foley_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'prefect_db', :'prefect_role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'prefect_db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'foley_db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'prefect_db') \gexec
SQL

    # 2. pg_trgm for Prefect's name-search indexes (created here, by the superuser, so the
    #    server's own migrations never need more than the database owner's rights).
    sql --dbname "$prefect_db" -c 'CREATE EXTENSION IF NOT EXISTS pg_trgm'

    # 3. foleyflow's migration and app roles (db/grants.sql, default role names).
    sql --dbname "$foley_db" <<SQL
\getenv migrator_password FOLEY_MIGRATOR_PASSWORD
\getenv app_password FOLEY_APP_PASSWORD
\i $grants
SQL
    echo "foleyflow: databases $foley_db, $prefect_db and their roles are set up"
)

foleyflow_db_setup
