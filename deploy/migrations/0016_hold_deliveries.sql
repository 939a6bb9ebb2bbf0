-- 0016_hold_deliveries: the notification outbox of holds. A trigger queues
-- one delivery per channel (Slack, webhook) when a hold is opened and when it
-- leaves 'pending' (decided, timed out, abandoned), in the same transaction
-- as the change; lumkey-approval's sender thread drains it with retries, so a
-- restart loses nothing. A delivery's id is its Standard Webhooks
-- `webhook-id`: stable across retries.

ALTER TABLE holds ADD COLUMN slack_channel text NOT NULL DEFAULT '',
                  ADD COLUMN slack_ts text NOT NULL DEFAULT '';   -- the chat.postMessage to update

CREATE TABLE hold_deliveries (
    id            text PRIMARY KEY,                 -- "msg_" + 32 hex: the webhook-id
    hold_id       text NOT NULL REFERENCES holds(id),
    channel       text NOT NULL CHECK (channel IN ('slack', 'webhook')),
    event         text NOT NULL CHECK (event IN ('hold.created', 'hold.decided')),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'failed', 'disabled', 'skipped')),
    attempts      int NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(), -- also a lease while a sender works on it
    last_error    text NOT NULL DEFAULT '',          -- HTTP status or Slack error code, never a secret
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    UNIQUE (hold_id, channel, event)
);
CREATE INDEX hold_deliveries_due ON hold_deliveries (next_at) WHERE status = 'pending';

CREATE FUNCTION holds_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        ev := 'hold.created';
    ELSIF OLD.status = 'pending' AND NEW.status <> 'pending' THEN
        ev := 'hold.decided';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO hold_deliveries (id, hold_id, channel, event)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, c, ev
    FROM unnest(ARRAY['slack', 'webhook']) AS c
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER holds_outbox_insert AFTER INSERT ON holds FOR EACH ROW EXECUTE FUNCTION holds_outbox();
CREATE TRIGGER holds_outbox_status AFTER UPDATE OF status ON holds FOR EACH ROW EXECUTE FUNCTION holds_outbox();
