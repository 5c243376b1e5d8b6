-- The shop registry, its leases and heartbeats, the app-wide ban, and the NOTIFYs that wake the
-- workers (_registry.py). Each query is the text under its `-- name:` line, up to the next one;
-- {schema} is the store's schema.

-- name: add_shops
-- $1 the shop ids. A change wakes every worker to rebalance: NOTIFY on channel $2, in the same statement.
WITH changed AS (
    INSERT INTO {schema}.shops (shop_id) SELECT unnest($1::text[])
    ON CONFLICT (shop_id) DO NOTHING
    RETURNING shop_id
)
SELECT count(*) AS n, CASE WHEN count(*) > 0 THEN pg_notify($2, 'changed') END FROM changed

-- name: remove_shops
-- $1 the shop ids; NOTIFY on channel $2 if any was registered. Their checkpoints stay.
WITH changed AS (
    DELETE FROM {schema}.shops WHERE shop_id = ANY($1::text[])
    RETURNING shop_id
)
SELECT count(*) AS n, CASE WHEN count(*) > 0 THEN pg_notify($2, 'changed') END FROM changed

-- name: claim
-- Worker $1 takes up to $3 free shops of $2 (in that order) for $4 seconds, each with a new fencing token.
WITH picked AS (
    SELECT shop_id FROM {schema}.shops
    WHERE shop_id = ANY($2::text[]) AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now())
    ORDER BY array_position($2::text[], shop_id)
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.shops AS s SET owner = $1, token = nextval('{schema}.fencing_tokens'),
    lease_until = now() + make_interval(secs => $4), claimed_at = now(), state = 'claimed',
    last_error = NULL, behind = NULL
FROM picked WHERE s.shop_id = picked.shop_id
RETURNING s.shop_id, s.token

-- name: release_all
-- Every shop of worker $1 is free at once; NOTIFY on channel $2 if it held any.
WITH changed AS (
    UPDATE {schema}.shops SET owner = NULL, lease_until = NULL, state = 'released'
    WHERE owner = $1
    RETURNING shop_id
)
SELECT count(*) AS n, CASE WHEN count(*) > 0 THEN pg_notify($2, 'changed') END FROM changed

-- name: release_some
-- The shops $2 of worker $1 are free at once; NOTIFY on channel $3 if it held any of them.
WITH changed AS (
    UPDATE {schema}.shops SET owner = NULL, lease_until = NULL, state = 'released'
    WHERE owner = $1 AND shop_id = ANY($2::text[])
    RETURNING shop_id
)
SELECT count(*) AS n, CASE WHEN count(*) > 0 THEN pg_notify($3, 'changed') END FROM changed

-- name: lock_heartbeats
-- $1 the advisory lock key of heartbeats, $2 the schema: one heartbeat at a time per schema, so the
-- rates the workers record never add up to more than the budget.
SELECT pg_advisory_xact_lock($1, hashtext($2))

-- name: heartbeat_summary
-- What worker $1 needs to take its share: the other live workers and their rates, the ban, and when
-- the next lease held by someone else runs out. ban_until is '-infinity' until the first ban, and
-- before PostgreSQL 17 an infinite timestamp minus a finite one is an error: subtract from a finite one only.
SELECT
    (SELECT count(*) FROM {schema}.workers WHERE expires_at > now() AND worker_id <> $1) AS others,
    (SELECT coalesce(sum(rate), 0)::float8 FROM {schema}.workers
        WHERE expires_at > now() AND worker_id <> $1) AS others_rate,
    (SELECT extract(epoch FROM greatest(ban_until, now()) - now())::float8 FROM {schema}.app) AS ban_left,
    (SELECT extract(epoch FROM min(lease_until) - now())::float8 FROM {schema}.shops
        WHERE owner IS DISTINCT FROM $1 AND lease_until > now()) AS next_expiry

-- name: heartbeat_renew
-- Register worker $1 (host $2, pid $3) for $4 seconds at rate $5, and renew for $4 seconds each lease
-- it still holds with the token it reports, with that shop's report: $6 to $11 are the columns
-- (shop_id, token, weight, state, behind, last_error). Returns the shops renewed.
WITH me AS (
    INSERT INTO {schema}.workers (worker_id, host, pid, expires_at, rate)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
    ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), expires_at = excluded.expires_at,
        rate = excluded.rate, host = excluded.host, pid = excluded.pid,
        last_error = NULL, failing_since = NULL
)
UPDATE {schema}.shops AS s SET lease_until = now() + make_interval(secs => $4), weight = u.weight,
    state = u.state, behind = u.behind, last_error = u.last_error, reported_at = now()
FROM unnest($6::text[], $7::bigint[], $8::float8[], $9::text[], $10::float8[], $11::text[])
    AS u(shop_id, token, weight, state, behind, last_error)
WHERE s.shop_id = u.shop_id AND s.owner = $1 AND s.token = u.token
RETURNING s.shop_id

-- name: lease_rows
-- Every shop with its live owner (an expired lease shows free, even the reader's own), weight and
-- seconds held, for the rebalancing rule.
SELECT shop_id, CASE WHEN lease_until > now() THEN owner END AS owner, weight,
    extract(epoch FROM now() - claimed_at)::float8 AS held_for
FROM {schema}.shops

-- name: report_heartbeat_failure
-- Worker $1 (host $2, pid $3) says its heartbeats fail with error $4, since $5 seconds (kept from the
-- first report of a run of failures). Registered if it never was, but not made live.
INSERT INTO {schema}.workers AS w (worker_id, host, pid, expires_at, last_error, failing_since)
VALUES ($1, $2, $3, now(), $4, now() - make_interval(secs => $5))
ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), host = excluded.host, pid = excluded.pid,
    last_error = excluded.last_error, failing_since = coalesce(w.failing_since, excluded.failing_since)
RETURNING 1

-- name: unregister_worker
DELETE FROM {schema}.workers WHERE worker_id = $1 RETURNING 1

-- name: record_error
-- Shop $1's trouble $3, as its owner $2 reports it between heartbeats.
UPDATE {schema}.shops SET last_error = $3, state = 'paused'
WHERE shop_id = $1 AND owner = $2
RETURNING 1

-- name: ban
-- Pause the app for $1 seconds (a ban never shortens one already set), and tell every worker on channel $2.
WITH u AS (
    UPDATE {schema}.app SET ban_until = greatest(ban_until, now() + make_interval(secs => $1))
    RETURNING 1
)
SELECT pg_notify($2, $1::text) FROM u

-- name: nudge
-- Wake every worker listening on channel $1 to heartbeat now.
SELECT pg_notify($1, 'nudge')
