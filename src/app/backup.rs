//! Encrypted backups and restores (deploy/RUNBOOK.md section 8).
//!
//! A backup is a consistent snapshot of the whole database (`VACUUM INTO`) encrypted
//! with age to the configured backup recipients — an offline key the organisation
//! keeps — so names, e-mail addresses, policies and the log are protected as well as
//! the sealed secrets. `verify_backup` opens one with an identity and checks the file
//! and the audit chain. `restore` puts a backup (or a Litestream restore) in place on
//! a host, but refuses a log older than a checkpoint already published unless the
//! operator accepts the loss, which is recorded (`database.restored`) and announced.
use std::{
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{App, announce, audit::verify_log};
use crate::{
    app::bootstrap::{self, SealInput},
    config::Config,
    domain::event::{Event, Subject},
    error::AppError,
    store::{self, outbox},
};

/// Scheduled backups are named `breakglass-<UTC yyyymmddThhmmssZ>.db.age`.
pub const SCHEDULED_PREFIX: &str = "breakglass-";
pub const SCHEDULED_SUFFIX: &str = ".db.age";
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// What `backup --to` made.
#[derive(Debug, Clone, Serialize)]
pub struct BackupMade {
    pub path: PathBuf,
    /// Size of the encrypted file, and of the snapshot inside it.
    pub bytes: u64,
    pub plain_bytes: u64,
    /// The audit log in the snapshot.
    pub entries: u64,
    pub head: String,
    pub recipients: usize,
}

/// What `backup verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedBackup {
    pub entries: u64,
    pub head: String,
    pub approvals_checked: u64,
    pub checkpoints_checked: u64,
    /// The vault's public recipient (which vault this is).
    pub vault_recipient: Option<String>,
    pub schema_version: i64,
}

/// Removes a file (and SQLite's `-wal`/`-shm` beside it) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> AppError {
    move |e| AppError::unavailable("backup_io", format!("{what}: {e}"))
}

fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>, AppError> {
    if recipients.is_empty() {
        return Err(AppError::invalid(
            "backup_no_recipients",
            "No backup recipients: set backup.recipients (or BREAKGLASS_BACKUP_RECIPIENTS) to the age1… key the organisation keeps offline.",
        ));
    }
    recipients
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>().map_err(|_| {
                AppError::invalid("backup_bad_recipient", format!("{r:?} is not an age X25519 recipient (age1…)."))
            })
        })
        .collect()
}

/// Snapshot the database at `db_path` and write it to `dest`, age-encrypted to
/// `recipients`. The plaintext snapshot lives in `work_dir` (the data dir: already
/// private) only while it is encrypted; `dest` appears whole (written aside, flushed,
/// renamed) or not at all, mode 0600.
pub fn write_backup(
    db_path: &Path,
    work_dir: &Path,
    dest: &Path,
    recipients: &[String],
) -> Result<BackupMade, AppError> {
    let recipients = parse_recipients(recipients)?;
    if dest.exists() {
        return Err(AppError::conflict(
            "backup_exists",
            format!("{} already exists: choose another name; nothing was written.", dest.display()),
        ));
    }
    let plain = Scratch(work_dir.join(format!(".backup-{}.db", uuid::Uuid::new_v4().simple())));
    store::snapshot(db_path, &plain.0)?;
    let (entries, head) = {
        let conn = rusqlite::Connection::open_with_flags(&plain.0, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let (n, head) = outbox::audit_head(&conn)?;
        (n, head.unwrap_or_default())
    };
    let plain_bytes = std::fs::metadata(&plain.0).map_err(io_error(format!("reading {}", plain.0.display())))?.len();
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Scratch(PathBuf::from(partial));
    let _ = std::fs::remove_file(&partial.0);
    let out = store::create_private_file(&partial.0).map_err(io_error(format!("creating {}", partial.0.display())))?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| AppError::unexpected("setting up the backup encryption", e))?;
    let write = |out: std::fs::File| -> std::io::Result<std::fs::File> {
        let mut input = std::fs::File::open(&plain.0)?;
        let mut w = encryptor.wrap_output(std::io::BufWriter::new(out))?;
        std::io::copy(&mut input, &mut w)?;
        let file = w.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    };
    write(out).map_err(io_error(format!("writing {}", partial.0.display())))?;
    std::fs::rename(&partial.0, dest).map_err(io_error(format!("moving the backup into {}", dest.display())))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        store::sync_dir(dir).map_err(io_error(format!("flushing {}", dir.display())))?;
    }
    let bytes = std::fs::metadata(dest).map_err(io_error(format!("reading {}", dest.display())))?.len();
    Ok(BackupMade { path: dest.to_owned(), bytes, plain_bytes, entries, head, recipients: recipients.len() })
}

