-- Accounts without root passwords (AWS centralized root access): breakglass stores no
-- password or TOTP seed for them; a released checkout opens a short `sts:AssumeRoot`
-- session scoped by one AWS-managed root-task policy (docs/root-tasks.md).

-- 'stored_root': the vault holds the root password and TOTP seed (everything before
-- this migration). 'centralized_root': nothing is stored; checkouts name a task policy.
-- Quorum mode splits the key of stored secrets, so it applies to stored_root only.
ALTER TABLE accounts ADD COLUMN account_type TEXT NOT NULL DEFAULT 'stored_root'
    CHECK (account_type IN ('stored_root', 'centralized_root')
           AND (account_type = 'stored_root' OR custody = 'policy'));

-- The root-task policy a checkout asks for, and the session length (AssumeRoot's
-- DurationSeconds, at most 900). Both set for a centralized_root account's checkout,
-- both NULL otherwise.
ALTER TABLE checkouts ADD COLUMN task_policy TEXT
    CHECK (task_policy IS NULL OR task_policy IN ('IAMAuditRootUserCredentials', 'IAMCreateRootUserPassword',
        'IAMDeleteRootUserCredentials', 'S3UnlockBucketPolicy', 'SQSUnlockQueuePolicy'));
ALTER TABLE checkouts ADD COLUMN task_duration_seconds INTEGER
    CHECK ((task_duration_seconds IS NULL) = (task_policy IS NULL)
           AND (task_duration_seconds IS NULL OR task_duration_seconds BETWEEN 60 AND 900));

-- The database itself refuses a root-task checkout on an account with stored
-- credentials, a credential checkout on a centralized_root account, and any stored
-- secret for a centralized_root account.
CREATE TRIGGER checkouts_task_matches_account BEFORE INSERT ON checkouts
WHEN ((SELECT account_type FROM accounts WHERE account_id = NEW.account_id) = 'centralized_root')
     <> (NEW.task_policy IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'a checkout names a task policy exactly when its account is centralized_root');
END;

-- What the approvals were for cannot change after the request, and a drill only audits.
CREATE TRIGGER checkouts_task_fixed BEFORE UPDATE OF task_policy, task_duration_seconds ON checkouts
WHEN NEW.task_policy IS NOT OLD.task_policy OR NEW.task_duration_seconds IS NOT OLD.task_duration_seconds
BEGIN
    SELECT RAISE(ABORT, 'a checkout''s task policy and duration are fixed when it is requested');
END;

CREATE TRIGGER checkouts_drill_task_read_only BEFORE INSERT ON checkouts
WHEN NEW.kind = 'drill' AND NEW.task_policy IS NOT NULL AND NEW.task_policy <> 'IAMAuditRootUserCredentials'
BEGIN
    SELECT RAISE(ABORT, 'a drill''s root task is IAMAuditRootUserCredentials');
END;

CREATE TRIGGER secret_versions_none_for_centralized_root BEFORE INSERT ON secret_versions
WHEN (SELECT account_type FROM accounts WHERE account_id = NEW.account_id) = 'centralized_root'
BEGIN
    SELECT RAISE(ABORT, 'a centralized_root account stores no secrets');
END;
