-- Announcements: a durable outbox delivered to SNS, and signed audit checkpoints.

-- One row per announced event, written in the transaction of the change and its audit
-- entry. Delivered in id order, at least once; event_id lets subscribers deduplicate.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    event_id         TEXT    NOT NULL UNIQUE,
    event            TEXT    NOT NULL,
    severity         TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'high', 'critical')),
    account_id       TEXT,
    checkout_id      TEXT,
    subject          TEXT    NOT NULL,    -- SNS Subject
    message          TEXT    NOT NULL,    -- JSON body without the checkpoint (added at delivery)
    audit_seq        INTEGER NOT NULL,    -- the audit entry announced
    created_at       INTEGER NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    sns_message_id   TEXT,
    delivered_at     INTEGER
) STRICT;
CREATE INDEX outbox_by_state ON outbox (state, id);
CREATE INDEX outbox_by_checkout ON outbox (checkout_id);

-- The Ed25519 key that signs audit checkpoints, sealed to the vault key.
CREATE TABLE log_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key_name    TEXT    NOT NULL,
    public_key  BLOB    NOT NULL,
    sealed_key  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- Every checkpoint signed. The service never signs one inconsistent with these.
CREATE TABLE checkpoints (
    size       INTEGER PRIMARY KEY,
    head       TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    signed_at  INTEGER NOT NULL
) STRICT;
