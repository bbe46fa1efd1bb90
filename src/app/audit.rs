//! Reading and verifying the audit log.
use std::collections::{HashMap, HashSet};

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
    /// WebAuthn assertions (approvals, denials, releases) checked offline.
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
    let (approvals_checked, approval_problems) = ev.finish(conn)?;
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

/// A credential's public key and whose it is, as the log recorded at enrolment.
struct EnrolledKey {
    owner: String,
    key: PublicKeyRecord,
}

/// A challenge the log shows was issued to an actor for a checkout.
struct Issued {
    purpose: &'static str,
    challenge: String,
    rp_id: String,
    origin: Option<String>,
}

/// What the log says about one checkout, replayed.
#[derive(Default)]
struct Track {
    requester: String,
    required: u32,
    /// Actors (never the requester) whose approval evidence verified.
    approvers: HashSet<String>,
    approved: bool,
}

struct Recorded {
    checkout: String,
    actor: String,
    decision: String,
    evidence: AssertionEvidence,
}

/// Replays the log in order and checks every WebAuthn assertion it records, and that
/// the checkout state machine only moved when the evidence allowed it.
#[derive(Default)]
struct EvidenceIndex {
    keys: HashMap<String, EnrolledKey>,
    issued: HashMap<(String, String), Vec<Issued>>,
    tracks: HashMap<String, Track>,
    recorded: Vec<Recorded>,
    checked: u64,
    problems: Vec<String>,
}

fn str_of(d: &serde_json::Value, k: &str) -> String {
    d[k].as_str().unwrap_or_default().to_owned()
}

impl EvidenceIndex {
    fn observe(&mut self, e: &AuditEntry) {
        let d: serde_json::Value = serde_json::from_str(&e.details).unwrap_or_default();
        let checkout = str_of(&d, "checkout");
        match e.action.as_str() {
            "custodian.enrolled" | "credential.added" => {
                if let Ok(key) = serde_json::from_value::<PublicKeyRecord>(d["public_key"].clone()) {
                    // The first enrolment of an id wins; the owner is the entry's subject.
                    self.keys
                        .entry(str_of(&d, "credential_id"))
                        .or_insert(EnrolledKey { owner: e.subject.clone(), key });
                }
            }
            "checkout.requested" => {
                let required = d["approvals_required"].as_u64().unwrap_or(u64::MAX).min(u64::from(u32::MAX)) as u32;
                self.tracks.insert(checkout, Track { requester: e.actor.clone(), required, ..Track::default() });
            }
            "approval.challenge_issued" | "release.challenge_issued" => {
                let purpose = if e.action.starts_with("approval") { "approve" } else { "release" };
                self.issued.entry((checkout, e.actor.clone())).or_default().push(Issued {
                    purpose,
                    challenge: str_of(&d, "challenge"),
                    rp_id: str_of(&d, "rp_id"),
                    origin: d["origin"].as_str().map(str::to_owned),
                });
            }
            "checkout.approval_recorded" | "checkout.denial_recorded" => {
                let decision = if e.action == "checkout.approval_recorded" { "approve" } else { "deny" };
                let Ok(evidence) = serde_json::from_value::<AssertionEvidence>(d["evidence"].clone()) else {
                    self.problems
                        .push(format!("seq {}: a decision on checkout {checkout} carries no readable evidence", e.seq));
                    return;
                };
                self.checked += 1;
                match self.verify_one(&checkout, &e.actor, "approve", &evidence) {
                    Ok(()) => {
                        let track = self.tracks.entry(checkout.clone()).or_default();
                        if decision == "approve" && e.actor != track.requester {
                            track.approvers.insert(e.actor.clone());
                        }
                        if e.actor == track.requester {
                            self.problems
                                .push(format!("seq {}: the requester decided on their own checkout {checkout}", e.seq));
                        }
                    }
                    Err(why) => {
                        self.problems.push(format!("approval evidence at seq {} (checkout {checkout}): {why}", e.seq))
                    }
                }
                self.recorded.push(Recorded { checkout, actor: e.actor.clone(), decision: decision.into(), evidence });
            }
            "checkout.approved" => {
                let track = self.tracks.entry(checkout.clone()).or_default();
                if (track.approvers.len() as u64) < u64::from(track.required) || track.required == 0 {
                    self.problems.push(format!(
                        "seq {}: checkout {checkout} was approved with {} verified approval(s) from people other than the requester; {} required",
                        e.seq,
                        track.approvers.len(),
                        track.required
                    ));
                }
                track.approved = true;
            }
            "checkout.released" if !self.tracks.get(&checkout).is_some_and(|t| t.approved) => {
                self.problems.push(format!("seq {}: checkout {checkout} was released without being approved", e.seq));
            }
            "checkout.revealed" => {
                let requester = self.tracks.get(&checkout).map(|t| t.requester.clone()).unwrap_or_default();
                if e.actor != requester || !self.tracks.get(&checkout).is_some_and(|t| t.approved) {
                    self.problems.push(format!(
                        "seq {}: a reveal on checkout {checkout} by someone other than its approved requester",
                        e.seq
                    ));
                }
                match serde_json::from_value::<AssertionEvidence>(d["evidence"].clone()) {
                    Ok(ev) => {
                        self.checked += 1;
                        if let Err(why) = self.verify_one(&checkout, &e.actor, "release", &ev) {
                            self.problems
                                .push(format!("release evidence at seq {} (checkout {checkout}): {why}", e.seq));
                        }
                    }
                    Err(_) => self
                        .problems
                        .push(format!("seq {}: a reveal on checkout {checkout} carries no readable evidence", e.seq)),
                }
            }
            _ => {}
        }
    }

