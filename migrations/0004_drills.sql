-- Monthly root-access drills.

-- When the next drill falls due (computed from accounts.drill_schedule, UTC).
ALTER TABLE accounts ADD COLUMN next_drill_due_at INTEGER;
-- What failed in the latest drill; NULL when it passed.
ALTER TABLE accounts ADD COLUMN drill_flag TEXT;

CREATE TABLE drills (
    id                 TEXT    PRIMARY KEY,
    account_id         TEXT    NOT NULL REFERENCES accounts (account_id),
    period             TEXT    NOT NULL,          -- the occurrence, RFC 3339: one drill per account per period
    due_at             INTEGER NOT NULL,
    grace_ends_at      INTEGER NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('due', 'overdue', 'passed', 'failed', 'missed')),
    last_escalated_at  INTEGER,
    checkout_id        TEXT REFERENCES checkouts (id),
    completed_at       INTEGER,
    completed_by       TEXT,
    participants       TEXT,                      -- JSON array of custodian ids
    checklist          TEXT,                      -- JSON {item: {result, note}}
    failed_items       TEXT,                      -- JSON array
    UNIQUE (account_id, period)
) STRICT;
CREATE INDEX drills_by_state ON drills (state, grace_ends_at);
