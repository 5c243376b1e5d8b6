-- Bringing the schema to the library's version (Database.migrate), all in one transaction.
-- Each query is the text under its `-- name:` line, up to the next one; {schema} is the store's schema.

-- name: lock_migrations
-- $1: the advisory lock key of migrations, so that many workers may start at once.
SELECT pg_advisory_xact_lock($1)

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM {schema}.schema_version

-- name: record_schema_version
INSERT INTO {schema}.schema_version (version) VALUES ($1)
