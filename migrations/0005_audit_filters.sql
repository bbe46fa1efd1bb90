-- `since` / `until` filters on the audit log read this index instead of scanning the
-- whole log (`action_prefix` reads audit_log_by_action as a range).
CREATE INDEX audit_log_by_at ON audit_log (at);
