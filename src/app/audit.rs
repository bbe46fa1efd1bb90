//! Reading and verifying the audit log.
use std::collections::HashMap;

use serde::Serialize;

use super::App;
use crate::{
    crypto::evidence::{self, AssertionEvidence, PublicKeyRecord},
    domain::audit::{AuditEntry, ChainBreak, ChainVerifier},
    error::AppError,
    store::{
        audit::{self, AuditFilter},
        checkouts,
    },
};

pub const MAX_PAGE: u32 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` to get the next page; absent on the last page.
    pub next_after_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// The chain verifies and every approval's evidence verifies.
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last verified entry.
    pub head: String,
    /// The first broken entry, when the chain does not verify.
    pub broken_at_seq: Option<u64>,
    pub problem: Option<String>,
    /// Approvals and denials whose WebAuthn evidence was checked offline.
    pub approvals_checked: u64,
    /// Each approval whose evidence does not verify, with the reason.
    pub approval_problems: Vec<String>,
}

/// Verify the whole chain on an open connection (streaming), then every approval's
/// WebAuthn evidence: the signature against the public key recorded (in the chain)
/// at enrolment, a challenge the chain shows was issued to that person for that
/// request, the RP id and the user-verified flag. The `approvals` table must match
/// the evidence recorded in the chain.
pub fn verify_chain(conn: &rusqlite::Connection) -> Result<ChainStatus, AppError> {
    let mut v = ChainVerifier::default();
    let mut broken: Option<ChainBreak> = None;
    let mut ev = EvidenceIndex::default();
    audit::for_each(conn, |e| match v.push(&e) {
        Ok(()) => {
            ev.observe(&e);
            true
        }
        Err(b) => {
            broken = Some(b);
            false
        }
    })?;
    let (approvals_checked, approval_problems) = ev.check(conn)?;
    Ok(ChainStatus {
        ok: broken.is_none() && approval_problems.is_empty(),
        entries: v.size(),
        head: hex::encode(v.head()),
        broken_at_seq: broken.as_ref().map(ChainBreak::seq),
        problem: broken.map(|b| b.to_string()),
        approvals_checked,
        approval_problems,
    })
}

#[derive(Default)]
struct EvidenceIndex {
    /// credential id → public key, from `custodian.enrolled` / `credential.added`.
    keys: HashMap<String, PublicKeyRecord>,
    /// (checkout, actor) → challenges issued, with the RP id.
    issued: HashMap<(String, String), Vec<(String, String)>>,
    /// (seq, checkout, actor, evidence) from `checkout.*_recorded`.
    recorded: Vec<(u64, String, String, AssertionEvidence)>,
}

impl EvidenceIndex {
    fn observe(&mut self, e: &AuditEntry) {
        let Ok(d) = serde_json::from_str::<serde_json::Value>(&e.details) else {
            return;
        };
        match e.action.as_str() {
            "custodian.enrolled" | "credential.added" => {
                if let (Some(id), Ok(pk)) = (
                    d["credential_id"].as_str(),
                    serde_json::from_value::<PublicKeyRecord>(d["public_key"].clone()),
                ) {
                    self.keys.insert(id.to_owned(), pk);
                }
            }
            "approval.challenge_issued" => {
                if let (Some(c), Some(ch), Some(rp)) = (
                    d["checkout"].as_str(),
                    d["challenge"].as_str(),
                    d["rp_id"].as_str(),
                ) {
                    self.issued
                        .entry((c.to_owned(), e.actor.clone()))
                        .or_default()
                        .push((ch.to_owned(), rp.to_owned()));
                }
            }
            "checkout.approval_recorded" | "checkout.denial_recorded" => {
                if let (Some(c), Ok(evidence)) = (
                    d["checkout"].as_str(),
                    serde_json::from_value::<AssertionEvidence>(d["evidence"].clone()),
                ) {
                    self.recorded
                        .push((e.seq, c.to_owned(), e.actor.clone(), evidence));
                }
            }
            _ => {}
        }
    }

    fn verify_one(
        &self,
        checkout: &str,
        actor: &str,
        ev: &AssertionEvidence,
    ) -> Result<(), String> {
        let pk = self
            .keys
            .get(&ev.credential_id)
            .ok_or("its credential was never enrolled in this log")?;
        let rp_id = self
            .issued
            .get(&(checkout.to_owned(), actor.to_owned()))
            .and_then(|v| v.iter().find(|(ch, _)| *ch == ev.challenge))
            .map(|(_, rp)| rp.as_str())
            .ok_or("its challenge was not issued to this person for this request")?;
        evidence::verify(pk, ev, rp_id).map_err(|e| e.to_string())
    }

    fn check(&self, conn: &rusqlite::Connection) -> Result<(u64, Vec<String>), AppError> {
        let mut problems = Vec::new();
        for (seq, checkout, actor, ev) in &self.recorded {
            if let Err(why) = self.verify_one(checkout, actor, ev) {
                problems.push(format!(
                    "approval evidence at seq {seq} (checkout {checkout}): {why}"
                ));
            }
        }
        for row in checkouts::all_approvals(conn)? {
            let actor = format!("custodian:{}", row.custodian_id);
            let ev = AssertionEvidence {
                credential_id: row.credential_id.clone(),
                challenge: row.challenge.clone(),
                client_data_json: row.client_data_json.clone(),
                authenticator_data: row.authenticator_data.clone(),
                signature: row.signature.clone(),
            };
            let in_log = self
                .recorded
                .iter()
                .any(|(_, c, a, e)| *c == row.checkout_id && *a == actor && *e == ev);
            if !in_log {
                problems.push(format!("approval {} (checkout {}): its stored evidence differs from the evidence in the audit log", row.id, row.checkout_id));
            } else if let Err(why) = self.verify_one(&row.checkout_id, &actor, &ev) {
                problems.push(format!(
                    "approval {} (checkout {}): {why}",
                    row.id, row.checkout_id
                ));
            }
        }
        Ok((self.recorded.len() as u64, problems))
    }
}

impl App {
    pub async fn audit_page(&self, filter: AuditFilter, limit: u32) -> Result<AuditPage, AppError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.db
            .call(move |conn| {
                let entries = audit::list(conn, &filter, limit)?;
                let next_after_seq = (entries.len() as u32 == limit)
                    .then(|| entries.last().map(|e| e.seq))
                    .flatten();
                Ok::<_, AppError>(AuditPage {
                    entries,
                    next_after_seq,
                })
            })
            .await
    }

    pub async fn audit_verify(&self) -> Result<ChainStatus, AppError> {
        self.db.call(|conn| verify_chain(conn)).await
    }
}
