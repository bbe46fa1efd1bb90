-- breakglass schema v1. Forward-only: never edit once landed; add 0002_… instead.
-- Times are Unix seconds (UTC) unless named otherwise.

-- Instance settings (e.g. the secret used to answer sign-in for unknown e-mails).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

-- The sealed vault key (policy mode). Exactly one row once initialised.
CREATE TABLE vault (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    seal_kind        TEXT    NOT NULL CHECK (seal_kind IN ('key_file', 'passphrase')),
    dev_mode         INTEGER NOT NULL CHECK (dev_mode IN (0, 1)),
    kdf_params       TEXT,            -- JSON {m_kib,t,p} for argon2id; NULL for key files
    kdf_salt         BLOB,
    sealed_key       BLOB    NOT NULL, -- age ciphertext of the vault-key envelope
    recipient        TEXT    NOT NULL, -- age1… public key of the vault key
    created_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE custodians (
    id            TEXT    PRIMARY KEY,           -- UUID; also the WebAuthn user handle
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL UNIQUE,        -- stored lower-case
    status        TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    enrolled_at   INTEGER NOT NULL,
    approve_after INTEGER NOT NULL,               -- end of the cooling-off period
    disabled_at   INTEGER,
    disabled_by   TEXT
) STRICT;

CREATE TABLE custodian_roles (
    custodian_id TEXT NOT NULL REFERENCES custodians (id),
    role         TEXT NOT NULL CHECK (role IN ('admin', 'custodian', 'auditor')),
    PRIMARY KEY (custodian_id, role)
) STRICT;

CREATE TABLE credentials (
    id              TEXT    PRIMARY KEY,          -- base64url credential id
    custodian_id    TEXT    NOT NULL REFERENCES custodians (id),
    label           TEXT    NOT NULL,
    passkey         TEXT    NOT NULL,             -- webauthn-rs Passkey JSON (counter included)
    public_key      TEXT    NOT NULL,             -- COSE public key at enrolment (JSON), for offline checks
    prf_capable     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER
) STRICT;
CREATE INDEX credentials_by_custodian ON credentials (custodian_id);

CREATE TABLE invites (
    id          TEXT    PRIMARY KEY,
    token_hash  BLOB    NOT NULL UNIQUE,          -- SHA-256 of the token; the token is never stored
    roles       TEXT    NOT NULL,                 -- sorted, comma-separated
    created_by  TEXT    NOT NULL,                 -- audit actor
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT REFERENCES custodians (id),
    revoked_at  INTEGER
) STRICT;

-- WebAuthn ceremonies in flight: server-side, single-use, short-lived.
CREATE TABLE ceremonies (
    id            TEXT    PRIMARY KEY,
    purpose       TEXT    NOT NULL CHECK (purpose IN ('enrol', 'login', 'add_credential')),
    custodian_id  TEXT,                           -- login / add_credential (NULL for a decoy)
    invite_id     TEXT,                           -- enrol
    pending       TEXT,                           -- JSON: name, email, user id (enrol)
    state         TEXT,                           -- webauthn-rs state JSON; NULL for a decoy
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_at);

CREATE TABLE sessions (
    token_hash       BLOB    PRIMARY KEY,         -- SHA-256 of the cookie value
    custodian_id     TEXT    NOT NULL REFERENCES custodians (id),
    credential_id    TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,            -- when the person last proved presence
    last_seen_at     INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL             -- absolute expiry
) STRICT;
CREATE INDEX sessions_by_custodian ON sessions (custodian_id);

CREATE TABLE accounts (
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
    recipient             TEXT    NOT NULL,       -- age1… public key of the account key
    wrapped_key           BLOB    NOT NULL,       -- account-key envelope, age-encrypted to the vault key
    created_at            INTEGER NOT NULL,
    created_by            TEXT    NOT NULL
) STRICT;

-- Versions of each secret. Old versions are kept (encrypted) for the record, never shown.
CREATE TABLE secret_versions (
    id            INTEGER PRIMARY KEY,
    account_id    TEXT    NOT NULL REFERENCES accounts (account_id),
    kind          TEXT    NOT NULL CHECK (kind IN ('root_password', 'totp_seed', 'recovery_notes')),
    version       INTEGER NOT NULL CHECK (version >= 1),
    ciphertext    BLOB    NOT NULL,               -- age, to the account key; envelope inside
    deposited_at  INTEGER NOT NULL,
    deposited_by  TEXT    NOT NULL,
    UNIQUE (account_id, kind, version)
) STRICT;

-- Append-only, hash-chained (docs/audit-log.md).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_by_action ON audit_log (action);
CREATE INDEX audit_log_by_subject ON audit_log (subject);
CREATE INDEX audit_log_by_actor ON audit_log (actor);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
