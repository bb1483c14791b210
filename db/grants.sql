-- foleyflow: roles for a studio Postgres database.
--
-- Two login roles, so that what runs passes cannot change the schema:
--   migration role (default foley_migrator)  owns the tables, runs `foley db upgrade`.
--   app role       (default foley_app)       what workers, passes and the review app use:
--                                            SELECT / INSERT / UPDATE / DELETE rows, USAGE on
--                                            sequences; cannot CREATE, ALTER, DROP or TRUNCATE
--                                            tables, nor change the schema revision.
--
-- Run it with psql as a superuser (or a role with CREATEROLE that owns the database),
-- connected to foleyflow's database. It is idempotent: run it before the first upgrade and
-- once more after it (the second run keeps the app role from writing `alembic_version`,
-- which the first upgrade creates).
--
--   psql -v ON_ERROR_STOP=1 -h DB -U postgres -d foley \
--        -v migrator_role=foley_migrator -v migrator_password="$FOLEY_MIGRATOR_PASSWORD" \
--        -v app_role=foley_app -v app_password="$FOLEY_APP_PASSWORD" \
--        -f db/grants.sql
--   FOLEY_DB_URL=postgresql://foley_migrator:…@DB/foley foley db upgrade
--   psql … -f db/grants.sql                       # again, after the first upgrade
--   FOLEY_DB_URL=postgresql://foley_app:…@DB/foley foley run …   (passes, workers, review app)
--
-- Role names default as above; passwords are optional (leave one out to keep the role's
-- current password, e.g. with certificate authentication). The server stores them hashed
-- (password_encryption, scram-sha-256 by default); the script itself does not log them.
-- Tables that a superuser created before this script existed must first be given to the
-- migration role: ALTER TABLE … OWNER TO foley_migrator.

\set ON_ERROR_STOP on
\if :{?migrator_role}
\else
  \set migrator_role foley_migrator
\endif
\if :{?app_role}
\else
  \set app_role foley_app
\endif

-- 1. The roles (created if missing; passwords set when given).
SELECT format('CREATE ROLE %I LOGIN', :'migrator_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'migrator_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') \gexec
\if :{?migrator_password}
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'migrator_role', :'migrator_password') \gexec
\endif
\if :{?app_password}
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'app_role', :'app_password') \gexec
\endif

-- 2. Both may connect; only the migration role may create objects in the schema.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I',
              current_database(), :'migrator_role', :'app_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator_role";
GRANT USAGE ON SCHEMA public TO :"app_role";

-- 3. Rows of every table the migration role creates from now on (upgrades) ...
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator_role" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator_role" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"app_role";

-- ... and of the tables already there.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app_role";

-- 4. The schema revision is the migration role's alone: the app role only reads it (to check
--    that the database is at the revision its code needs).
SELECT format('REVOKE INSERT, UPDATE, DELETE ON public.alembic_version FROM %I', :'app_role')
 WHERE to_regclass('public.alembic_version') IS NOT NULL \gexec
