#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d): the pgvector
# extension (not a trusted extension: it needs the superuser) and the application role, a normal role without
# BYPASSRLS, so Row-Level Security applies to every query Atrium makes (docs/tenancy.md). POSTGRES_USER owns the
# database and runs the migrations (ATRIUM_MIGRATION_DATABASE_URL); `atrium migrate` grants atrium_app its data
# access. The password arrives in the environment (from .env), never written in this file.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE EXTENSION IF NOT EXISTS vector;
CREATE ROLE atrium_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
SQL
