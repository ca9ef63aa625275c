"""Database roles: data access for the runtime role, DDL for nobody but the owner.

Grants SELECT/INSERT/UPDATE/DELETE on every table, USAGE/SELECT on every sequence and USAGE on
every schema the migrations created, to the runtime role (SAGALINE_DB_RUNTIME_ROLE, default
sagaline_runtime), and sets the same as default privileges for what later migrations create.
The runtime role can read alembic_version (processes check the schema revision at start) and
create nothing: it owns no object and has no CREATE privilege, so no DDL.

The roles themselves are created once by a superuser (deploy/postgres/roles.sql; the compose
postgres container does it on first start). When the runtime role does not exist (a development
database, the test suite's databases), this migration changes nothing: it never creates roles,
which are shared by every database of the server. Idempotent: GRANT and REVOKE are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import re

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Schemas created by the migrations (owned by whoever ran them), not PostgreSQL's own.
_SCHEMAS = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'public')
"""


def _runtime_role() -> str:
    from sagaline.settings import Settings

    role = Settings().db_runtime_role
    if not _ROLE.match(role):  # the settings pattern already checks; quoted below regardless
        raise ValueError("SAGALINE_DB_RUNTIME_ROLE is not a plain role name")
    return role


def _grants(action: str) -> str:
    """A DO block that grants (or revokes) the runtime role's access, if the role exists."""
    role = _runtime_role()
    to = "TO" if action == "GRANT" else "FROM"
    dml = "SELECT, INSERT, UPDATE, DELETE"
    defaults = "GRANT" if action == "GRANT" else "REVOKE"
    return f"""
DO $grants$
DECLARE
    runtime text := '{role}';
    schema_name text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = runtime) THEN
        RAISE NOTICE 'role % does not exist: no grants (see deploy/postgres/roles.sql)', runtime;
        RETURN;
    END IF;
    FOR schema_name IN {_SCHEMAS} LOOP
        EXECUTE format('{action} USAGE ON SCHEMA %I {to} %I', schema_name, runtime);
        EXECUTE format('{action} {dml} ON ALL TABLES IN SCHEMA %I {to} %I', schema_name, runtime);
        EXECUTE format(
            '{action} USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I {to} %I', schema_name, runtime);
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I {defaults} {dml} ON TABLES {to} %I',
            schema_name, runtime);
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I {defaults} USAGE, SELECT ON SEQUENCES {to} %I',
            schema_name, runtime);
    END LOOP;
    EXECUTE format('{action} SELECT ON public.alembic_version {to} %I', runtime);
END
$grants$;
"""


def upgrade() -> None:
    op.execute(_grants("GRANT"))


def downgrade() -> None:
    op.execute(_grants("REVOKE"))
