//! The audit log as people read it: names instead of ids, one line per entry, and a
//! checkout's whole story with what offline verification says about each signature.
use std::collections::HashMap;

use rusqlite::Connection;
use serde::Serialize;

use super::{App, audit::HIGH_WATER_FILE, checkouts::CheckoutView};
use crate::{
    domain::{
        announce::Context,
        audit::{AuditEntry, format_at},
        event::Subject,
        summary::{Names, summary},
    },
    error::AppError,
    store::{
        self, StoreError,
        audit::{self as audit_store, AuditFilter},
        checkouts::CheckoutRow,
        outbox::{self, OutboxRow},
    },
};

/// Who or what an entry names: the raw value (`custodian:<uuid>`, `account:…`) and
/// what a person reads (their name, the account's alias).
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub id: String,
    pub name: String,
}

/// One entry as the audit page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: u64,
    pub at: String,
    /// `at` for people: `2026-11-22 10:00:00` (UTC).
    pub when: String,
    pub actor: Named,
    pub action: String,
    pub subject: Named,
    pub summary: String,
    /// The details, pretty-printed JSON.
    pub details: String,
    /// The checkout the entry belongs to, if any (its story page).
    pub checkout: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub rows: Vec<AuditRow>,
    /// Pass as `before_seq` for the next (older) page; absent on the last page.
    pub older_than: Option<u64>,
    /// Everyone and every account, for the filters (id, name).
    pub people: Vec<Named>,
    pub accounts: Vec<Named>,
}

/// What offline verification concluded about one entry's WebAuthn assertion.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    pub verified: bool,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoryStep {
    pub row: AuditRow,
    /// For decisions, reveals and reshares: the signature's verification.
    pub signature: Option<SignatureCheck>,
}

/// Everything about one checkout, in order.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutStory {
    pub checkout: CheckoutView,
    pub steps: Vec<StoryStep>,
    /// The whole log verifies (chain, evidence, checkpoints).
    pub chain_ok: bool,
    pub chain_entries: u64,
    /// Assertions of this checkout checked, and how many verified.
    pub signatures_checked: usize,
    pub signatures_verified: usize,
    pub announcements: Vec<OutboxRow>,
}

/// Actions whose entry carries a WebAuthn assertion the replay checks.
const SIGNED: &[&str] = &[
    "checkout.approval_recorded",
    "checkout.denial_recorded",
    "checkout.revealed",
    "checkout.root_task_authorized",
    "account.reshared",
];

/// Looks names up once per page.
#[derive(Default)]
struct Resolver {
    people: HashMap<String, Option<(String, String)>>,
    accounts: HashMap<String, Option<String>>,
    checkouts: HashMap<String, Option<CheckoutRow>>,
}

impl Resolver {
    fn person(&mut self, conn: &Connection, id: &str) -> Result<Option<(String, String)>, StoreError> {
        if !self.people.contains_key(id) {
            let found = store::people::custodian(conn, id)?.map(|c| (c.name, c.email));
            self.people.insert(id.to_owned(), found);
        }
        Ok(self.people.get(id).cloned().flatten())
    }

    fn account(&mut self, conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
        if !self.accounts.contains_key(id) {
            let found = store::accounts::account(conn, id)?.map(|a| a.alias);
            self.accounts.insert(id.to_owned(), found);
        }
        Ok(self.accounts.get(id).cloned().flatten())
    }

    fn checkout(&mut self, conn: &Connection, id: &str) -> Result<Option<CheckoutRow>, StoreError> {
        if !self.checkouts.contains_key(id) {
            let found = store::checkouts::get(conn, id)?;
            self.checkouts.insert(id.to_owned(), found);
        }
        Ok(self.checkouts.get(id).cloned().flatten())
    }

    /// `custodian:<id>` → their name; anything else (`host:cli`, `system`) as it is.
    fn actor(&mut self, conn: &Connection, actor: &str) -> Result<Named, StoreError> {
        let name = match actor.strip_prefix("custodian:") {
            Some(id) => self.person(conn, id)?.map(|(n, _)| n),
            None => None,
        };
        Ok(Named { id: actor.to_owned(), name: name.unwrap_or_else(|| actor.to_owned()) })
    }

