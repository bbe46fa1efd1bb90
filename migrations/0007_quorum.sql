-- breakglass: foreign_keys=off
-- Quorum mode (docs/quorum.md). Rebuilds `accounts` (wrapped_key becomes nullable:
-- a quorum-mode account has no vault-wrapped key) and `checkouts` (kind 'reshare',
-- the sealed transit identity). The runner turns foreign keys off for this file and
-- runs `PRAGMA foreign_key_check` before committing (SQLite's documented procedure
-- for changing a table's constraints).

CREATE TABLE accounts_new (
    account_id            TEXT    PRIMARY KEY
                          CHECK (length(account_id) = 12 AND account_id NOT GLOB '*[^0-9]*'),
    alias                 TEXT    NOT NULL,
    root_email            TEXT    NOT NULL,
    state                 TEXT    NOT NULL DEFAULT 'available'
                          CHECK (state IN ('available', 'checked_out', 'rotation_due')),
    approvals_required    INTEGER NOT NULL CHECK (approvals_required >= 1),
    reveal_window_minutes INTEGER NOT NULL CHECK (reveal_window_minutes >= 1),
    max_checkout_minutes  INTEGER NOT NULL CHECK (max_checkout_minutes >= 1),
    veto                  INTEGER NOT NULL CHECK (veto IN (0, 1)),
    drill_schedule        TEXT    NOT NULL,
    recipient             TEXT    NOT NULL,       -- age1… public key of the current account key
    wrapped_key           BLOB,                   -- policy mode: account-key envelope, age-encrypted to the vault key; NULL in quorum mode
    created_at            INTEGER NOT NULL,
    created_by            TEXT    NOT NULL,
    approver_set          TEXT    NOT NULL DEFAULT 'all' CHECK (approver_set IN ('all', 'listed')),
    rotation_due_since    INTEGER,
    next_drill_due_at     INTEGER,
    drill_flag            TEXT,
    custody               TEXT    NOT NULL DEFAULT 'policy' CHECK (custody IN ('policy', 'quorum')),
    key_version           INTEGER NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    quorum_k              INTEGER CHECK (quorum_k IS NULL OR quorum_k >= 2), -- shares needed, as dealt
    -- Set when the share holders no longer match the account's policy (JSON reason).
    reshare_due_since     INTEGER,
    reshare_reason        TEXT,
    CHECK ((custody = 'policy') = (wrapped_key IS NOT NULL)),
    CHECK ((custody = 'quorum') = (quorum_k IS NOT NULL))
) STRICT;
INSERT INTO accounts_new (account_id, alias, root_email, state, approvals_required, reveal_window_minutes,
    max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by, approver_set,
    rotation_due_since, next_drill_due_at, drill_flag)
SELECT account_id, alias, root_email, state, approvals_required, reveal_window_minutes,
    max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by, approver_set,
    rotation_due_since, next_drill_due_at, drill_flag FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;

CREATE TABLE checkouts_new (
    id                    TEXT    PRIMARY KEY,
    account_id            TEXT    NOT NULL REFERENCES accounts (account_id),
    requester_id          TEXT    NOT NULL REFERENCES custodians (id),
    kind                  TEXT    NOT NULL CHECK (kind IN ('emergency', 'drill', 'reshare')),
    reason                TEXT    NOT NULL,
    ticket                TEXT,
    duration_minutes      INTEGER NOT NULL CHECK (duration_minutes >= 1),
    state                 TEXT    NOT NULL
                          CHECK (state IN ('pending', 'approved', 'released', 'closed', 'denied', 'cancelled', 'expired')),
    approvals_required    INTEGER NOT NULL CHECK (approvals_required >= 1),
    veto                  INTEGER NOT NULL CHECK (veto IN (0, 1)),
    reveal_window_minutes INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    approved_at           INTEGER,
    released_at           INTEGER,
    window_ends_at        INTEGER,
    ended_at              INTEGER,
    ended_by              TEXT,
    end_note              TEXT,
    -- Quorum mode: the account-key version the request was made against, and the
    -- per-checkout transit identity sealed to the vault key (NULL once purged).
    key_version           INTEGER,
    transit_recipient     TEXT,
    transit_sealed        BLOB
) STRICT;
INSERT INTO checkouts_new (id, account_id, requester_id, kind, reason, ticket, duration_minutes, state,
    approvals_required, veto, reveal_window_minutes, created_at, expires_at, approved_at, released_at,
    window_ends_at, ended_at, ended_by, end_note)
SELECT id, account_id, requester_id, kind, reason, ticket, duration_minutes, state,
    approvals_required, veto, reveal_window_minutes, created_at, expires_at, approved_at, released_at,
    window_ends_at, ended_at, ended_by, end_note FROM checkouts;
DROP TABLE checkouts;
ALTER TABLE checkouts_new RENAME TO checkouts;
CREATE UNIQUE INDEX checkouts_one_open_per_account ON checkouts (account_id)
    WHERE state IN ('pending', 'approved', 'released');
CREATE INDEX checkouts_by_state ON checkouts (state, expires_at);

-- A credential's share recipient: the public half of the age identity its
-- authenticator's PRF output derives (docs/quorum.md). prf_capable (0001) is kept:
-- 1 once a recipient is registered.
ALTER TABLE credentials ADD COLUMN prf_status TEXT NOT NULL DEFAULT 'unknown'
    CHECK (prf_status IN ('unknown', 'ready', 'unsupported'));
ALTER TABLE credentials ADD COLUMN prf_recipient TEXT
    CHECK (prf_recipient IS NULL OR prf_recipient GLOB 'age1*');
ALTER TABLE credentials ADD COLUMN prf_checked_at INTEGER;

-- One share of an account key per holder, age-encrypted to all of the holder's
-- share recipients. Replaced whole at each (re)share.
CREATE TABLE account_shares (
    account_id    TEXT    NOT NULL REFERENCES accounts (account_id),
    key_version   INTEGER NOT NULL,
    custodian_id  TEXT    NOT NULL REFERENCES custodians (id),
    share_index   INTEGER NOT NULL CHECK (share_index BETWEEN 1 AND 255),
    recipients    TEXT    NOT NULL,   -- JSON array of the age1… recipients it was encrypted to
    ciphertext    BLOB    NOT NULL,
    dealt_at      INTEGER NOT NULL,
    PRIMARY KEY (account_id, custodian_id),
    UNIQUE (account_id, share_index)
) STRICT;

-- Shares handed over for one checkout, re-encrypted by the holder's browser to the
-- checkout's transit recipient. They exist only while the checkout is approved or
-- released (the trigger below deletes them on any other state).
CREATE TABLE checkout_shares (
    checkout_id   TEXT    NOT NULL REFERENCES checkouts (id),
    custodian_id  TEXT    NOT NULL REFERENCES custodians (id),
    share_index   INTEGER NOT NULL,
    key_version   INTEGER NOT NULL,
    ciphertext    BLOB    NOT NULL,
    at            INTEGER NOT NULL,
    PRIMARY KEY (checkout_id, custodian_id)
) STRICT;

CREATE TRIGGER checkouts_purge_quorum_material AFTER UPDATE OF state ON checkouts
WHEN NEW.state NOT IN ('pending', 'approved', 'released')
BEGIN
    DELETE FROM checkout_shares WHERE checkout_id = NEW.id;
    UPDATE checkouts SET transit_sealed = NULL WHERE id = NEW.id AND transit_sealed IS NOT NULL;
END;

DROP TABLE ceremonies;
CREATE TABLE ceremonies (
    id            TEXT    PRIMARY KEY,
    purpose       TEXT    NOT NULL
                  CHECK (purpose IN ('enrol', 'login', 'add_credential', 'approve', 'release', 'share_recipient')),
    custodian_id  TEXT,
    invite_id     TEXT,
    checkout_id   TEXT,
    pending       TEXT,
    state         TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_at);
