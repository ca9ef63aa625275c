#!/bin/sh
# Run by the postgres image on first start (docker-entrypoint-initdb.d), as POSTGRES_USER:
# creates sagaline's owner and runtime roles (deploy/postgres/roles.sql). Passwords come from
# the container's environment (docker-compose.yml); nothing secret is stored in this file.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v database="${POSTGRES_DB:-sagaline}" \
    -v owner_password="${SAGALINE_DB_PASSWORD_OWNER:?set SAGALINE_DB_PASSWORD_OWNER}" \
    -v app_password="${SAGALINE_DB_PASSWORD_APP:?set SAGALINE_DB_PASSWORD_APP}" \
    -v console_password="${SAGALINE_DB_PASSWORD_CONSOLE:?set SAGALINE_DB_PASSWORD_CONSOLE}" \
    -v console_viewer_password="${SAGALINE_DB_PASSWORD_CONSOLE_VIEWER:?set SAGALINE_DB_PASSWORD_CONSOLE_VIEWER}" \
    -f /sagaline/roles.sql
