//! Announcements: every announced audit event gets an outbox row in the same
//! transaction; a worker delivers rows in order to SNS with backoff, each carrying a
//! freshly signed checkpoint of the audit log.
use std::sync::Arc;

use rusqlite::Connection;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{App, rfc3339};
use crate::{
    crypto::checkpoint::{self, Checkpoint},
    domain::{
        announce::{self, Context, subject_line},
        audit::AuditEntry,
        event::{Event, Subject},
    },
    error::AppError,
    notify::{Backoff, Outgoing, Sink, next_attempt},
    store::{self, StoreError, audit, outbox},
};

pub const SCHEMA: &str = "breakglass.announcement/v1";

/// The key that signs checkpoints, and its name (the log's origin line).
pub struct LogSigner {
    pub key: ed25519_dalek::SigningKey,
    pub name: String,
    /// The largest checkpoint signed, kept outside the database (a restored backup
    /// cannot roll it back): `<size> <head hex>`.
    pub high_water: Option<std::path::PathBuf>,
}

fn read_high_water(path: &std::path::Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (size, head) = text.trim().split_once(' ')?;
    Some((size.parse().ok()?, head.to_owned()))
}

fn write_high_water(path: &std::path::Path, size: u64, head: &str) -> Result<(), AppError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| AppError::Internal(format!("cannot record the checkpoint high-water mark: {e}"));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(format!("{size} {head}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl LogSigner {
    pub fn verifier_key(&self) -> String {
        checkpoint::verifier_key(&self.name, self.key.verifying_key().as_bytes())
    }
}

fn person_name(conn: &Connection, actor: &str) -> Result<String, StoreError> {
    Ok(match actor.strip_prefix("custodian:").map(|id| store::people::custodian(conn, id)).transpose()?.flatten() {
        Some(c) => format!("{} <{}>", c.name, c.email),
        None => actor.to_owned(),
    })
}

/// Append an audit entry for `event` and, when the event is announced, its outbox
/// row — in the caller's transaction. The only writer of audit entries.
pub(crate) fn record(
    conn: &Connection,
    now: OffsetDateTime,
    actor: &str,
    subject: &Subject,
    event: &Event,
) -> Result<AuditEntry, StoreError> {
    let action = event.action();
    let subject_text = subject.as_audit();
    let entry = audit::append(conn, now, actor, action, &subject_text, &event.details())?;
    if !announce::is_announced(event) {
        return Ok(entry);
    }
    let account_id = subject.account_id().map(str::to_owned);
    let account = account_id.as_deref().map(|id| store::accounts::account(conn, id)).transpose()?.flatten();
    let checkout_id = event.checkout_id().map(str::to_owned);
    let checkout = checkout_id.as_deref().map(|id| store::checkouts::get(conn, id)).transpose()?.flatten();
    let requester =
        checkout.as_ref().map(|c| person_name(conn, &format!("custodian:{}", c.requester_id))).transpose()?;
    let person = subject.custodian_id().map(|id| person_name(conn, &format!("custodian:{id}"))).transpose()?;
    let ctx = Context {
        account: account.as_ref().map(|a| format!("{} ({})", a.alias, a.account_id)),
        actor: person_name(conn, actor)?,
        requester: requester.clone(),
        kind: checkout.as_ref().map(|c| c.kind.clone()),
        reason: checkout.as_ref().map(|c| c.reason.clone()),
        person,
    };
    let Some((severity, summary)) = announce::announcement(event, &ctx) else { return Ok(entry) };
    let event_id = Uuid::new_v4().to_string();
    let message = json!({
        "schema": SCHEMA,
        "event_id": event_id,
        "event": action,
        "severity": severity,
        "at": entry.at,
        "summary": summary,
        "account": account.as_ref().map(|a| json!({"id": a.account_id, "alias": a.alias, "state": a.state})),
        "checkout": checkout.as_ref().map(|c| json!({
            "id": c.id,
            "kind": c.kind,
            "state": c.state,
            "requester": requester,
            "reason": c.reason,
            "ticket": c.ticket,
            "duration_minutes": c.duration_minutes,
            "approvals_required": c.approvals_required,
        })),
        "actor": {"id": actor, "name": ctx.actor},
        "audit": {"seq": entry.seq, "hash": entry.hash},
    });
    outbox::insert(
        conn,
        &event_id,
        action,
        severity.as_str(),
        account_id.as_deref(),
        checkout_id.as_deref(),
        &subject_line(&summary),
        &message.to_string(),
        entry.seq,
        now.unix_timestamp(),
    )?;
    Ok(entry)
}

/// A signed checkpoint as served and published.
#[derive(Debug, Clone, Serialize)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub head: String,
    /// The signed note (C2SP style). Keep it: `breakglass audit verify --checkpoint`.
    pub note: String,
    pub verifier_key: String,
}

