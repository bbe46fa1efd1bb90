//! Root tasks for `centralized_root` accounts (docs/root-tasks.md). A checkout of such
//! an account names one AWS-managed task policy. After the same approvals as any
//! checkout and the requester's fresh assertion (`release_finish`, which writes
//! `checkout.root_task_authorized` in its transaction), breakglass calls
//! `sts:AssumeRoot` *outside* any transaction (a network call must not hold the write
//! lock), records the outcome (`checkout.root_task_issued` or `…_failed`), and only
//! then hands the temporary credentials to the requester. They are never stored.
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Actor, App, rfc3339};
use crate::{
    aws::RootTasks,
    domain::{
        event::{Event, Subject},
        root_task::RootTask,
    },
    error::AppError,
};

/// What a root-task release authorised, handed from the release transaction to the
/// AWS call.
pub(crate) struct RootTaskGrant {
    pub checkout_id: String,
    pub account_id: String,
    pub actor: Actor,
    pub task: RootTask,
    pub policy_arn: String,
    pub window_ends_at: i64,
}

/// The `credential_process` output format the AWS CLI and SDKs read
/// (`Version` 1; `Expiration` in RFC 3339).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialProcess {
    pub version: u8,
    pub access_key_id: String,
    #[serde(serialize_with = "super::checkouts::expose")]
    pub secret_access_key: SecretString,
    #[serde(serialize_with = "super::checkouts::expose")]
    pub session_token: SecretString,
    pub expiration: String,
}

/// What a root-task release answers: the session's credentials, shown once.
#[derive(Serialize)]
pub struct RootSession {
    pub checkout_id: String,
    pub account_id: String,
    pub task_policy: String,
    pub task_policy_arn: String,
    /// The region whose STS endpoint issued the session.
    pub region: String,
    pub access_key_id: String,
    pub expiration: String,
    /// Seconds from the server's clock to `expiration`: count down from this.
    pub expires_in_seconds: i64,
    /// For `credential_process` in `~/.aws/config` (print it from a script).
    pub credential_process: CredentialProcess,
    /// The same credentials as POSIX shell `export` lines.
    #[serde(serialize_with = "super::checkouts::expose")]
    pub shell: SecretString,
    pub window_ends_at: String,
    pub window_seconds_left: i64,
}

/// `'…'` for a POSIX shell: a single quote inside becomes `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) fn unavailable() -> AppError {
    AppError::unavailable(
        "root_tasks_unavailable",
        "This server does not open AWS root-task sessions (aws.root_tasks_enabled is off, or it has no AWS region): an admin turns it on (docs/root-tasks.md).",
    )
}

impl App {
    /// Open AWS root-task sessions with this client (`sts:AssumeRoot`).
    pub fn with_root_tasks(mut self, tasks: RootTasks) -> Self {
        self.root_tasks = Some(Arc::new(tasks));
        self
    }

    pub(crate) fn root_tasks(&self) -> Result<&RootTasks, AppError> {
        self.root_tasks.as_deref().ok_or_else(unavailable)
    }

    /// Commit (and announce) what became of an authorised session; returns the time
    /// it was recorded at.
    async fn record_outcome(&self, grant: &RootTaskGrant, event: Event) -> Result<time::OffsetDateTime, AppError> {
        let now = self.now();
        let actor = grant.actor.audit_name();
        let subject = Subject::Account(grant.account_id.clone());
        self.db.transact(move |tx| crate::app::announce::record(tx, now, &actor, &subject, &event)).await?;
        Ok(now)
    }

