-- sagaline's PostgreSQL roles: DDL for migrations only, data access only for the processes.
--
--   psql -v ON_ERROR_STOP=1 -v database=sagaline \
--        -v owner_password="$SAGALINE_DB_PASSWORD_OWNER" -v app_password="$SAGALINE_DB_PASSWORD_APP" \
--        -f deploy/postgres/roles.sql                 (as a superuser, once, before `sagaline migrate`)
--
--   sagaline_owner    LOGIN. Owns the database and every schema and table the migrations create:
--                     the only role that can change the schema. `sagaline migrate` runs as it.
--   sagaline_runtime  NOLOGIN group. SELECT/INSERT/UPDATE/DELETE on the tables, USAGE on the
--                     sequences, USAGE on the schemas; no CREATE anywhere, owns nothing, so no
--                     CREATE/ALTER/DROP/TRUNCATE. Its name is SAGALINE_DB_RUNTIME_ROLE.
--   sagaline_app      LOGIN, member of sagaline_runtime: what the orchestrator, the workers and
--                     the CLI log in as.
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

SELECT format('CREATE DATABASE %I OWNER sagaline_owner', :'database')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO sagaline_owner;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO sagaline_runtime;

\connect :"database"
-- PostgreSQL 15 already keeps PUBLIC from creating in `public`; older servers do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO sagaline_runtime;

-- Every table, sequence and schema sagaline_owner creates from now on (default privileges are
-- per database, hence after the \connect).
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sagaline_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner
    GRANT USAGE, SELECT ON SEQUENCES TO sagaline_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE sagaline_owner GRANT USAGE ON SCHEMAS TO sagaline_runtime;
