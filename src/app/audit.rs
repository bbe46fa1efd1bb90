//! Reading and verifying the audit log.
use serde::Serialize;

use super::App;
use crate::{
    domain::audit::{AuditEntry, ChainBreak, ChainVerifier},
    error::AppError,
    store::audit::{self, AuditFilter},
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
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last verified entry.
    pub head: String,
    /// The first broken entry, when not ok.
    pub broken_at_seq: Option<u64>,
    pub problem: Option<String>,
}

/// Verify the whole chain on an open connection, streaming.
pub fn verify_chain(conn: &rusqlite::Connection) -> Result<ChainStatus, AppError> {
    let mut v = ChainVerifier::default();
    let mut broken: Option<ChainBreak> = None;
    audit::for_each(conn, |e| match v.push(&e) {
        Ok(()) => true,
        Err(b) => {
            broken = Some(b);
            false
        }
    })?;
    Ok(ChainStatus {
        ok: broken.is_none(),
        entries: v.size(),
        head: hex::encode(v.head()),
        broken_at_seq: broken.as_ref().map(ChainBreak::seq),
        problem: broken.map(|b| b.to_string()),
    })
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
