//! SQLite storage: open with the right pragmas, embedded forward-only migrations,
//! and a handle that runs blocking work off the async workers.
pub mod accounts;
pub mod audit;
pub mod checkouts;
pub mod drills;
pub mod migrate;
pub mod outbox;
pub mod people;
pub mod posture;
pub mod root_activity;
pub mod shares;
mod sql_enums;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use migrate::{MIGRATIONS, SCHEMA_VERSION};

/// Whether the database has a table of that name (a database from another version
/// may lack one).
pub fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", sqlite_message(.0))]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database {path} has schema version {found}, newer than this binary understands ({supported}): run a newer breakglass, or restore the backup taken before the upgrade"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(
        "the data directory {path} is open to other users (mode {mode:o}) and could not be tightened ({source}): run `chmod 700 {path}` as its owner"
    )]
    DataDirOpen { path: PathBuf, mode: u32, source: std::io::Error },
    #[error("database {0} does not exist: start the server once or run `breakglass init`")]
    Missing(PathBuf),
    #[error("the database worker stopped unexpectedly")]
    WorkerGone,
    #[error("migration failed: {0}")]
    Migration(String),
}

/// What an operator reads for a SQLite error: a full disk says so and what to do.
fn sqlite_message(e: &rusqlite::Error) -> String {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        "the disk holding the database is full (SQLite: database or disk is full): nothing was written. \
         Free space on the data dir's file system and try again (deploy/RUNBOOK.md, \"Disk full\")."
            .to_owned()
    } else {
        format!("database error: {e}")
    }
}

impl StoreError {
    /// The write failed because the disk (or the database's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
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

/// Open an existing database read-only (for `audit verify` and exports). On read-only
/// media (a write-protected copy, a read-only mount) SQLite cannot create the WAL's
/// shared-memory file; the database is then opened `immutable`, which is exact as long
/// as no `-wal` file holds transactions not yet checkpointed into it — when one does,
/// this refuses rather than show an older state of the log.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing(path.to_owned()));
    }
    let plain = || -> Result<Connection, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate::check_not_newer(&conn, path)?;
        Ok(conn)
    };
    match plain() {
        Ok(conn) => Ok(conn),
        Err(StoreError::Sqlite(first)) => {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(StoreError::Sqlite(first));
            }
            let conn = Connection::open_with_flags(
                immutable_uri(path),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )?;
            migrate::check_not_newer(&conn, path)?;
            Ok(conn)
        }
        Err(other) => Err(other),
    }
}

/// `file:<path>?immutable=1`, with the characters a URI path cannot hold escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' | 0x80.. => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(char::from(*b)),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Create the data directory with mode 0700, or tighten an existing one that group or
/// others can enter (0755 under the usual umask) to owner-only. It holds the database,
/// its backups and in dev mode the seal key: nobody else has business listing it.
/// Refuses (with the fix) a directory it cannot tighten, e.g. one it does not own.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(|source| StoreError::DataDirOpen { path: dir.to_owned(), mode, source })?;
                tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "the data directory was open to other users: tightened it to owner-only (0700)");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::DataDir { path: dir.to_owned(), source }),
        Err(source) => Err(StoreError::DataDir { path: dir.to_owned(), source }),
    }
}

/// Create an empty file only its owner can read, whatever the umask. Fails if it exists.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Flush a directory entry (a new or renamed file in `dir`) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_reported_as_such_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("t.db")).unwrap();
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let before: i64 = conn.query_row("SELECT count(*) FROM settings", [], |r| r.get(0)).unwrap();
        let e = transact(&mut conn, |tx| {
            for i in 0..1000 {
                tx.execute("INSERT INTO settings (key, value) VALUES (?1, zeroblob(4000))", [format!("k{i}")])?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap_err();
        assert!(e.is_disk_full(), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("disk holding the database is full") && text.contains("nothing was written"), "{text}");
        let after: i64 = conn.query_row("SELECT count(*) FROM settings", [], |r| r.get(0)).unwrap();
        assert_eq!(before, after);
        let other = StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows);
        assert!(!other.is_disk_full());
        assert!(other.to_string().starts_with("database error: "));
    }
}
