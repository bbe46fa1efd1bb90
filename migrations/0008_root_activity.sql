-- Root activity from AWS (CloudTrail via EventBridge and the central SQS queue),
-- reconciled with released checkouts. One row per CloudTrail event id: a redelivery
-- of the same event is stored once.
CREATE TABLE root_events (
    event_id        TEXT    PRIMARY KEY,             -- CloudTrail eventID
    account_id      TEXT    NOT NULL,                -- may be an account not in custody
    kind            TEXT    NOT NULL CHECK (kind IN ('sign_in', 'sign_in_failed', 'api_call')),
    event_name      TEXT    NOT NULL,
    event_source    TEXT    NOT NULL,
    event_time      INTEGER NOT NULL,                -- when it happened in AWS
    received_at     INTEGER NOT NULL,                -- when breakglass stored it
    region          TEXT    NOT NULL,
    source_ip       TEXT,
    user_agent      TEXT,
    mfa_used        TEXT,
    error           TEXT,
    detail          TEXT    NOT NULL,                -- the CloudTrail record (JSON), as evidence
    -- The released checkout that explains it (NULL: unexplained).
    checkout_id     TEXT    REFERENCES checkouts (id),
    audit_seq       INTEGER NOT NULL,                -- the entry that recorded it
    acknowledged_by TEXT    REFERENCES custodians (id),
    acknowledged_at INTEGER,
    ack_reason      TEXT,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL)),
    CHECK (acknowledged_by IS NULL OR checkout_id IS NULL)
) STRICT;
CREATE INDEX root_events_by_account ON root_events (account_id, event_time);
-- The dashboard banner: unexplained, unacknowledged successful root use.
CREATE INDEX root_events_open ON root_events (event_time)
    WHERE checkout_id IS NULL AND acknowledged_by IS NULL;

-- Root posture per account, as last read from AWS without root (iam:GetAccountSummary,
-- account:GetAlternateContact, organizations:DescribeAccount). One row per account.
CREATE TABLE account_posture (
    account_id  TEXT    PRIMARY KEY REFERENCES accounts (account_id),
    checked_at  INTEGER NOT NULL,
    report      TEXT    NOT NULL,   -- JSON: what was read (domain::posture::Report)
    findings    TEXT    NOT NULL,   -- JSON array of finding codes, sorted
    audit_seq   INTEGER             -- the entry of the last change
) STRICT;
