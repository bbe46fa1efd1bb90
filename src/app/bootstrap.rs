//! Start-up: create or unseal the vault, and the first admin's invite.
//! Used by `serve` and `init`; these run before the HTTP server exists.
use crate::domain::event::{Event, Subject};
use std::path::Path;

use rusqlite::Connection;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use time::OffsetDateTime;

use super::{Actor, invites};
use crate::{
    config::{Config, SealMode},
    crypto::{
        CryptoError, UnsealedVault,
        seal::{self, KdfParams, MIN_PASSPHRASE_CHARS, SealKey},
        vault::NewVault,
    },
    domain::Role,
    error::AppError,
    store::{self, accounts as store_accounts, people},
};

/// What `serve` / `init` need from the operator, asked only when needed.
pub trait SealInput {
    /// The passphrase; `confirm` is true when creating a vault (ask twice).
    fn passphrase(&mut self, confirm: bool) -> Result<SecretString, AppError>;
}

/// Reads the passphrase from `seal.passphrase_file`; never prompts.
pub struct FileOnly<'a>(pub &'a Config);

impl SealInput for FileOnly<'_> {
    fn passphrase(&mut self, _confirm: bool) -> Result<SecretString, AppError> {
        match &self.0.seal.passphrase_file {
            Some(p) => Ok(seal::read_passphrase_file(p)?),
            None => Err(AppError::unavailable(
                "passphrase_required",
                "seal.mode is \"passphrase\" but no seal.passphrase_file is set and there is no terminal to ask on.",
            )),
        }
    }
}

/// A 32-byte per-instance secret from `settings`, created on first use.
pub fn instance_secret(conn: &Connection, key: &str) -> Result<[u8; 32], AppError> {
    let fresh = crate::crypto::random_bytes::<32>()?;
    store_accounts::set_setting_if_absent(conn, key, fresh.as_slice())?;
    let v = store_accounts::setting(conn, key)?.unwrap_or_default();
    v.as_slice().try_into().map_err(|_| AppError::Internal(format!("setting {key} is not 32 bytes")))
}

fn seal_key_for(
    config: &Config,
    input: &mut dyn SealInput,
    creating: bool,
    salt: &[u8],
    params: KdfParams,
) -> Result<SealKey, AppError> {
    match config.seal.mode {
        SealMode::DevKeyFile | SealMode::KeyFile => {
            let path = config.key_file_path().ok_or_else(|| AppError::Internal("no key file configured".into()))?;
            if creating && config.seal.mode == SealMode::DevKeyFile && !path.exists() {
                Ok(seal::create_key_file(&path)?)
            } else {
                Ok(seal::read_key_file(&path)?)
            }
        }
        SealMode::Passphrase => {
            let pass = input.passphrase(creating)?;
            if creating && pass.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
                return Err(AppError::invalid(
                    "weak_passphrase",
                    format!(
                        "The passphrase must have at least {MIN_PASSPHRASE_CHARS} characters; a long sentence is best."
                    ),
                ));
            }
            Ok(seal::derive_from_passphrase(&pass, salt, params)?)
        }
    }
}

fn seal_kind(mode: SealMode) -> &'static str {
    match mode {
        SealMode::DevKeyFile | SealMode::KeyFile => "key_file",
        SealMode::Passphrase => "passphrase",
    }
}