/// Sign a checkpoint of the log as it is now — but never one inconsistent with a
/// checkpoint signed before: the entry at the earlier size must still have the
/// earlier head, and the log must not have shrunk.
fn sign_checkpoint(conn: &Connection, signer: &LogSigner, now: i64) -> Result<Option<SignedCheckpoint>, AppError> {
    let (size, head) = outbox::audit_head(conn)?;
    let Some(head) = head else { return Ok(None) };
    // The mark outside the database first: it survives restoring an older database.
    if let Some((m, h_m)) = signer.high_water.as_deref().and_then(read_high_water)
        && (m > size || outbox::audit_hash_at(conn, m)?.as_deref() != Some(h_m.as_str()))
    {
        return Err(AppError::conflict(
            "log_inconsistent",
            format!(
                "This database does not contain the log of the checkpoint already signed at size {m} (a restored or rewritten database?). Nothing more is signed until an operator investigates."
            ),
        ));
    }

    let latest = outbox::latest_checkpoint(conn)?;
    if let Some((m, h_m, note)) = &latest {
        let still = outbox::audit_hash_at(conn, *m)?;
        if *m > size || still.as_deref() != Some(h_m.as_str()) {
            return Err(AppError::conflict(
                "log_inconsistent",
                format!(
                    "The audit log no longer contains the log of the checkpoint signed at size {m}: it was rewritten or truncated. Nothing more is signed; investigate with `breakglass audit verify`."
                ),
            ));
        }
        if *m == size {
            return Ok(Some(SignedCheckpoint {
                origin: signer.name.clone(),
                size,
                head,
                note: note.clone(),
                verifier_key: signer.verifier_key(),
            }));
        }
    }
    // Never sign over entries that do not chain from the last checkpoint (or from the
    // start): an edited row after it would otherwise be vouched for.
    let (from, from_head) = match &latest {
        Some((m, h_m, _)) => {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(h_m, &mut raw).map_err(|e| AppError::Internal(e.to_string()))?;
            (*m, raw)
        }
        None => (0, crate::domain::audit::GENESIS_PREV_HASH),
    };
    let mut chain = crate::domain::audit::ChainVerifier::resume(from, from_head);
    let mut broken = None;
    audit::for_each_ref_after(conn, from, |e| match chain.push(e) {
        Ok(()) => true,
        Err(b) => {
            broken = Some(b);
            false
        }
    })?;
    if let Some(b) = broken {
        tracing::error!("refusing to sign a checkpoint: {b}");
        return Err(AppError::conflict(
            "log_inconsistent",
            format!(
                "The audit log does not verify from the last checkpoint (size {from}): {b}. Nothing more is signed; investigate with `breakglass audit verify`."
            ),
        ));
    }
    let mut raw = [0u8; 32];
    hex::decode_to_slice(&head, &mut raw).map_err(|e| AppError::Internal(e.to_string()))?;
    let note =
        checkpoint::sign(&signer.key, &signer.name, &Checkpoint { origin: signer.name.clone(), size, head: raw });
    outbox::insert_checkpoint(conn, size, &head, &note, now)?;
    if let Some(path) = &signer.high_water {
        write_high_water(path, size, &head)?;
    }
    Ok(Some(SignedCheckpoint { origin: signer.name.clone(), size, head, note, verifier_key: signer.verifier_key() }))
}