    fn verify_one(&self, checkout: &str, actor: &str, purpose: &str, ev: &AssertionEvidence) -> Result<(), String> {
        let enrolled = self.keys.get(&ev.credential_id).ok_or("its credential was not enrolled earlier in this log")?;
        if enrolled.owner != actor {
            return Err(format!("it is signed with a credential of {}, not of {actor}", enrolled.owner));
        }
        let issued = self
            .issued
            .get(&(checkout.to_owned(), actor.to_owned()))
            .and_then(|v| v.iter().find(|i| i.purpose == purpose && i.challenge == ev.challenge))
            .ok_or("its challenge was not issued to this person for this request")?;
        evidence::verify(&enrolled.key, ev, &issued.rp_id, issued.origin.as_deref()).map_err(|e| e.to_string())
    }

    /// After the replay: the `approvals` table must hold exactly what the log recorded.
    fn finish(mut self, conn: &rusqlite::Connection) -> Result<(u64, Vec<String>), AppError> {
        for row in checkouts::all_approvals(conn)? {
            let actor = format!("custodian:{}", row.custodian_id);
            let ev = AssertionEvidence {
                credential_id: row.credential_id.clone(),
                challenge: row.challenge.clone(),
                client_data_json: row.client_data_json.clone(),
                authenticator_data: row.authenticator_data.clone(),
                signature: row.signature.clone(),
            };
            let in_log = self.recorded.iter().any(|r| {
                r.checkout == row.checkout_id && r.actor == actor && r.decision == row.decision && r.evidence == ev
            });
            if !in_log {
                self.problems.push(format!(
                    "approval {} (checkout {}): the stored decision or evidence differs from the evidence in the audit log",
                    row.id, row.checkout_id
                ));
            }
        }
        Ok((self.checked, self.problems))
    }
}

