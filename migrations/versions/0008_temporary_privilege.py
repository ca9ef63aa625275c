"""The runtime role may create temporary objects: the orchestrator's write function lives there.

Revision ID: 0008_temporary_privilege
Revises: 0007_definition_version
Create Date: 2026-12-06

The orchestrator writes a batch of saga steps with one call of a PL/pgSQL function that each
connection creates in its own temporary schema (orchestrator/store/sql.py: the function always
matches the release that calls it). PostgreSQL grants TEMPORARY on a database to PUBLIC by
default; deploy/postgres/roles.sql revokes everything from PUBLIC, so this grants TEMPORARY on
the current database to the runtime role (SAGALINE_DB_RUNTIME_ROLE) and to `sagaline_console`
(its operator actions are saga steps) when they exist, as migrations 0005 and 0006 do for the
tables. Needs the database's owner (roles.sql makes the migrating role its owner) or a
superuser.
"""

from __future__ import annotations

from alembic import op

revision = "0008_temporary_privilege"
down_revision = "0007_definition_version"
branch_labels = None
depends_on = None


def _temporary(action: str) -> str:
    from sagaline.settings import Settings

    role = Settings().db_runtime_role  # a plain role name (the settings pattern checks)
    to = "TO" if action == "GRANT" else "FROM"
    return f"""
DO $temporary$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['{role}', 'sagaline_console'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format(
                '{action} TEMPORARY ON DATABASE %I {to} %I', current_database(), role_name);
        END IF;
    END LOOP;
END
$temporary$;
"""


def upgrade() -> None:
    op.execute(_temporary("GRANT"))


def downgrade() -> None:
    op.execute(_temporary("REVOKE"))