/// Read the identities (age key file) that open backups.
fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, AppError> {
    let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|e| {
        AppError::invalid(
            "backup_identity_unreadable",
            format!("cannot read the identity file {}: {e}", path.display()),
        )
    })?;
    let ids = file.into_identities().map_err(|e| {
        AppError::invalid("backup_identity_unreadable", format!("{} holds no usable age identity: {e}", path.display()))
    })?;
    if ids.is_empty() {
        return Err(AppError::invalid(
            "backup_identity_unreadable",
            format!("{} holds no age identity (AGE-SECRET-KEY-1…).", path.display()),
        ));
    }
    Ok(ids)
}

/// Put the SQLite file inside `source` at `out` (created 0600): decrypt an age backup
/// with `identity`, or copy a plain SQLite file (a `litestream restore` output). Every
/// failure says what is wrong with which file; `out` is removed on failure.
fn materialize(source: &Path, identity: Option<&Path>, out: &Path) -> Result<(), AppError> {
    let mut file = std::fs::File::open(source)
        .map_err(|e| AppError::invalid("backup_unreadable", format!("cannot open {}: {e}", source.display())))?;
    let mut head = [0u8; 22];
    let n = file.read(&mut head).map_err(io_error(format!("reading {}", source.display())))?;
    let head = &head[..n];
    let file = std::fs::File::open(source).map_err(io_error(format!("reading {}", source.display())))?;
    let result = if head.starts_with(AGE_MAGIC) {
        let Some(identity) = identity else {
            return Err(AppError::invalid(
                "backup_identity_needed",
                format!(
                    "{} is an encrypted backup: give the offline backup key with --identity FILE.",
                    source.display()
                ),
            ));
        };
        let ids = identities(identity)?;
        let decryptor = age::Decryptor::new(BufReader::new(file)).map_err(|e| {
            AppError::invalid(
                "backup_damaged",
                format!("{} is not a readable age file ({e}): it is damaged or truncated.", source.display()),
            )
        })?;
        let mut reader = decryptor.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => AppError::invalid(
                "backup_wrong_identity",
                format!(
                    "no identity in {} opens {}: the backup was encrypted to other recipients (check backup.recipients against `age-keygen -y {}`).",
                    identity.display(),
                    source.display(),
                    identity.display()
                ),
            ),
            other => AppError::invalid(
                "backup_damaged",
                format!("{} cannot be decrypted ({other}): it is damaged or truncated.", source.display()),
            ),
        })?;
        copy_private(&mut reader, out).map_err(|e| {
            AppError::invalid(
                "backup_damaged",
                format!(
                    "{} is damaged or truncated ({e}): its encrypted stream does not end where age says it must. Use another backup.",
                    source.display()
                ),
            )
        })
    } else if head.starts_with(SQLITE_MAGIC) {
        copy_private(&mut BufReader::new(file), out).map_err(io_error(format!("copying {}", source.display())))
    } else {
        Err(AppError::invalid(
            "backup_unrecognised",
            format!(
                "{} is neither an age-encrypted backup nor a SQLite database (a breakglass backup starts with \"age-encryption.org/v1\").",
                source.display()
            ),
        ))
    };
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn copy_private(reader: &mut dyn Read, out: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(out);
    let mut f = store::create_private_file(out)?;
    std::io::copy(reader, &mut f)?;
    f.flush()?;
    f.sync_all()
}