/// Create a vault in an empty database. Gathers the seal key first, so that a
/// missing file or short passphrase writes nothing. The database is built under a
/// temporary name, flushed to disk and only then linked into place, so a crash at any
/// point leaves either no `breakglass.db` or a complete one.
pub fn init_vault(
    db_path: &Path,
    config: &Config,
    now: OffsetDateTime,
    input: &mut dyn SealInput,
    kdf: KdfParams,
) -> Result<UnsealedVault, AppError> {
    if db_path.exists() {
        return Err(if is_initialized(db_path)? { already_initialized(db_path) } else { half_made(db_path) });
    }
    store::create_private_dir(&config.data_dir)?;
    if let (SealMode::KeyFile, Some(p)) = (config.seal.mode, &config.seal.key_file)
        && !p.exists()
    {
        seal::create_key_file(p)?;
        tracing::warn!(path = %p.display(), "created a new seal key file: back it up offline, the vault cannot be opened without it");
    }
    let salt = crate::crypto::random_bytes::<16>()?;
    let key = seal_key_for(config, input, true, salt.as_slice(), kdf)?;
    let NewVault { sealed_key, recipient, vault } = UnsealedVault::create(&key)?;
    let dev = config.seal.mode == SealMode::DevKeyFile;
    let (kdf_params, kdf_salt) = match config.seal.mode {
        SealMode::Passphrase => {
            (Some(serde_json::to_string(&kdf).map_err(|e| AppError::Internal(e.to_string()))?), Some(salt.to_vec()))
        }
        _ => (None, None),
    };
    let building = building_path(db_path);
    remove_database_files(&building)?;
    let built = (|| {
        let mut conn = store::open(&building)?;
        store::transact(&mut conn, |tx| {
            store_accounts::insert_vault(
                tx,
                &store_accounts::VaultRow {
                    seal_kind: seal_kind(config.seal.mode).into(),
                    dev_mode: dev,
                    kdf_params: kdf_params.clone(),
                    kdf_salt,
                    sealed_key,
                    recipient: recipient.clone(),
                    created_at: now.unix_timestamp(),
                },
            )?;
            instance_secret(tx, "decoy_key")?;
            crate::app::announce::record(
                tx,
                now,
                &Actor::Host.audit_name(),
                &Subject::Vault,
                &Event::VaultInitialized {
                    seal: seal_kind(config.seal.mode).to_owned(),
                    dev_mode: dev,
                    kdf: json!(kdf_params),
                    recipient: recipient.clone(),
                },
            )?;
            Ok::<_, AppError>(())
        })?;
        // Fold the WAL into the file so that the one file is the whole database.
        store::fold_wal_into_file(&conn)?;
        drop(conn);
        std::fs::File::open(&building).and_then(|f| f.sync_all()).map_err(|e| io_error(&building, e))?;
        // A hard link fails if the name exists: two racing inits cannot replace each other.
        match std::fs::hard_link(&building, db_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(already_initialized(db_path)),
            Err(_) => std::fs::rename(&building, db_path).map_err(|e| io_error(db_path, e))?,
        }
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            store::sync_dir(dir).map_err(|e| io_error(dir, e))?;
        }
        Ok::<_, AppError>(())
    })();
    remove_database_files(&building)?;
    built?;
    Ok(vault)
}

/// Where `init` builds the database before linking it into place.
pub fn building_path(db_path: &Path) -> std::path::PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_owned();
    name.push(".init");
    db_path.with_file_name(name)
}

/// Remove a database file and its SQLite side files, if present.
fn remove_database_files(path: &Path) -> Result<(), AppError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(Path::new(&name), e)),
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> AppError {
    AppError::unavailable("data_dir_unwritable", format!("cannot write {}: {e}.", path.display()))
}

fn already_initialized(db_path: &Path) -> AppError {
    AppError::conflict(
        "already_initialized",
        format!("{} already holds a vault; nothing was changed.", db_path.display()),
    )
}

fn half_made(db_path: &Path) -> AppError {
    AppError::unavailable(
        "half_made_data_dir",
        format!(
            "{} exists but holds no vault: an earlier `breakglass init` (or first `serve`) was interrupted before it finished. \
             Nothing in it is needed. Move it aside, with any {}-journal, -wal and -shm files next to it, and run `breakglass init` again.",
            db_path.display(),
            db_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ),
    )
}

fn vault_row(conn: &Connection) -> Result<Option<store_accounts::VaultRow>, AppError> {
    // A database created by a newer or older binary may lack the table; treat as empty.
    if !store::has_table(conn, "vault")? {
        return Ok(None);
    }
    Ok(store_accounts::vault(conn)?)
}

