//! SQLite storage: open with the right pragmas, embedded forward-only migrations,
//! and a handle that runs blocking work off the async workers.
pub mod accounts;
pub mod audit;
pub mod checkouts;
pub mod drills;
pub mod migrate;
pub mod outbox;
pub mod people;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use migrate::{MIGRATIONS, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database {path} has schema version {found}, newer than this binary understands ({supported}): run a newer breakglass, or restore the backup taken before the upgrade"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("database {0} does not exist: start the server once or run `breakglass init`")]
    Missing(PathBuf),
    #[error("the database worker stopped unexpectedly")]
    WorkerGone,
}

/// Open (creating if needed) and migrate the database at `path`.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let fresh = !path.exists();
    let conn = Connection::open(path)?;
    if fresh {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| StoreError::DataDir { path: path.to_owned(), source })?;
    }
    configure(&conn)?;
    migrate::migrate(&conn, path)?;
    Ok(conn)
}

/// Open an existing database read-only (for `audit verify` and exports).
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing(path.to_owned()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    migrate::check_not_newer(&conn, path)?;
    Ok(conn)
}

pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::DataDir { path: dir.to_owned(), source })
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    Ok(())
}

/// A shared handle to the database. Every call runs on tokio's blocking pool.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { conn: Arc::new(Mutex::new(open(path)?)), path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection on the blocking pool.
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| E::from(StoreError::WorkerGone))?
    }

    /// Run `f` inside one IMMEDIATE transaction; commit on `Ok`, roll back on `Err`.
    pub async fn transact<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.call(move |conn| transact(conn, f)).await
    }

    /// Synchronous access, for the CLI and start-up.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// One IMMEDIATE transaction around `f` (taking the write lock up front avoids
/// upgrade deadlocks between concurrent writers).
pub fn transact<T, E>(conn: &mut Connection, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
where
    E: From<StoreError>,
{
    let tx =
        conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| E::from(StoreError::Sqlite(e)))?;
    let out = f(&tx)?;
    tx.commit().map_err(|e| E::from(StoreError::Sqlite(e)))?;
    Ok(out)
}

/// Prove the database takes writes now: in an IMMEDIATE transaction that is always
/// rolled back, write a row large enough to need new pages. Fails on a full disk
/// (or `max_page_count`), a read-only file or mount, or a lock held past the busy
/// timeout; leaves nothing behind.
pub fn probe_writable(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let page_size: i64 = tx.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    tx.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES ('readyz.write_probe', zeroblob(?1))",
        [page_size.saturating_mul(2)],
    )?;
    tx.rollback()?;
    Ok(())
}
