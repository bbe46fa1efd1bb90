//! Use cases. Each one is a single SQLite transaction that makes the change and
//! appends its audit entry; nothing else writes audit rows.
pub mod accounts;
pub mod announce;
pub mod audit;
pub mod audit_chain;
pub mod audit_export;
pub mod audit_view;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub(crate) mod ceremony;
pub mod checkouts;
pub mod custodians;
pub mod drills;
pub mod health;
pub mod invites;
pub mod posture;
pub mod quorum;
pub mod recovery_kit;
pub mod root_activity;
pub mod root_tasks;

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use webauthn_rs::prelude::{Webauthn, WebauthnBuilder};

use crate::{
    clock::Clock,
    config::Config,
    crypto::{UnsealedVault, random_bytes},
    error::AppError,
    store::{Db, people::CustodianRow},
};

pub use crate::error::AppError as Error;

/// Who did something, as written in the audit log's `actor` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in person: `custodian:<uuid>`.
    Custodian(String),
    /// An operator on the host, through the CLI: `host:cli`.
    Host,
    /// The service itself (first run, housekeeping): `system`.
    System,
}

impl Actor {
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Custodian(id) => format!("custodian:{id}"),
            Actor::Host => "host:cli".into(),
            Actor::System => "system".into(),
        }
    }
}

/// A signed-in person, as proved by a live session.
#[derive(Debug, Clone)]
pub struct Principal {
    pub custodian: CustodianRow,
    pub credential_id: String,
    /// When this person last completed a WebAuthn sign-in (session creation).
    pub authenticated_at: i64,
    pub(crate) token_hash: Vec<u8>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor::Custodian(self.custodian.id.clone())
    }
}

/// The application: storage, time, WebAuthn and the open vault.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    /// `config.origin`, parsed once: cookies, HSTS and the CSRF check derive from it.
    pub origin: Arc<crate::config::Origin>,
    pub(crate) webauthn: Arc<Webauthn>,
    /// The unsealed vault: `Some` in the server, `None` for host CLI commands, which
    /// only ever need public keys.
    pub(crate) vault: Option<Arc<UnsealedVault>>,
    /// Keys the decoy answers for sign-ins with an unknown e-mail.
    pub(crate) decoy_key: Arc<[u8; 32]>,
    /// Failed sign-ins not yet written to the log (`record_sign_in_failures`).
    pub(crate) sign_in_failures: Arc<auth::SignInFailures>,
    /// Where announcements go (`None`: they wait in the outbox).
    pub(crate) sink: Option<Arc<dyn crate::notify::Sink>>,
    /// Signs audit checkpoints; present when the vault is unsealed.
    pub(crate) log_signer: Option<Arc<announce::LogSigner>>,
    /// When the last scheduled backup failed (retried an hour later); `None` after a success.
    pub(crate) backup_failure: Arc<std::sync::Mutex<Option<i64>>>,
    /// Request counters and latencies for `/metrics`.
    pub metrics: Arc<crate::metrics::HttpMetrics>,
    /// The root-activity queue and its poller's health (`None`: no feed configured).
    pub(crate) root_feed: Option<Arc<crate::aws::RootFeed>>,
    /// Reads root posture from AWS (`None`: posture checks are off).
    pub(crate) posture: Option<Arc<crate::aws::PostureReader>>,
    /// Opens `sts:AssumeRoot` sessions for `centralized_root` accounts (`None`: off).
    pub(crate) root_tasks: Option<Arc<crate::aws::RootTasks>>,
}