/// Open a materialized database and check it is a sound breakglass database whose
/// audit chain verifies. Returns the chain's size and head.
fn check_database(conn: &rusqlite::Connection, path: &Path, source: &Path) -> Result<VerifiedBackup, AppError> {
    if let Some(problem) = store::integrity_problem(conn).map_err(|e| {
        AppError::invalid("backup_damaged", format!("{} does not hold a readable database: {e}", source.display()))
    })? {
        return Err(AppError::invalid(
            "backup_damaged",
            format!("the database in {} is corrupt (SQLite integrity_check: {problem}).", source.display()),
        ));
    }
    store::migrate::check_not_newer(conn, path)?;
    if !store::has_table(conn, "audit_log")? || !store::has_table(conn, "vault")? {
        return Err(AppError::invalid(
            "backup_not_breakglass",
            format!("{} holds a SQLite database but not a breakglass vault.", source.display()),
        ));
    }
    let status = verify_log(conn, None)?;
    if !status.ok {
        let mut why: Vec<String> = status.problem.into_iter().collect();
        why.extend(status.approval_problems.into_iter().take(5));
        return Err(AppError::conflict(
            "backup_chain_broken",
            format!("the audit log in {} does not verify: {}", source.display(), why.join("; ")),
        ));
    }
    let vault_recipient = store::accounts::vault(conn).ok().flatten().map(|v| v.recipient);
    let schema_version = store::migrate::user_version(conn)?;
    Ok(VerifiedBackup {
        entries: status.entries,
        head: status.head,
        approvals_checked: status.approvals_checked,
        checkpoints_checked: status.checkpoints_checked,
        vault_recipient,
        schema_version,
    })
}

/// A private scratch directory for `backup verify` (which may run on an auditor's
/// machine with no data dir): under the system temp dir, mode 0700, removed after.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `breakglass backup verify FILE --identity KEY`: decrypt into a private scratch
/// directory, check the file and the whole audit chain, and delete the plaintext.
pub fn verify_backup(source: &Path, identity: Option<&Path>) -> Result<VerifiedBackup, AppError> {
    let dir = ScratchDir(std::env::temp_dir().join(format!("breakglass-verify-{}", uuid::Uuid::new_v4().simple())));
    store::create_private_dir(&dir.0)?;
    let plain = dir.0.join("backup.db");
    materialize(source, identity, &plain)?;
    let conn = rusqlite::Connection::open_with_flags(&plain, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check_database(&conn, &plain, source)
}

/// What `breakglass restore` is given.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// An encrypted backup, or a plain SQLite file (`litestream restore -o FILE`).
    pub from: PathBuf,
    pub identity: Option<PathBuf>,
    /// Saved checkpoints: a signed note, a checkpoint JSON, an announcement or its SNS envelope.
    pub checkpoints: Vec<PathBuf>,
    /// The log's verifier key, when the checkpoints should not be checked with the key
    /// recorded in the restored database itself.
    pub log_key: Option<String>,
    /// Restore even though the log is older than a published checkpoint (recorded).
    pub accept_loss: bool,
    /// Restore with no outside checkpoint to compare with (recorded).
    pub no_checkpoint: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub entries: u64,
    pub head: String,
    pub checkpoints: Vec<serde_json::Value>,
    pub lost_entries: Option<u64>,
    /// The audit entry that records the restore.
    pub recorded_seq: u64,
}

/// One outside checkpoint: `(source, size, head hex)`.
type Outside = (String, u64, String);

fn outside_checkpoints(
    conn: &rusqlite::Connection,
    request: &RestoreRequest,
    high_water: &Path,
) -> Result<Vec<Outside>, AppError> {
    use crate::crypto::checkpoint;
    let mut found = Vec::new();
    for path in &request.checkpoints {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::invalid("checkpoint_unreadable", format!("cannot read {}: {e}", path.display())))?;
        let note = super::audit::extract_note(&text);
        let (name, public) = match &request.log_key {
            Some(v) => checkpoint::parse_verifier_key(v)
                .map_err(|e| AppError::invalid("checkpoint_invalid", format!("--log-key: {e}")))?,
            None => {
                let row = outbox::log_key(conn)?.ok_or_else(|| {
                    AppError::invalid("checkpoint_invalid", "the restored database has no log key: give --log-key.")
                })?;
                let public: [u8; 32] = row.public_key.as_slice().try_into().map_err(|_| {
                    AppError::invalid(
                        "checkpoint_invalid",
                        "the restored database's log key is malformed: give --log-key.",
                    )
                })?;
                (row.key_name, public)
            }
        };
        let cp = checkpoint::verify(&note, &name, &public).map_err(|e| {
            AppError::invalid(
                "checkpoint_invalid",
                format!("{} is not a checkpoint signed by this log's key {name}: {e}", path.display()),
            )
        })?;
        found.push((path.display().to_string(), cp.size, hex::encode(cp.head)));
    }
    // On the same host, the mark the server keeps outside the database.
    if let Ok(text) = std::fs::read_to_string(high_water)
        && let Some((size, head)) = text.trim().split_once(' ')
        && let Ok(size) = size.parse::<u64>()
    {
        found.push((high_water.display().to_string(), size, head.to_owned()));
    }
    Ok(found)
}

