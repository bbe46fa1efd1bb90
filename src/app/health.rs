//! Readiness: what `/readyz` reports, part by part. The database must take a real
//! write, the vault must be unsealed and the scheduler must be ticking; the outbox is
//! reported (backlog, oldest age, failures) but never makes the service unready:
//! a release must work while SNS is down.
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{App, rfc3339};
use crate::{error::AppError, store};

/// The scheduler's pulse, written by the scheduler task, read by `/readyz`. Times come
/// from the app's `Clock`.
#[derive(Debug)]
pub struct SchedulerHeartbeat {
    every_seconds: i64,
    inner: Mutex<Beat>,
}

#[derive(Debug, Clone, Default)]
struct Beat {
    started_at: Option<i64>,
    last_tick_at: Option<i64>,
    last_error: Option<&'static str>,
}

impl SchedulerHeartbeat {
    pub fn new(every: std::time::Duration) -> Arc<Self> {
        let every_seconds = i64::try_from(every.as_secs()).unwrap_or(i64::MAX).max(1);
        Arc::new(Self { every_seconds, inner: Mutex::new(Beat::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Beat> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler task started at `now`.
    pub fn started(&self, now: i64) {
        self.lock().started_at = Some(now);
    }

    /// One tick finished at `now`, with its error code if it failed (the cause is
    /// logged by the scheduler; `/readyz` is public and shows only the code).
    pub fn ticked(&self, now: i64, error: Option<&'static str>) {
        let mut b = self.lock();
        b.last_tick_at = Some(now);
        b.last_error = error;
    }

    pub fn every_seconds(&self) -> i64 {
        self.every_seconds
    }
}

/// One part's verdict.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartStatus {
    Ok,
    /// Working but needs attention (e.g. undelivered announcements); still ready.
    Degraded,
    /// Broken: the service is not ready.
    Failing,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabasePart {
    pub status: PartStatus,
    pub writable: bool,
    /// `full`, `read_only`, `busy` or `error` (the cause is in the log, not here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VaultPart {
    pub status: PartStatus,
    pub sealed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxPart {
    pub status: PartStatus,
    pub sink: &'static str,
    pub undelivered: i64,
    pub oldest_undelivered_at: Option<String>,
    pub oldest_undelivered_age_seconds: Option<i64>,
    pub failed: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerPart {
    pub status: PartStatus,
    pub running: bool,
    pub every_seconds: i64,
    pub last_tick_at: Option<String>,
    pub last_tick_age_seconds: Option<i64>,
    /// The stable code of the last tick's error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<&'static str>,
}

/// The root-activity feed (only when a queue is configured). Never makes the service
/// unready: a release must work while AWS is unreachable.
#[derive(Debug, Clone, Serialize)]
pub struct RootActivityPart {
    pub status: PartStatus,
    pub last_poll_ok_at: Option<String>,
    pub last_poll_ok_age_seconds: Option<i64>,
    pub consecutive_failures: u32,
    /// Messages waiting in the queue (approximate, read about once a minute).
    pub backlog: Option<i64>,
    pub in_flight: Option<i64>,
    pub stored: u64,
    pub duplicates: u64,
    pub malformed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Names of the parts that are failing.
    pub failing: Vec<&'static str>,
    pub database: DatabasePart,
    pub vault: VaultPart,
    pub outbox: Option<OutboxPart>,
    pub scheduler: SchedulerPart,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_activity: Option<RootActivityPart>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

/// A tick is late after this many periods without one.
const LATE_AFTER_PERIODS: i64 = 3;

fn database_problem(e: &store::StoreError) -> &'static str {
    use rusqlite::ErrorCode;
    match e {
        store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => match f.code {
            ErrorCode::DiskFull => "full",
            ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied => "read_only",
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => "busy",
            _ => "error",
        },
        _ => "error",
    }
}

impl App {
    /// Every part, checked now. `scheduler` is the running scheduler's heartbeat
    /// (`None` when this process runs none: reported failing).
    #[tracing::instrument(skip_all)]
    pub async fn readiness(&self, scheduler: Option<&SchedulerHeartbeat>) -> Result<Readiness, AppError> {
        let now = self.now().unix_timestamp();
        let mut failing = Vec::new();

        let probe = self.db.call(|conn| Ok::<_, store::StoreError>(store::probe_writable(conn))).await?;
        let database = match probe {
            Ok(()) => DatabasePart { status: PartStatus::Ok, writable: true, problem: None },
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "readiness: the database does not take writes");
                failing.push("database");
                DatabasePart { status: PartStatus::Failing, writable: false, problem: Some(database_problem(&e)) }
            }
        };

        let sealed = self.vault.is_none();
        if sealed {
            failing.push("vault");
        }
        let vault = VaultPart { status: if sealed { PartStatus::Failing } else { PartStatus::Ok }, sealed };

        // A read: it works even when writes fail, and then says what is waiting.
        let outbox = match self.outbox_status().await {
            Ok(s) => {
                let age = s.oldest_undelivered_unix.map(|t| (now - t).max(0));
                let status = if s.failed > 0 || (s.undelivered > 0 && s.sink != "no_sink") {
                    PartStatus::Degraded
                } else {
                    PartStatus::Ok
                };
                Some(OutboxPart {
                    status,
                    sink: s.sink,
                    undelivered: s.undelivered,
                    oldest_undelivered_at: s.oldest_undelivered_at,
                    oldest_undelivered_age_seconds: age,
                    failed: s.failed,
                })
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "readiness: cannot read the outbox");
                if !failing.contains(&"database") {
                    failing.push("database");
                }
                None
            }
        };

        let scheduler = match scheduler {
            None => {
                failing.push("scheduler");
                SchedulerPart {
                    status: PartStatus::Failing,
                    running: false,
                    every_seconds: 0,
                    last_tick_at: None,
                    last_tick_age_seconds: None,
                    last_error: None,
                }
            }
            Some(h) => {
                let beat = h.lock().clone();
                let every = h.every_seconds();
                // Before the first tick, count from the start.
                let since = beat.last_tick_at.or(beat.started_at);
                let age = since.map(|t| (now - t).max(0));
                let late = age.is_none_or(|a| a > every.saturating_mul(LATE_AFTER_PERIODS));
                let status = if late {
                    failing.push("scheduler");
                    PartStatus::Failing
                } else if beat.last_error.is_some() {
                    PartStatus::Degraded
                } else {
                    PartStatus::Ok
                };
                SchedulerPart {
                    status,
                    running: beat.started_at.is_some(),
                    every_seconds: every,
                    last_tick_at: beat.last_tick_at.map(rfc3339),
                    last_tick_age_seconds: beat.last_tick_at.map(|t| (now - t).max(0)),
                    last_error: beat.last_error,
                }
            }
        };

        let root_activity = match self.root_feed_health() {
            None => None,
            Some(s) => {
                // `/readyz` is public: it says whether the feed works, never what it found.
                let status = if s.consecutive_failures > 0 || s.malformed > 0 || !s.running {
                    PartStatus::Degraded
                } else {
                    PartStatus::Ok
                };
                Some(RootActivityPart {
                    status,
                    last_poll_ok_at: s.last_poll_ok_at.map(rfc3339),
                    last_poll_ok_age_seconds: s.last_poll_ok_at.map(|t| (now - t).max(0)),
                    consecutive_failures: s.consecutive_failures,
                    backlog: s.backlog,
                    in_flight: s.in_flight,
                    stored: s.stored,
                    duplicates: s.duplicates,
                    malformed: s.malformed,
                })
            }
        };

        Ok(Readiness {
            status: if failing.is_empty() { "ready" } else { "not_ready" },
            failing,
            database,
            vault,
            outbox,
            scheduler,
            root_activity,
        })
    }
}