impl App {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
        vault: Option<UnsealedVault>,
    ) -> Result<Self, AppError> {
        let parsed = config.origin().map_err(AppError::Internal)?;
        let webauthn = WebauthnBuilder::new(parsed.host(), &parsed.url())
            .map_err(|e| AppError::Internal(format!("WebAuthn configuration: {e}")))?
            .rp_name(&config.rp_name)
            .timeout(std::time::Duration::from_secs(u64::from(config.security.ceremony_ttl_seconds)))
            .build()
            .map_err(|e| AppError::Internal(format!("WebAuthn configuration: {e}")))?;
        let decoy_key = db.with(|conn| bootstrap::instance_secret(conn, "decoy_key"))?;
        let log_signer = match &vault {
            Some(v) => {
                let name = format!("{}/breakglass/audit", parsed.host());
                let mut signer = db.with(|conn| announce::ensure_log_key(conn, v, &name, clock.now()))?;
                signer.high_water = Some(config.data_dir.join(audit::HIGH_WATER_FILE));
                Some(Arc::new(signer))
            }
            None => None,
        };
        Ok(Self {
            db,
            clock,
            config,
            origin: Arc::new(parsed),
            webauthn: Arc::new(webauthn),
            vault: vault.map(Arc::new),
            decoy_key: Arc::new(decoy_key),
            sign_in_failures: Arc::default(),
            sink: None,
            log_signer,
            backup_failure: Arc::default(),
            metrics: Arc::default(),
            root_feed: None,
            posture: None,
            root_tasks: None,
        })
    }

    /// Poll this root-activity queue while serving (`aws::feed::run`).
    pub fn with_root_feed(mut self, feed: Arc<crate::aws::RootFeed>) -> Self {
        self.root_feed = Some(feed);
        self
    }

    pub fn root_feed(&self) -> Option<Arc<crate::aws::RootFeed>> {
        self.root_feed.clone()
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Drop expired ceremonies and sessions. Run periodically by `serve`.
    #[tracing::instrument(skip_all)]
    pub async fn housekeeping(&self) -> Result<usize, AppError> {
        let now = self.now().unix_timestamp();
        let idle = i64::from(self.config.security.session_idle_minutes) * 60;
        let purged =
            self.db.transact(move |tx| Ok::<_, AppError>(crate::store::people::purge_expired(tx, now, idle)?)).await?;
        let failures = self.record_sign_in_failures().await?;
        let expired = self.expire_due().await?;
        self.truncate_wal_if_quorum().await?;
        let drills = self.run_drills().await?;
        Ok(purged + failures + expired + drills.opened + drills.became_overdue + drills.reminded_overdue)
    }
}

impl App {
    /// After a use case that may have deleted quorum material: scrub the WAL now
    /// rather than at the next tick. A failure is logged; the tick retries.
    pub(crate) async fn scrub_wal(&self) {
        if let Err(e) = self.truncate_wal_if_quorum().await {
            tracing::warn!(error = %crate::error::chain(&e), "could not truncate the WAL after deleting quorum material");
        }
    }

    /// Quorum mode: deleted shares and transit keys must not linger in the WAL file
    /// (old page images stay there until a checkpoint copies the pages back and the
    /// WAL is reset). With any quorum-mode account, each housekeeping tick checkpoints
    /// and truncates the WAL; `secure_delete` has already zeroed the pages.
    ///
    /// With `replication.litestream`, checkpoints are Litestream's: its long read
    /// transaction would make a TRUNCATE wait (blocking writers) and then give up, and
    /// its replica keeps the page images anyway for its retention (docs/reliability.md).
    /// A TRUNCATE that could not finish (a reader held the WAL) is an error naming that.
    #[tracing::instrument(skip_all)]
    pub async fn truncate_wal_if_quorum(&self) -> Result<(), AppError> {
        if self.config.replication.litestream {
            return Ok(());
        }
        let metrics = self.metrics.clone();
        self.db
            .call(move |conn| {
                if crate::store::accounts::any_in_quorum_custody(conn)? && !crate::store::truncate_wal(conn)? {
                    metrics.wal_truncate_incomplete();
                    return Err(AppError::unavailable(
                        "wal_not_truncated",
                        "the WAL could not be truncated after quorum material was deleted: another process holds a read transaction (Litestream? then set replication.litestream = true, docs/reliability.md).",
                    ));
                }
                Ok::<_, AppError>(())
            })
            .await
    }
}

/// A random bearer token (invite, session): 32 bytes, base64url.
pub(crate) fn new_token() -> Result<String, AppError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?.as_slice()))
}

/// Tokens are stored only as their SHA-256.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
