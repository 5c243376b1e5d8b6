-- A worker whose heartbeats the database refuses says so here, for `status`.
ALTER TABLE {schema}.workers ADD COLUMN last_error text, ADD COLUMN failing_since timestamptz;