/// `breakglass restore`: bring a backup or a Litestream restore back as this host's
/// database. Checks, in order: the target is empty, the file opens (identity) and is a
/// sound breakglass database, its audit chain verifies, the configured seal opens its
/// vault, and every outside checkpoint (`--checkpoint` files, the high-water file) is
/// contained in its log — a log *older* than a published checkpoint is refused unless
/// `accept_loss`, a log that *contradicts* one always. Then it records
/// `database.restored` in the restored log and moves the file into place atomically.
pub fn restore(
    config: &Config,
    request: &RestoreRequest,
    input: &mut dyn SealInput,
    now: OffsetDateTime,
) -> Result<Restored, AppError> {
    let db_path = config.db_path();
    for suffix in ["", "-wal"] {
        let mut p = db_path.clone().into_os_string();
        p.push(suffix);
        if PathBuf::from(&p).exists() {
            return Err(AppError::conflict(
                "restore_target_exists",
                format!(
                    "{} already exists: stop the service and move breakglass.db, -wal and -shm aside first (deploy/RUNBOOK.md section 8). Nothing was changed.",
                    PathBuf::from(p).display()
                ),
            ));
        }
    }
    store::create_private_dir(&config.data_dir)?;
    let staging = Scratch(config.data_dir.join("breakglass.db.restore"));
    drop(Scratch(staging.0.clone())); // leftovers of an interrupted restore
    materialize(&request.from, request.identity.as_deref(), &staging.0)?;
    let conn = rusqlite::Connection::open(&staging.0)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let found = check_database(&conn, &staging.0, &request.from)?;
    let high_water = config.data_dir.join(super::audit::HIGH_WATER_FILE);
    let outside = outside_checkpoints(&conn, request, &high_water)?;
    if outside.is_empty() && !request.no_checkpoint {
        return Err(AppError::conflict(
            "restore_unchecked",
            "No published checkpoint to compare this log with: give --checkpoint FILE (a saved announcement, or a checkpoint from GET /api/v1/audit/checkpoint), or --no-checkpoint to restore unchecked (recorded and announced as critical). Nothing was changed.",
        ));
    }
    let mut compared = Vec::new();
    let mut lost: u64 = 0;
    for (source, size, head) in &outside {
        let verdict = if *size > found.entries {
            lost = lost.max(size - found.entries);
            "lost"
        } else if outbox::audit_hash_at(&conn, *size)?.as_deref() == Some(head.as_str()) {
            "contained"
        } else {
            return Err(AppError::conflict(
                "restore_log_contradicts_checkpoint",
                format!(
                    "entry {size} of the restored log does not have the head {head} of the checkpoint in {source}: this log was rewritten, or belongs to another deployment. It cannot be restored; nothing was changed."
                ),
            ));
        };
        compared.push(json!({"source": source, "size": size, "head": head, "verdict": verdict}));
    }
    if lost > 0 && !request.accept_loss {
        let newest = outside.iter().map(|(_, s, _)| *s).max().unwrap_or_default();
        return Err(AppError::conflict(
            "restore_older_than_checkpoint",
            format!(
                "this database is older than a checkpoint already published: its log has {} entries, but a checkpoint of {newest} entries was signed and announced, so {lost} audited events that subscribers have seen would be lost. Find a newer backup or replica; to restore it anyway, run again with --accept-loss (recorded in the audit log and announced as critical). Nothing was changed.",
                found.entries
            ),
        ));
    }
    drop(conn);
    // The seal must open this vault, or the service could not start from it.
    bootstrap::unseal_vault(&staging.0, config, input)?;

    let db = store::Db::open(&staging.0)?;
    let event = Event::DatabaseRestored {
        source: request.from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        entries: found.entries,
        head: found.head.clone(),
        checkpoints: compared.clone(),
        lost_entries: (lost > 0).then_some(lost),
        unchecked: outside.is_empty(),
    };
    let seq = db.with(|conn| {
        let seq = store::transact(conn, |tx| {
            Ok::<_, AppError>(announce::record(tx, now, &super::Actor::Host.audit_name(), &Subject::Vault, &event)?.seq)
        })?;
        store::truncate_wal(conn)?;
        Ok::<_, AppError>(seq)
    })?;
    drop(db);
    if lost > 0 && high_water.exists() {
        // The mark would stop every signature: the loss is now accepted and recorded.
        let aside =
            config.data_dir.join(format!("{}.before-restore-{}", super::audit::HIGH_WATER_FILE, now.unix_timestamp()));
        std::fs::rename(&high_water, &aside).map_err(io_error(format!("moving {} aside", high_water.display())))?;
    }
    std::fs::rename(&staging.0, &db_path)
        .map_err(io_error(format!("moving the restored database to {}", db_path.display())))?;
    store::sync_dir(&config.data_dir).map_err(io_error(format!("flushing {}", config.data_dir.display())))?;
    Ok(Restored {
        entries: found.entries,
        head: found.head,
        checkpoints: compared,
        lost_entries: (lost > 0).then_some(lost),
        recorded_seq: seq,
    })
}