    fn subject(&mut self, conn: &Connection, subject: &str) -> Result<Named, StoreError> {
        let name = match Subject::parse(subject) {
            Some(Subject::Account(id)) => self.account(conn, &id)?,
            Some(Subject::Custodian(id)) => self.person(conn, &id)?.map(|(n, _)| n),
            Some(Subject::Invite(_)) => Some("an invite".to_owned()),
            Some(Subject::Vault) | None => None,
        };
        Ok(Named { id: subject.to_owned(), name: name.unwrap_or_else(|| subject.to_owned()) })
    }

    fn row(&mut self, conn: &Connection, e: AuditEntry) -> Result<AuditRow, StoreError> {
        let details: serde_json::Value = serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null);
        let checkout_id = details.get("checkout").and_then(|c| c.as_str()).map(str::to_owned);
        let checkout = match &checkout_id {
            Some(id) => self.checkout(conn, id)?,
            None => None,
        };
        let actor = self.actor(conn, &e.actor)?;
        let subject = self.subject(conn, &e.subject)?;
        let requester = match &checkout {
            Some(c) => {
                Some(self.person(conn, &c.requester_id)?.map(|(n, _)| n).unwrap_or_else(|| c.requester_id.clone()))
            }
            None => None,
        };
        let names = Names {
            ctx: Context {
                account: Subject::parse(&e.subject).and_then(|s| s.account_id().map(|_| subject.name.clone())),
                actor: actor.name.clone(),
                requester,
                kind: checkout.as_ref().map(|c| c.kind.clone()),
                reason: checkout.as_ref().map(|c| c.reason.clone()),
                person: Subject::parse(&e.subject).and_then(|s| s.custodian_id().map(|_| subject.name.clone())),
            },
            ticket: checkout.as_ref().and_then(|c| c.ticket.clone()),
        };
        Ok(AuditRow {
            summary: summary(&e.action, &e.details, &names),
            details: serde_json::to_string_pretty(&details).unwrap_or_else(|_| e.details.clone()),
            seq: e.seq,
            when: e.at.replacen('T', " ", 1).trim_end_matches('Z').trim_end_matches(".000").to_owned(),
            at: e.at,
            actor,
            action: e.action,
            subject,
            checkout: checkout_id,
        })
    }
}

impl App {
    /// A page of the audit log, newest first, for people: paged by `seq`
    /// (`filter.before_seq`), never by offset.
    #[tracing::instrument(skip_all)]
    pub async fn audit_view(&self, filter: AuditFilter, limit: u32) -> Result<AuditView, AppError> {
        let limit = limit.clamp(1, super::audit::MAX_PAGE);
        let filter = AuditFilter { newest_first: true, after_seq: None, ..filter };
        self.db
            .call(move |conn| {
                let entries = audit_store::list(conn, &filter, limit)?;
                let older_than = (entries.len() as u32 == limit).then(|| entries.last().map(|e| e.seq)).flatten();
                let mut r = Resolver::default();
                let rows = entries.into_iter().map(|e| r.row(conn, e)).collect::<Result<Vec<_>, _>>()?;
                let people = store::people::list_custodians(conn)?
                    .into_iter()
                    .map(|c| Named { id: format!("custodian:{}", c.id), name: c.name })
                    .collect();
                let accounts = store::accounts::list_accounts(conn)?
                    .into_iter()
                    .map(|a| Named { id: format!("account:{}", a.account_id), name: a.alias })
                    .collect();
                Ok::<_, AppError>(AuditView { rows, older_than, people, accounts })
            })
            .await
    }

