-- Two-person checkout: requests, approvals with their WebAuthn evidence, release.

-- Who may approve for an account: everyone with the custodian role ('all') or a list.
ALTER TABLE accounts ADD COLUMN approver_set TEXT NOT NULL DEFAULT 'all'
    CHECK (approver_set IN ('all', 'listed'));
-- Set by an emergency release; cleared when a new root password is deposited.
ALTER TABLE accounts ADD COLUMN rotation_due_since INTEGER;

CREATE TABLE account_approvers (
    account_id   TEXT NOT NULL REFERENCES accounts (account_id),
    custodian_id TEXT NOT NULL REFERENCES custodians (id),
    PRIMARY KEY (account_id, custodian_id)
) STRICT;

CREATE TABLE checkouts (
    id                    TEXT    PRIMARY KEY,
    account_id            TEXT    NOT NULL REFERENCES accounts (account_id),
    requester_id          TEXT    NOT NULL REFERENCES custodians (id),
    kind                  TEXT    NOT NULL CHECK (kind IN ('emergency', 'drill')),
    reason                TEXT    NOT NULL,
    ticket                TEXT,
    duration_minutes      INTEGER NOT NULL CHECK (duration_minutes >= 1),
    state                 TEXT    NOT NULL
                          CHECK (state IN ('pending', 'approved', 'released', 'closed', 'denied', 'cancelled', 'expired')),
    -- The policy as it was when the request was made.
    approvals_required    INTEGER NOT NULL CHECK (approvals_required >= 1),
    veto                  INTEGER NOT NULL CHECK (veto IN (0, 1)),
    reveal_window_minutes INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,   -- deadline of the current state (pending or approved)
    approved_at           INTEGER,
    released_at           INTEGER,
    window_ends_at        INTEGER,            -- end of the reveal window
    ended_at              INTEGER,
    ended_by              TEXT,
    end_note              TEXT
) STRICT;
-- One open checkout per account: the database itself refuses a second.
CREATE UNIQUE INDEX checkouts_one_open_per_account ON checkouts (account_id)
    WHERE state IN ('pending', 'approved', 'released');
CREATE INDEX checkouts_by_state ON checkouts (state, expires_at);

CREATE TABLE approvals (
    id                  INTEGER PRIMARY KEY,
    checkout_id         TEXT    NOT NULL REFERENCES checkouts (id),
    custodian_id        TEXT    NOT NULL REFERENCES custodians (id),
    credential_id       TEXT    NOT NULL REFERENCES credentials (id),
    decision            TEXT    NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment             TEXT,
    at                  INTEGER NOT NULL,
    -- WebAuthn evidence, base64url, verifiable offline against credentials.public_key.
    challenge           TEXT    NOT NULL,
    client_data_json    TEXT    NOT NULL,
    authenticator_data  TEXT    NOT NULL,
    signature           TEXT    NOT NULL,
    -- One decision per person per request, whatever number of keys they hold.
    UNIQUE (checkout_id, custodian_id)
) STRICT;

-- Ceremonies gain two purposes bound to a checkout. Rows are short-lived and
-- single-use, so the table is recreated rather than migrated.
DROP TABLE ceremonies;
CREATE TABLE ceremonies (
    id            TEXT    PRIMARY KEY,
    purpose       TEXT    NOT NULL CHECK (purpose IN ('enrol', 'login', 'add_credential', 'approve', 'release')),
    custodian_id  TEXT,
    invite_id     TEXT,
    checkout_id   TEXT,
    pending       TEXT,
    state         TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_at);