/// Scheduled backups on disk, newest first: `(taken at, path)`.
pub fn scheduled_backups(dir: &Path) -> Vec<(i64, PathBuf)> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stamp = name.strip_prefix(SCHEDULED_PREFIX)?.strip_suffix(SCHEDULED_SUFFIX)?.to_owned();
            let at = time::PrimitiveDateTime::parse(&stamp, format).ok()?.assume_utc().unix_timestamp();
            Some((at, e.path()))
        })
        .collect();
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    found
}

/// What one scheduled-backup step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStep {
    /// No `backup.dir`.
    Off,
    /// The newest backup is recent enough (or a failure is being waited out).
    NotDue,
    Made {
        path: PathBuf,
        pruned: usize,
    },
    Failed {
        error: String,
    },
}

impl App {
    /// One scheduled-backup step (the scheduler calls it every tick): take a backup
    /// when the newest in `backup.dir` is `every_hours` old, keep the newest `keep`.
    /// A failure is recorded and announced (`backup.failed`) and retried an hour later.
    #[tracing::instrument(skip_all)]
    pub async fn run_backup_due(&self) -> Result<BackupStep, AppError> {
        let cfg = self.config.backup.clone();
        if cfg.dir.as_os_str().is_empty() {
            return Ok(BackupStep::Off);
        }
        let now = self.now();
        let every = i64::from(cfg.every_hours) * 3600;
        let newest = scheduled_backups(&cfg.dir).first().map(|(at, _)| *at);
        if newest.is_some_and(|at| now.unix_timestamp() - at < every) {
            return Ok(BackupStep::NotDue);
        }
        if self.backup_failed_at().is_some_and(|at| now.unix_timestamp() - at < 3600) {
            return Ok(BackupStep::NotDue);
        }
        let stamp = now
            .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
            .map_err(|e| AppError::unexpected("naming a backup", e))?;
        let dest = cfg.dir.join(format!("{SCHEDULED_PREFIX}{stamp}{SCHEDULED_SUFFIX}"));
        let (db_path, work) = (self.db.path().to_owned(), self.config.data_dir.clone());
        let made = tokio::task::spawn_blocking(move || {
            store::create_private_dir(&cfg.dir)?;
            let made = write_backup(&db_path, &work, &dest, &cfg.recipients)?;
            let mut pruned = 0;
            for (_, old) in scheduled_backups(&cfg.dir).into_iter().skip(cfg.keep as usize) {
                if std::fs::remove_file(&old).is_ok() {
                    pruned += 1;
                }
            }
            Ok::<_, AppError>((made, pruned))
        })
        .await
        .map_err(|_| AppError::Internal("backup worker stopped".into()))?;
        match made {
            Ok((made, pruned)) => {
                self.set_backup_failed_at(None);
                tracing::info!(path = %made.path.display(), bytes = made.bytes, entries = made.entries, "backup written");
                Ok(BackupStep::Made { path: made.path, pruned })
            }
            Err(e) => {
                let error = crate::error::chain(&e);
                tracing::error!(error = %error, "scheduled backup failed");
                self.set_backup_failed_at(Some(now.unix_timestamp()));
                let dir = self.config.backup.dir.display().to_string();
                let event = Event::BackupFailed { dir, error: error.clone() };
                self.db
                    .transact(move |tx| {
                        announce::record(tx, now, &super::Actor::System.audit_name(), &Subject::Vault, &event)?;
                        Ok::<_, AppError>(())
                    })
                    .await?;
                Ok(BackupStep::Failed { error })
            }
        }
    }

    fn backup_failed_at(&self) -> Option<i64> {
        *self.backup_failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_backup_failed_at(&self, at: Option<i64>) {
        *self.backup_failure.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}