    /// A checkout's whole story: every audit entry about it, each signature as offline
    /// verification judges it (the same replay as `audit verify`), and its
    /// announcements with their delivery state.
    #[tracing::instrument(skip_all)]
    pub async fn checkout_story(&self, id: String) -> Result<CheckoutStory, AppError> {
        let checkout = self.get_checkout(id.clone()).await?;
        let max_attempts = i64::from(self.config.sns.max_attempts);
        let cid = id.clone();
        let (rows, announcements) = self
            .db
            .call(move |conn| {
                let Some(c) = store::checkouts::get(conn, &cid)? else {
                    return Err(AppError::not_found("checkout_not_found", "There is no checkout with this id."));
                };
                let requested_at = time::OffsetDateTime::from_unix_timestamp(c.created_at)
                    .map(format_at)
                    .map_err(|e| AppError::Internal(format!("checkout {cid} has an impossible created_at: {e}")))?;
                let entries = audit_store::for_checkout(
                    conn,
                    &Subject::Account(c.account_id.clone()).as_audit(),
                    &requested_at,
                    &cid,
                )?;
                let mut r = Resolver::default();
                let rows = entries.into_iter().map(|e| r.row(conn, e)).collect::<Result<Vec<_>, _>>()?;
                let mut announcements = outbox::list(conn, None, Some(&cid), 500, max_attempts)?;
                announcements.sort_by_key(|a| a.id);
                Ok::<_, AppError>((rows, announcements))
            })
            .await?;
        let path = self.db.path().to_owned();
        let high_water = self.config.data_dir.join(HIGH_WATER_FILE);
        let (status, report) = tokio::task::spawn_blocking(move || {
            super::audit::verify_log_focused(&store::open_read_only(&path)?, Some(&high_water), Some(&id))
        })
        .await
        .map_err(|_| AppError::Internal("verification worker stopped".into()))??;
        let steps: Vec<StoryStep> = rows
            .into_iter()
            .map(|row| {
                let signature = SIGNED.contains(&row.action.as_str()).then(|| signature_check(&report, row.seq));
                StoryStep { row, signature }
            })
            .collect();
        let checked: Vec<&SignatureCheck> = steps.iter().filter_map(|s| s.signature.as_ref()).collect();
        Ok(CheckoutStory {
            checkout,
            signatures_checked: checked.len(),
            signatures_verified: checked.iter().filter(|c| c.verified).count(),
            steps,
            chain_ok: status.ok,
            chain_entries: status.entries,
            announcements,
        })
    }
}

fn signature_check(report: &super::audit::FocusReport, seq: u64) -> SignatureCheck {
    let problems: Vec<&str> = report.problems.iter().filter(|(s, _)| *s == seq).map(|(_, p)| p.as_str()).collect();
    if !problems.is_empty() {
        SignatureCheck { verified: false, text: format!("Does not verify: {}", problems.join("; ")) }
    } else if report.checked.contains(&seq) {
        SignatureCheck {
            verified: true,
            text: "checked offline: the key enrolled for this person signed the challenge issued for this step, for this origin, with user verification.".into(),
        }
    } else {
        SignatureCheck {
            verified: false,
            text: "Not checked: the replay stopped before this entry (see the chain status).".into(),
        }
    }
}

/// The audit page's filters as people enter them (all optional; empty means none).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// `custodian:<id>`: entries by or about this person.
    pub person: String,
    /// An AWS account id: entries about this account.
    pub account: String,
    /// A raw subject (`account:…`, `custodian:…`, `invite:…`, `vault`).
    pub subject: String,
    /// An event family (`checkout.`, `custodian.`…), or a whole action.
    pub action_prefix: String,
    /// First and last day shown (`YYYY-MM-DD`, UTC, both inclusive).
    pub from: String,
    pub to: String,
    /// Keyset paging: entries older than this `seq`.
    pub before_seq: Option<u64>,
}

impl AuditQuery {
    /// The store filter, or `invalid_date` for a day that is not `YYYY-MM-DD`.
    pub fn filter(&self) -> Result<AuditFilter, AppError> {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let day = |s: &str, next: bool| -> Result<Option<String>, AppError> {
            let Some(s) = some(s) else { return Ok(None) };
            let format = time::macros::format_description!("[year]-[month]-[day]");
            let d = time::Date::parse(&s, &format)
                .map_err(|_| AppError::invalid("invalid_date", format!("{s:?} is not a day such as 2026-12-01.")))?;
            let d = if next { d.next_day().unwrap_or(d) } else { d };
            Ok(Some(format_at(d.midnight().assume_utc())))
        };
        let subject = match (some(&self.account), some(&self.subject)) {
            (Some(a), _) => Some(Subject::Account(a).as_audit()),
            (None, s) => s,
        };
        Ok(AuditFilter {
            person: some(&self.person),
            subject,
            action_prefix: some(&self.action_prefix),
            since: day(&self.from, false)?,
            until: day(&self.to, true)?,
            before_seq: self.before_seq,
            ..AuditFilter::default()
        })
    }

    /// The query string of the same filters with another `before_seq` (paging links).
    pub fn with_before(&self, before_seq: Option<u64>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("person", &self.person),
            ("account", &self.account),
            ("subject", &self.subject),
            ("action_prefix", &self.action_prefix),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        if let Some(b) = before_seq {
            q.append_pair("before_seq", &b.to_string());
        }
        q.finish()
    }
}
