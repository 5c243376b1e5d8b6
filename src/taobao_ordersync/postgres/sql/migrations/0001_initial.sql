-- The first schema: checkpoints, the shop registry with its leases, workers and the app-wide ban.
-- {schema} is the store's schema name (a validated identifier). Never edit a released migration: add the next.

-- One versioned JSON document per shop, saved by compare-and-set.
CREATE TABLE {schema}.checkpoints (
    shop_id    text PRIMARY KEY,
    revision   bigint NOT NULL,
    data       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The registry, and for each shop its lease (owner, lease_until and the fencing token) and the
-- owner's last report.
CREATE TABLE {schema}.shops (
    shop_id     text PRIMARY KEY,
    added_at    timestamptz NOT NULL DEFAULT now(),
    owner       text,
    token       bigint NOT NULL DEFAULT 0,
    lease_until timestamptz,
    claimed_at  timestamptz,
    weight      double precision NOT NULL DEFAULT 0,
    state       text,
    behind      double precision,
    last_error  text,
    reported_at timestamptz
);
CREATE INDEX shops_owner ON {schema}.shops (owner);

-- A new fencing token at every claim.
CREATE SEQUENCE {schema}.fencing_tokens;

-- Live workers and their heartbeats (the rate budget is shared among them).
CREATE TABLE {schema}.workers (
    worker_id  text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rate       double precision
);

-- The app-wide ban every worker honours: one row.
CREATE TABLE {schema}.app (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ban_until timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO {schema}.app DEFAULT VALUES;
