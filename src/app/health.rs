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

impl App {
    /// The gauges of `/metrics`, read now (times from the `Clock`).
    #[tracing::instrument(skip_all)]
    pub async fn metrics_snapshot(&self) -> Result<crate::metrics::Snapshot, AppError> {
        let now = self.now().unix_timestamp();
        let max = i64::from(self.config.sns.max_attempts);
        let mut s = self
            .db
            .call(move |conn| {
                let (undelivered, oldest, failed) = store::outbox::backlog(conn, max)?;
                let (drills_open, drills_overdue) = store::drills::count_open(conn)?;
                let (entries, _) = store::outbox::audit_head(conn)?;
                Ok::<_, AppError>(crate::metrics::Snapshot {
                    outbox_undelivered: undelivered,
                    outbox_failed: failed,
                    outbox_oldest_undelivered_age_seconds: oldest.map_or(0, |t| (now - t).max(0)),
                    checkouts_by_state: store::checkouts::count_by_state(conn)?,
                    drills_open,
                    drills_overdue,
                    audit_entries: i64::try_from(entries).unwrap_or(i64::MAX),
                    root_activity_unexplained_open: i64::try_from(store::root_activity::open_unexplained(conn)?.len())
                        .unwrap_or(i64::MAX),
                    ..Default::default()
                })
            })
            .await?;
        s.vault_unsealed = self.vault.is_some();
        s.litestream = self.config.replication.litestream;
        let dir = self.config.backup.dir.clone();
        s.backup_configured = !dir.as_os_str().is_empty();
        let newest = if s.backup_configured {
            tokio::task::spawn_blocking(move || super::backup::scheduled_backups(&dir).first().map(|(at, _)| *at))
                .await
                .map_err(|_| AppError::Internal("metrics worker stopped".into()))?
        } else {
            None
        };
        s.backup_last_success_timestamp = newest.unwrap_or(0);
        s.backup_last_success_age_seconds = newest.map_or(-1, |at| (now - at).max(0));
        s.backup_last_failure_timestamp = self.backup_failure.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(0);
        Ok(s)
    }
}

/// The shortest bearer token `/metrics` accepts.
pub const METRICS_TOKEN_MIN_LEN: usize = 32;

impl App {
    /// Whether `presented` (the bearer token a scraper sent) opens `/metrics`. The token
    /// is read from `metrics.token_file` at each scrape (so it can be rotated without a
    /// restart) and compared by SHA-256 digest in constant time.
    pub fn check_metrics_token(&self, presented: Option<&str>) -> Result<(), AppError> {
        use std::os::unix::fs::PermissionsExt;
        use subtle_eq::eq;
        let path = &self.config.metrics.token_file;
        if path.as_os_str().is_empty() {
            return Err(AppError::not_found("metrics_disabled", "/metrics is off: set metrics.token_file."));
        }
        let unreadable = |why: String| {
            tracing::error!(path = %path.display(), "metrics token file: {why}");
            AppError::unavailable(
                "metrics_token_unreadable",
                "The metrics token file cannot be used; see the service log.",
            )
        };
        let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(unreadable("it is readable by other users: chmod 600".into()));
        }
        let token = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?);
        let token = token.trim();
        if token.len() < METRICS_TOKEN_MIN_LEN {
            return Err(unreadable(format!("the token is shorter than {METRICS_TOKEN_MIN_LEN} characters")));
        }
        match presented {
            Some(p) if eq(p.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(AppError::unauthenticated(
                "metrics_unauthorized",
                "Send the metrics token: Authorization: Bearer <token from metrics.token_file>.",
            )),
        }
    }
}

mod subtle_eq {
    use sha2::{Digest, Sha256};

    /// Equal without an early exit on the first differing byte (digests of both sides).
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        let (da, db) = (Sha256::digest(a), Sha256::digest(b));
        da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
