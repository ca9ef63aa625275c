-- sagaline's PostgreSQL roles: DDL for migrations only, data access only for the processes.
--
--   psql -v ON_ERROR_STOP=1 -v database=sagaline \
--        -v owner_password="$SAGALINE_DB_PASSWORD_OWNER" -v app_password="$SAGALINE_DB_PASSWORD_APP" \
--        [-v console_password="$SAGALINE_DB_PASSWORD_CONSOLE"] \
--        [-v console_viewer_password="$SAGALINE_DB_PASSWORD_CONSOLE_VIEWER"] \
--        -f deploy/postgres/roles.sql                 (as a superuser, once, before `sagaline migrate`)
--
--   sagaline_owner    LOGIN. Owns the database and every schema and table the migrations create:
--                     the only role that can change the schema. `sagaline migrate` runs as it.
--   sagaline_runtime  NOLOGIN group. SELECT/INSERT/UPDATE/DELETE on the tables, USAGE on the
--                     sequences, USAGE on the schemas, TEMPORARY on the database; no CREATE
--                     anywhere, owns nothing, so no CREATE/ALTER/DROP/TRUNCATE. Its name is SAGALINE_DB_RUNTIME_ROLE.
--   sagaline_app      LOGIN, member of sagaline_runtime: what the orchestrator, the workers and
--                     the CLI log in as.
--   sagaline_console  LOGIN: the operations console (`sagaline console`). Reads and writes the
--                     saga tables (operator actions) and its own schema `console`; nothing of
--                     the workers'. Granted by migration 0006 (the tables exist only then).
--   sagaline_console_viewer
--                     LOGIN: a read-only console (SAGALINE_CONSOLE_READ_ONLY=1). Reads the saga
--                     tables, writes only its own bookkeeping (sessions, the parked index).
--
-- Idempotent: run it again to change passwords. Objects the owner creates later are granted to
-- the runtime role automatically (default privileges below); migration 0005 grants what already
-- exists when it runs.

\set ON_ERROR_STOP on

SELECT format('CREATE ROLE sagaline_owner LOGIN PASSWORD %L', :'owner_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_owner') \gexec
SELECT format('ALTER ROLE sagaline_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'owner_password') \gexec

SELECT 'CREATE ROLE sagaline_runtime NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_runtime') \gexec

SELECT format('CREATE ROLE sagaline_app LOGIN PASSWORD %L IN ROLE sagaline_runtime',
              :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_app') \gexec
SELECT format('ALTER ROLE sagaline_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'app_password') \gexec
GRANT sagaline_runtime TO sagaline_app;

-- The console's roles (only when their passwords are given: a deployment without the console
-- runs this file as before). No membership in sagaline_runtime: that would open the workers'
-- tables.
\if :{?console_password}
SELECT format('CREATE ROLE sagaline_console LOGIN PASSWORD %L', :'console_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_console') \gexec
SELECT format('ALTER ROLE sagaline_console LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'console_password') \gexec
\endif
\if :{?console_viewer_password}
SELECT format('CREATE ROLE sagaline_console_viewer LOGIN PASSWORD %L', :'console_viewer_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_console_viewer') \gexec
SELECT format(
    'ALTER ROLE sagaline_console_viewer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
    :'console_viewer_password') \gexec
\endif

SELECT format('CREATE DATABASE %I OWNER sagaline_owner', :'database')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO sagaline_owner;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
-- TEMPORARY: the orchestrator creates its write function in its session's temporary schema
-- (orchestrator/store/sql.py); migration 0008 grants the same.
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO sagaline_runtime;
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'database', rolname) FROM pg_roles
WHERE rolname IN ('sagaline_console', 'sagaline_console_viewer') \gexec
-- The console's operator actions are saga steps: the same write function as the orchestrator's.
SELECT format('GRANT TEMPORARY ON DATABASE %I TO sagaline_console', :'database') FROM pg_roles
WHERE rolname = 'sagaline_console' \gexec

\connect :"database"
-- PostgreSQL 15 already keeps PUBLIC from creating in `public`; older servers do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO sagaline_runtime;
SELECT format('GRANT USAGE ON SCHEMA public TO %I', rolname) FROM pg_roles
WHERE rolname IN ('sagaline_console', 'sagaline_console_viewer') \gexec

-- Every table, sequence and schema sagaline_owner creates from now on (default privileges are
-- per database, hence after the \connect).
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sagaline_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner
    GRANT USAGE, SELECT ON SEQUENCES TO sagaline_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner GRANT USAGE ON SCHEMAS TO sagaline_runtime;