/// What one delivery step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing waiting.
    Idle,
    /// The oldest waiting message is backing off until then (later ones wait behind it: order).
    NotDue {
        until: i64,
    },
    /// No topic configured.
    NoSink,
    Delivered {
        event_id: String,
        message_id: String,
    },
    Retrying {
        event_id: String,
        attempts: i64,
        error: String,
    },
    Failed {
        event_id: String,
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    pub sink: &'static str,
    pub undelivered: i64,
    pub oldest_undelivered_at: Option<String>,
    /// The same, as Unix seconds (for ages in `/readyz`).
    #[serde(skip)]
    pub oldest_undelivered_unix: Option<i64>,
    pub failed: i64,
}

impl App {
    /// Deliver announcements through `sink` (SNS, or any other [`Sink`]).
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Whether announcements have somewhere to go (the delivery worker runs only then).
    pub fn has_sink(&self) -> bool {
        self.sink.is_some()
    }

    pub fn log_verifier_key(&self) -> Option<String> {
        self.log_signer.as_ref().map(|s| s.verifier_key())
    }

    /// Deliver the oldest pending message, if it is due. Tests and the worker loop
    /// call this; it never holds the database while talking to SNS.
    #[tracing::instrument(skip_all)]
    pub async fn deliver_one(&self) -> Result<Delivery, AppError> {
        let now = self.now().unix_timestamp();
        let Some(row) = self.db.call(|conn| Ok::<_, AppError>(outbox::oldest_pending(conn)?)).await? else {
            return Ok(Delivery::Idle);
        };
        if row.next_attempt_at > now {
            return Ok(Delivery::NotDue { until: row.next_attempt_at });
        }
        let Some(sink) = self.sink.clone() else { return Ok(Delivery::NoSink) };
        let signer = self
            .log_signer
            .clone()
            .ok_or_else(|| AppError::unavailable("vault_sealed", "No log key on this process."))?;
        let cp = self.db.transact(move |tx| sign_checkpoint(tx, &signer, now)).await?;
        let mut body: serde_json::Value =
            serde_json::from_str(&row.message).map_err(|e| AppError::unexpected("reading a stored announcement", e))?;
        body["checkpoint"] = serde_json::to_value(&cp)
            .map_err(|e| AppError::unexpected("encoding the checkpoint of an announcement", e))?;
        let out = Outgoing {
            event_id: row.event_id.clone(),
            event: row.event.clone(),
            severity: row.severity.clone(),
            account_id: row.account_id.clone(),
            subject: row.subject.clone(),
            body: body.to_string(),
        };
        let result = sink.publish(&out).await;
        let backoff = Backoff::from_config(&self.config.sns);
        let jitter = f64::from(crate::crypto::random_bytes::<1>()?[0]) / 255.0;
        let after = self.now().unix_timestamp().max(now);
        self.db
            .transact(move |tx| {
                match result {
                    Ok(message_id) => {
                        outbox::mark_delivered(tx, row.id, &message_id, after)?;
                        Ok(Delivery::Delivered { event_id: row.event_id, message_id })
                    }
                    Err(error) => {
                        let attempts = row.attempts + 1;
                        // Past max_attempts the message is reported as failed but keeps its
                        // place and keeps being retried at the longest backoff: nothing
                        // behind it overtakes it, so subscribers never see events out of order.
                        let next = next_attempt(backoff, attempts, after, jitter);
                        let give_up = next.failed;
                        let error: String = error.chars().take(500).collect();
                        outbox::mark_attempt_failed(tx, row.id, &error, next.at)?;
                        tracing::warn!(event = %row.event, attempts, "announcement not delivered: {error}");
                        Ok(if give_up {
                            Delivery::Failed { event_id: row.event_id, error }
                        } else {
                            Delivery::Retrying { event_id: row.event_id, attempts, error }
                        })
                    }
                }
            })
            .await
    }

