-- The registry as `taobao-ordersync status` shows it (_status.py). Each query is the text under its
-- `-- name:` line, up to the next one; {schema} is the store's schema.

-- name: shops
-- Every registered shop with its lease, its owner's last report and its checkpoint.
SELECT s.shop_id, s.owner, s.token, s.weight, s.state, s.behind, s.last_error,
    extract(epoch FROM s.lease_until - now())::float8 AS lease_left, c.data
FROM {schema}.shops s LEFT JOIN {schema}.checkpoints c USING (shop_id)
ORDER BY s.shop_id

-- name: shop_states
-- Shops per state of their owner's last report (free: no live lease), largest first.
SELECT CASE WHEN lease_until > now() THEN coalesce(state, 'claimed') ELSE 'free' END AS state, count(*) AS n
FROM {schema}.shops
GROUP BY 1
ORDER BY n DESC, state

-- name: shops_most_behind
-- The $1 live shops most behind.
SELECT shop_id, owner, behind FROM {schema}.shops
WHERE lease_until > now() AND behind IS NOT NULL
ORDER BY behind DESC, shop_id
LIMIT $1

-- name: latest_shop_errors
-- The $1 latest errors, with how many shops have one.
SELECT shop_id, CASE WHEN lease_until > now() THEN owner END AS owner, last_error, count(*) OVER () AS total
FROM {schema}.shops
WHERE last_error IS NOT NULL
ORDER BY reported_at DESC NULLS LAST, shop_id
LIMIT $1

-- name: workers
-- Registered workers, live ones first.
SELECT w.worker_id, w.host, w.pid, w.rate, w.expires_at > now() AS alive,
    extract(epoch FROM now() - w.seen_at)::float8 AS seen_ago,
    (SELECT count(*) FROM {schema}.shops s WHERE s.owner = w.worker_id AND s.lease_until > now()) AS shops,
    w.last_error, extract(epoch FROM now() - w.failing_since)::float8 AS failing_for
FROM {schema}.workers w
ORDER BY alive DESC, worker_id
