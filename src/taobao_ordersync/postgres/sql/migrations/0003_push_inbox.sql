-- TMC messages a worker consumed for a shop another worker holds, until that worker delivered them:
-- the consuming worker confirms a message to TMC only then (see sql/push.sql).
CREATE TABLE {schema}.push_inbox (
    message_id   bigint PRIMARY KEY,
    shop_id      text NOT NULL REFERENCES {schema}.shops (shop_id) ON DELETE CASCADE,
    tid          bigint,
    topic        text NOT NULL,
    pub_time     timestamptz,
    forwarded_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX push_inbox_waiting ON {schema}.push_inbox (shop_id) WHERE delivered_at IS NULL;