    /// Deliver until nothing is due. Returns how many were delivered.
    #[tracing::instrument(skip_all)]
    pub async fn deliver_due(&self) -> Result<usize, AppError> {
        let mut n = 0;
        loop {
            match self.deliver_one().await? {
                Delivery::Delivered { .. } => n += 1,
                Delivery::Failed { .. } => {}
                _ => return Ok(n),
            }
        }
    }

    /// Failed messages back into the queue (`breakglass outbox retry`).
    #[tracing::instrument(skip_all)]
    pub async fn retry_failed(&self) -> Result<usize, AppError> {
        let now = self.now().unix_timestamp();
        let max = i64::from(self.config.sns.max_attempts);
        self.db.transact(move |tx| Ok::<_, AppError>(outbox::retry_failed(tx, now, max)?)).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn outbox_status(&self) -> Result<OutboxStatus, AppError> {
        let sink = self.sink.as_ref().map_or("no_sink", |s| s.name());
        let max = i64::from(self.config.sns.max_attempts);
        self.db
            .call(move |conn| {
                let (undelivered, oldest, failed) = outbox::backlog(conn, max)?;
                Ok::<_, AppError>(OutboxStatus {
                    sink,
                    undelivered,
                    oldest_undelivered_at: oldest.map(rfc3339),
                    oldest_undelivered_unix: oldest,
                    failed,
                })
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn outbox_list(
        &self,
        state: Option<String>,
        checkout: Option<String>,
    ) -> Result<Vec<outbox::OutboxRow>, AppError> {
        let max = i64::from(self.config.sns.max_attempts);
        self.db
            .call(move |conn| Ok::<_, AppError>(outbox::list(conn, state.as_deref(), checkout.as_deref(), 500, max)?))
            .await
    }

    /// A checkpoint of the log now, signed (or the last one, if nothing changed).
    #[tracing::instrument(skip_all)]
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, AppError> {
        let signer = self
            .log_signer
            .clone()
            .ok_or_else(|| AppError::unavailable("vault_sealed", "No log key on this process."))?;
        let now = self.now().unix_timestamp();
        self.db
            .transact(move |tx| {
                sign_checkpoint(tx, &signer, now)?
                    .ok_or_else(|| AppError::not_found("log_empty", "The audit log is empty."))
            })
            .await
    }
}

/// Open the log key, creating (and announcing) it on first use.
pub(crate) fn ensure_log_key(
    conn: &mut Connection,
    vault: &crate::crypto::UnsealedVault,
    name: &str,
    now: OffsetDateTime,
) -> Result<LogSigner, AppError> {
    if let Some(row) = outbox::log_key(conn)? {
        return Ok(LogSigner { key: vault.log_key(&row.sealed_key)?, name: row.key_name, high_water: None });
    }
    let new = crate::crypto::vault::new_log_key(vault.recipient())?;
    store::transact(conn, |tx| {
        outbox::insert_log_key(
            tx,
            &outbox::LogKeyRow {
                key_name: name.to_owned(),
                public_key: new.public_key.to_vec(),
                sealed_key: new.sealed.clone(),
            },
            now.unix_timestamp(),
        )?;
        record(
            tx,
            now,
            "system",
            &Subject::Vault,
            &Event::LogKeyCreated {
                key_name: name.to_owned(),
                verifier_key: checkpoint::verifier_key(name, &new.public_key),
            },
        )?;
        Ok::<_, AppError>(())
    })?;
    Ok(LogSigner { key: vault.log_key(&new.sealed)?, name: name.to_owned(), high_water: None })
}