impl App {
    pub async fn audit_page(&self, filter: AuditFilter, limit: u32) -> Result<AuditPage, AppError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.db
            .call(move |conn| {
                let entries = audit::list(conn, &filter, limit)?;
                let next_after_seq = (entries.len() as u32 == limit).then(|| entries.last().map(|e| e.seq)).flatten();
                Ok::<_, AppError>(AuditPage { entries, next_after_seq })
            })
            .await
    }

    /// Every entry as JSON lines, streamed from a separate read-only connection (as
    /// `breakglass audit export` does), so a large export never holds up the writer.
    pub async fn audit_export_jsonl(&self) -> Result<String, AppError> {
        let path = self.db.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = crate::store::open_read_only(&path)?;
            let mut out = String::new();
            let mut failed = None;
            audit::for_each(&conn, |e| match serde_json::to_string(&e) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                    true
                }
                Err(err) => {
                    failed = Some(AppError::Internal(err.to_string()));
                    false
                }
            })?;
            failed.map_or(Ok(out), Err)
        })
        .await
        .map_err(|_| AppError::Internal("export worker stopped".into()))?
    }

    /// Verify on a separate read-only connection: a long verification never holds
    /// up approvals or releases (WAL readers do not block the writer).
    pub async fn audit_verify(&self) -> Result<ChainStatus, AppError> {
        let path = self.db.path().to_owned();
        tokio::task::spawn_blocking(move || verify_chain(&crate::store::open_read_only(&path)?))
            .await
            .map_err(|_| AppError::Internal("verification worker stopped".into()))?
    }
}

/// Prove that the database still contains the log a checkpoint commits to: the note's
/// signature verifies (by `verifier_key`, or by the log key recorded in the database
/// when none is given — the note names the key, so a swapped key does not match), and
/// the entry at the checkpoint's size has the checkpoint's head.
pub fn verify_checkpoint(
    conn: &rusqlite::Connection,
    note: &str,
    verifier_key: Option<&str>,
) -> Result<String, String> {
    use crate::crypto::checkpoint;
    let (name, public) = match verifier_key {
        Some(v) => checkpoint::parse_verifier_key(v).map_err(|e| e.to_string())?,
        None => {
            let row = crate::store::outbox::log_key(conn)
                .map_err(|e| e.to_string())?
                .ok_or("this database has no log key")?;
            let public: [u8; 32] =
                row.public_key.as_slice().try_into().map_err(|_| "the stored log key is malformed")?;
            (row.key_name, public)
        }
    };
    let cp = checkpoint::verify(note, &name, &public).map_err(|e| format!("checkpoint rejected: {e}"))?;
    let stored = crate::store::outbox::audit_hash_at(conn, cp.size).map_err(|e| e.to_string())?;
    match stored {
        None => Err(format!(
            "the database has fewer than the {} entries this checkpoint commits to: the log was truncated",
            cp.size
        )),
        Some(h) if h != hex::encode(cp.head) => Err(format!(
            "entry {} does not have the checkpoint's head: the log was rewritten after this checkpoint was signed",
            cp.size
        )),
        Some(_) => Ok(format!("checkpoint ok: the log contains the {} entries signed by {name}", cp.size)),
    }
}

/// Accept a bare signed note, a checkpoint JSON (`{"note": …}`) or a whole
/// announcement (`{"checkpoint": {"note": …}}`), as an auditor might have saved it.
pub fn extract_note(text: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else { return text.to_owned() };
    // What SQS, HTTP and e-mail-json subscribers receive: the SNS envelope around it.
    if let Some(inner) = v["Message"].as_str().and_then(|m| serde_json::from_str(m).ok()) {
        v = inner;
    }
    v["checkpoint"]["note"].as_str().or_else(|| v["note"].as_str()).unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::extract_note;

    #[test]
    fn a_note_is_found_in_a_bare_note_a_checkpoint_an_announcement_and_an_sns_envelope() {
        let note = "o\n1\nAAAA\n\n\u{2014} o sig\n";
        let message = serde_json::json!({"event": "x", "checkpoint": {"note": note}});
        let envelope = serde_json::json!({"Type": "Notification", "Message": message.to_string()});
        assert_eq!(extract_note(note), note);
        assert_eq!(extract_note(&serde_json::json!({"note": note}).to_string()), note);
        assert_eq!(extract_note(&message.to_string()), note);
        assert_eq!(extract_note(&envelope.to_string()), note);
    }
}