    /// Ask AWS for the session a release authorised, record what happened, and hand
    /// the credentials over only once that record is committed.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn open_root_session(&self, grant: RootTaskGrant) -> Result<RootSession, AppError> {
        let tasks = self.root_tasks.clone().ok_or_else(unavailable)?;
        // The checkout may have been checked in, or its window closed, since the release
        // committed: look again just before asking AWS, and let the session end with the
        // window (AWS's minimum useful length, 60 s, aside).
        let before = self.now().unix_timestamp();
        let id = grant.checkout_id.clone();
        let current = self.db.call(move |conn| Ok::<_, AppError>(crate::store::checkouts::get(conn, &id)?)).await?;
        let open = current.is_some_and(|c| {
            c.state == crate::domain::checkout::CheckoutState::Released && c.window_ends_at.is_some_and(|w| before < w)
        });
        if !open {
            self.record_outcome(
                &grant,
                Event::RootTaskFailed {
                    checkout: grant.checkout_id.clone(),
                    task_policy: grant.task.policy.as_str().to_owned(),
                    code: "not_sent".into(),
                    message: "the checkout ended before AWS was asked".into(),
                },
            )
            .await?;
            return Err(AppError::gone(
                "checkout_ended",
                "This checkout was checked in or its reveal window ended before AWS was asked: no session was opened.",
            ));
        }
        let window_left = u32::try_from((grant.window_ends_at - before).max(0)).unwrap_or(u32::MAX);
        let duration = grant.task.duration_seconds.min(window_left.max(crate::domain::root_task::MIN_DURATION_SECONDS));
        let result = tasks.assume_root(&grant.account_id, grant.task.policy, duration).await;
        let policy = grant.task.policy.as_str().to_owned();
        let event = match &result {
            Ok(creds) => Event::RootTaskIssued {
                checkout: grant.checkout_id.clone(),
                task_policy: policy.clone(),
                access_key_id: creds.access_key_id.clone(),
                expiration: rfc3339(creds.expiration),
                aws_request_id: creds.request_id.clone(),
            },
            Err(e) => Event::RootTaskFailed {
                checkout: grant.checkout_id.clone(),
                task_policy: policy.clone(),
                code: e.code.clone(),
                message: e.message.clone(),
            },
        };
        let now = self.record_outcome(&grant, event).await?;
        let creds = result.map_err(|e| {
            if e.outcome_unknown {
                AppError::upstream(
                    "assume_root_outcome_unknown",
                    format!(
                        "AWS did not answer clearly ({}). A root session MAY have been opened for account {} without reaching you: look for AssumeRoot in CloudTrail (the root activity feed reports it) before confirming again.",
                        e.message, grant.account_id
                    ),
                )
            } else {
                AppError::upstream(
                    "assume_root_failed",
                    format!(
                        "AWS opened no root session ({}: {}). Nothing was issued. Check the service's AWS permissions and that centralized root access is on for account {}, then release again while the window is open.",
                        e.code, e.message, grant.account_id
                    ),
                )
            }
        })?;
        let t = now.unix_timestamp();
        let expiration = rfc3339(creds.expiration);
        let shell = SecretString::from(format!(
            "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_SESSION_TOKEN={}\nexport AWS_REGION={}\n",
            shell_quote(&creds.access_key_id),
            shell_quote(creds.secret_access_key.expose_secret()),
            shell_quote(creds.session_token.expose_secret()),
            shell_quote(tasks.region()),
        ));
        Ok(RootSession {
            checkout_id: grant.checkout_id,
            account_id: grant.account_id,
            task_policy: policy,
            task_policy_arn: grant.policy_arn,
            region: tasks.region().to_owned(),
            access_key_id: creds.access_key_id.clone(),
            expires_in_seconds: (creds.expiration - t).max(0),
            credential_process: CredentialProcess {
                version: 1,
                access_key_id: creds.access_key_id,
                secret_access_key: creds.secret_access_key,
                session_token: creds.session_token,
                expiration: expiration.clone(),
            },
            expiration,
            shell,
            window_ends_at: rfc3339(grant.window_ends_at),
            window_seconds_left: (grant.window_ends_at - t).max(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_values_are_single_quoted_and_a_quote_cannot_end_them() {
        assert_eq!(shell_quote("AKIA/x+y="), "'AKIA/x+y='");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