/// Unseal the vault of an existing database, reading it without writing anything.
pub fn unseal_vault(db_path: &Path, config: &Config, input: &mut dyn SealInput) -> Result<UnsealedVault, AppError> {
    let conn = store::open_read_only(db_path)?;
    let row = vault_row(&conn)?.ok_or_else(|| {
        AppError::unavailable(
            "vault_not_initialized",
            format!("{} has no vault: run `breakglass init` first.", db_path.display()),
        )
    })?;
    drop(conn);
    let wanted = seal_kind(config.seal.mode);
    if row.seal_kind != wanted {
        return Err(AppError::invalid(
            "seal_mode_mismatch",
            format!(
                "the vault is sealed with a {} but seal.mode is {:?}: set seal.mode to match how the vault was initialised.",
                row.seal_kind.replace('_', " "),
                config.seal.mode
            ),
        ));
    }
    if row.dev_mode && config.seal.mode != SealMode::DevKeyFile {
        tracing::warn!("this vault was created in dev mode; its key file is {}", config.dev_key_file().display());
    }
    let params: KdfParams = match &row.kdf_params {
        Some(p) => serde_json::from_str(p).map_err(|e| AppError::Internal(format!("stored KDF params: {e}")))?,
        None => KdfParams::default(),
    };
    let salt = row.kdf_salt.clone().unwrap_or_default();
    let key = seal_key_for(config, input, false, &salt, params)?;
    UnsealedVault::unseal(&key, &row.sealed_key, &row.recipient).map_err(|e| match e {
        CryptoError::WrongSealKey => AppError::Crypto(CryptoError::WrongSealKey),
        other => AppError::Crypto(other),
    })
}

/// Whether the database at `path` holds a vault: `false` when there is no database,
/// `true` when it holds one; a database without a vault is a half-made data dir (an
/// interrupted first start) and an error that says what to do.
pub fn is_initialized(db_path: &Path) -> Result<bool, AppError> {
    match std::fs::metadata(db_path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(AppError::unavailable(
                "data_dir_unreadable",
                format!(
                    "cannot read {}: {e}. Check that the data dir belongs to the user running breakglass.",
                    db_path.display()
                ),
            ));
        }
    }
    let read_only = store::open_read_only(db_path).map_err(AppError::from).and_then(|conn| vault_row(&conn));
    let has_vault = match read_only {
        Ok(row) => row.is_some(),
        // A crash can leave a hot journal that only a writer may roll back (a read-only
        // open then fails with "attempt to write a readonly database"): let SQLite
        // recover as it does on any open, without migrating, and look again.
        Err(_) => {
            let conn = Connection::open(db_path).map_err(|e| {
                AppError::unavailable(
                    "database_unreadable",
                    format!("cannot open {}: {e}. Is it a breakglass database?", db_path.display()),
                )
            })?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            store::migrate::check_not_newer(&conn, db_path)?;
            vault_row(&conn)?.is_some()
        }
    };
    if has_vault { Ok(true) } else { Err(half_made(db_path)) }
}

/// On a start with no active admin, revoke earlier first-run invites and issue a
/// fresh one (admin + custodian). Returns it for printing.
pub fn first_admin_invite(
    conn: &mut Connection,
    config: &Config,
    now: OffsetDateTime,
) -> Result<Option<invites::InviteCreated>, AppError> {
    store::transact(conn, |tx| {
        if people::count_active_with_role(tx, Role::Admin)? > 0 {
            return Ok(None);
        }
        let system = Actor::System.audit_name();
        for inv in people::list_invites(tx)? {
            if inv.created_by == system
                && inv.used_at.is_none()
                && inv.revoked_at.is_none()
                && inv.expires_at > now.unix_timestamp()
            {
                people::revoke_invite(tx, &inv.id, now.unix_timestamp())?;
                crate::app::announce::record(
                    tx,
                    now,
                    &system,
                    &Subject::Invite(inv.id.clone()),
                    &Event::InviteRevoked { roles: None, reason: Some("superseded by a new first-run invite".into()) },
                )?;
            }
        }
        let created = invites::create_in_tx(tx, config, now, &Actor::System, &[Role::Admin, Role::Custodian])?;
        Ok::<_, AppError>(Some(created))
    })
}
