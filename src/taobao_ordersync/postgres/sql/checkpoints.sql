-- Checkpoints: one versioned JSON document per shop, saved by compare-and-set (_checkpoints.py).
-- Each query is the text under its `-- name:` line, up to the next one; {schema} is the store's schema.

-- name: load_checkpoint
SELECT data, revision FROM {schema}.checkpoints WHERE shop_id = $1

-- name: insert_checkpoint
-- $1 shop_id, $2 data. No row back: the shop has a checkpoint already.
INSERT INTO {schema}.checkpoints (shop_id, revision, data) VALUES ($1, 1, $2)
ON CONFLICT (shop_id) DO NOTHING
RETURNING revision

-- name: insert_checkpoint_fenced
-- The same, only while worker $3 holds the shop's lease with fencing token $4. The share lock on the
-- lease row makes a concurrent claim wait for this commit (or this commit see the claim): the new
-- owner always loads what the old one last committed.
INSERT INTO {schema}.checkpoints (shop_id, revision, data)
SELECT $1, 1, $2
WHERE EXISTS (SELECT 1 FROM {schema}.shops WHERE shop_id = $1 AND owner = $3 AND token = $4 FOR SHARE)
ON CONFLICT (shop_id) DO NOTHING
RETURNING revision

-- name: update_checkpoint
-- $1 shop_id, $2 data, $3 the revision the caller read. No row back: it is no longer the stored one.
UPDATE {schema}.checkpoints SET data = $2, revision = revision + 1, updated_at = now()
WHERE shop_id = $1 AND revision = $3
RETURNING revision

-- name: update_checkpoint_fenced
-- The same, only while worker $3 holds the shop's lease with fencing token $4 ($5: the revision read),
-- under the share lock of insert_checkpoint_fenced.
UPDATE {schema}.checkpoints SET data = $2, revision = revision + 1, updated_at = now()
WHERE shop_id = $1 AND revision = $5
    AND EXISTS (SELECT 1 FROM {schema}.shops WHERE shop_id = $1 AND owner = $3 AND token = $4 FOR SHARE)
RETURNING revision

-- name: lease_holder
-- After a fenced save came back empty: a lost lease, or a plain conflict?
SELECT owner, token FROM {schema}.shops WHERE shop_id = $1

-- name: checkpointed_shops
SELECT shop_id FROM {schema}.checkpoints ORDER BY shop_id
