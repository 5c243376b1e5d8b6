-- The push inbox: TMC messages relayed from the worker that consumed them to the one holding their
-- shop (_push.py). Each query is the text under its `-- name:` line, up to the next one; {schema} is
-- the store's schema.

-- name: forward_push
-- Leave message $1 (trade $3, topic $4, published at $5) for the holder of shop $2, and wake it with
-- a NOTIFY on channel $6; no row when the shop is not registered. A redelivered message is kept once.
WITH shop AS (
    SELECT shop_id FROM {schema}.shops WHERE shop_id = $2
),
added AS (
    INSERT INTO {schema}.push_inbox (message_id, shop_id, tid, topic, pub_time)
    SELECT $1, shop_id, $3, $4, $5 FROM shop
    ON CONFLICT (message_id) DO NOTHING
    RETURNING 1
)
SELECT shop_id, pg_notify($6, shop_id)::text FROM shop

-- name: take_push
-- Up to $2 messages waiting for the shops $1 (held by the caller), oldest first.
SELECT message_id, shop_id, tid, topic, pub_time FROM {schema}.push_inbox
WHERE shop_id = ANY($1::text[]) AND delivered_at IS NULL
ORDER BY message_id
LIMIT $2

-- name: push_delivered
-- The holder delivered the messages $1: their consumers may confirm them.
UPDATE {schema}.push_inbox SET delivered_at = now()
WHERE message_id = ANY($1::bigint[]) AND delivered_at IS NULL
RETURNING 1

-- name: push_settled
-- Which of the forwarded messages $1 may be confirmed: delivered (their rows are deleted now) or gone
-- with their shop. The outer query sees the rows as they were before the delete.
WITH asked AS (
    SELECT unnest($1::bigint[]) AS message_id
),
gone AS (
    DELETE FROM {schema}.push_inbox i USING asked a
    WHERE i.message_id = a.message_id AND i.delivered_at IS NOT NULL
    RETURNING 1
)
SELECT a.message_id FROM asked a
WHERE NOT EXISTS (
    SELECT 1 FROM {schema}.push_inbox i WHERE i.message_id = a.message_id AND i.delivered_at IS NULL
)

-- name: push_backlog
-- Messages not yet delivered by their shops' holders.
SELECT count(*) FROM {schema}.push_inbox WHERE delivered_at IS NULL
