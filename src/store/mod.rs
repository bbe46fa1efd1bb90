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

/// `execute` and `query_row` through the connection's statement cache. A checkout step
/// runs the same few dozen statements every time; parsing and planning them again
/// cost more than running them (`prepare_cached` keys the cache by the SQL text).
pub(crate) trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept prepared per connection: every statement of the request path fits.
const STATEMENT_CACHE: usize = 128;

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
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    // Statement journals and temporary tables stay in memory: inside a savepoint (every
    // ceremony step) the sub-journal of old page images otherwise spills past 64 KiB to
    // a temporary file — a create, write and unlink on every approval and release, and
    // page images (quorum shares included) written outside the database.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// WAL size (pages) past which a commit checkpoints the WAL itself, on the request
/// path. A safety net only: the background [`Checkpointer`] normally keeps the WAL
/// far smaller (SQLite's default is 1,000 pages, reached every ~15 checkouts).
const AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// The checkpointer waits for the writer to pause this long before it copies the WAL
/// back, so that its page writes and fsyncs do not land while a request is committing.
const CHECKPOINT_QUIET: Duration = Duration::from_millis(100);

/// Under continuous load there is no pause: a pass runs at the latest this long after
/// the first commit it has not copied yet. At ~70 WAL pages per checkout and a checkout
/// every ~10 ms (the bench's pace, far above any real team's) that keeps the WAL near
/// 7,000 pages, under [`AUTOCHECKPOINT_PAGES`], and puts a pass next to one checkout
/// step in ~600 instead of one in ~30 with a fixed 50 ms batch.
const CHECKPOINT_MAX_DELAY: Duration = Duration::from_secs(1);

/// When the pass that the commits since `first` (the latest at `last`) are waiting for
/// is due: after a quiet spell, or at the latest [`CHECKPOINT_MAX_DELAY`] after `first`.
fn checkpoint_due(first: std::time::Instant, last: std::time::Instant) -> std::time::Instant {
    (last + CHECKPOINT_QUIET).min(first + CHECKPOINT_MAX_DELAY)
}

/// Block until a checkpoint pass is due for the commits signalled on `woken`:
/// `None` when the sender is gone and nothing is pending, else whether the sender
/// has gone meanwhile (one last pass, then stop).
fn wait_for_pass(woken: &std::sync::mpsc::Receiver<()>) -> Option<bool> {
    use std::sync::mpsc::RecvTimeoutError;
    woken.recv().ok()?;
    let first = std::time::Instant::now();
    let mut latest = first;
    loop {
        let due = checkpoint_due(first, latest);
        match woken.recv_timeout(due.saturating_duration_since(std::time::Instant::now())) {
            Ok(()) => latest = std::time::Instant::now(),
            Err(RecvTimeoutError::Timeout) => return Some(false),
            Err(RecvTimeoutError::Disconnected) => return Some(true),
        }
    }
}

/// Copies committed WAL frames into the database file on a connection and thread of
/// its own, so that no request waits for a checkpoint. A checkpoint writes back the
/// pages the WAL holds and fsyncs the WAL and the database file: milliseconds, and
/// with SQLite's automatic checkpoint it landed on one commit in ~50, which made the
/// p99 of checkout steps. `PASSIVE` never waits for or blocks the writer; commits
/// stay durable in the WAL (`synchronous=FULL`) either way. Woken after database
/// work, it runs when the writer pauses ([`checkpoint_due`]) and sleeps when nothing
/// happens; stopped and joined when the last `Db` goes.
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Self {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let path = path.to_owned();
        let run = move || {
            let conn = match Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|c| c.pragma_update(None, "synchronous", "FULL").map(|()| c))
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "no background WAL checkpoints: commits checkpoint the WAL themselves");
                    return;
                }
            };
            let checkpoint = || {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                }
            };
            while let Some(last) = wait_for_pass(&woken) {
                checkpoint();
                if last {
                    return;
                }
            }
        };
        match std::thread::Builder::new().name("wal-checkpoint".into()).spawn(run) {
            Ok(thread) => Self { wake: Some(wake), thread: Some(thread) },
            Err(e) => {
                tracing::warn!(error = %e, "no background WAL checkpoints: commits checkpoint the WAL themselves");
                Self { wake: None, thread: None }
            }
        }
    }

    /// Something may have been committed: checkpoint soon (never blocks).
    fn nudge(&self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A shared handle to the database. Every call runs on tokio's blocking pool.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    checkpointer: Arc<Checkpointer>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open(path)?;
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            checkpointer: Arc::new(Checkpointer::start(path)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection, off the async scheduler. On the multi-thread
    /// runtime `serve` runs, `f` runs on this worker thread after tokio has handed the
    /// worker's other tasks to another thread (`block_in_place`): no hand-off to the
    /// blocking pool and back, which costs two thread wake-ups per step. On a
    /// current-thread runtime (tests) it goes to the blocking pool.
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        let checkpointer = self.checkpointer.clone();
        let run = move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let out = f(&mut guard);
            drop(guard);
            checkpointer.nudge();
            out
        };
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
            tokio::task::block_in_place(run)
        } else {
            tokio::task::spawn_blocking(run).await.map_err(|_| E::from(StoreError::WorkerGone))?
        }
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
        let out = f(&mut guard);
        drop(guard);
        self.checkpointer.nudge();
        out
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

/// A consistent snapshot of the live database at `db_path` into `dest` (created 0600,
/// flushed): `VACUUM INTO` on a connection of its own, so a running server keeps
/// serving (WAL readers do not block its writer). The copy holds no WAL.
pub fn snapshot(db_path: &Path, dest: &Path) -> Result<(), StoreError> {
    if !db_path.exists() {
        return Err(StoreError::Missing(db_path.to_owned()));
    }
    let conn =
        Connection::open_with_flags(db_path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    migrate::backup_into(&conn, dest)
}

/// Checkpoint the whole WAL into the database file and truncate it to zero bytes.
/// `false` when a reader kept part of it (SQLite's "busy"): nothing is lost, but the
/// WAL still holds old page images.
pub fn truncate_wal(conn: &Connection) -> Result<bool, StoreError> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

/// Leave WAL mode, folding the WAL into the file, so the one file is the whole database
/// (a database being built aside, before it is put in place).
pub fn fold_wal_into_file(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// `PRAGMA integrity_check`: `None` when the file is sound, else SQLite's first complaint.
pub fn integrity_problem(conn: &Connection) -> Result<Option<String>, StoreError> {
    let first: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    Ok((first != "ok").then_some(first))
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

    #[tokio::test]
    async fn commits_leave_the_wal_to_the_background_checkpointer_which_stops_with_the_db() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        let pages: i64 = db.with(|c| c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))).unwrap();
        assert_eq!(pages, AUTOCHECKPOINT_PAGES, "commits do not checkpoint every 1,000 pages");
        let before = std::fs::metadata(&path).unwrap().len();
        db.transact(|tx| {
            for i in 0..100 {
                tx.execute("INSERT INTO settings (key, value) VALUES (?1, zeroblob(8000))", [format!("k{i}")])?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
        // The rows are in the WAL; the checkpointer copies them into the database file
        // (waiting for it, not timing it).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < before + 800_000 {
            assert!(std::time::Instant::now() < deadline, "the WAL was never checkpointed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let thread = db.checkpointer.thread.as_ref().map(|t| t.thread().id());
        assert!(thread.is_some());
        drop(db); // joins the thread: nothing keeps the file open afterwards
        let count: i64 = open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM settings WHERE key LIKE 'k%'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 100);
    }

    #[test]
    fn a_checkpoint_waits_for_a_pause_but_never_longer_than_the_maximum_delay() {
        let t0 = std::time::Instant::now();
        // One commit: due after the quiet spell.
        assert_eq!(checkpoint_due(t0, t0), t0 + CHECKPOINT_QUIET);
        // Another commit 60 ms later pushes it back...
        let later = t0 + Duration::from_millis(60);
        assert_eq!(checkpoint_due(t0, later), later + CHECKPOINT_QUIET);
        // ...but commits that never pause do not push it past the maximum delay.
        let busy = t0 + CHECKPOINT_MAX_DELAY - Duration::from_millis(10);
        assert_eq!(checkpoint_due(t0, busy), t0 + CHECKPOINT_MAX_DELAY);
        assert!(CHECKPOINT_QUIET < CHECKPOINT_MAX_DELAY);
    }

    #[test]
    fn commits_that_never_pause_still_get_a_checkpoint_pass() {
        // A writer nudging every 10 ms (far under the quiet spell) for as long as the
        // test runs: a pass must still come due. Waiting for it, not timing it; without
        // the maximum delay it never would, and the guard below fails the test.
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = wake.try_send(());
                    std::thread::sleep(CHECKPOINT_QUIET / 10);
                }
            })
        };
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(wait_for_pass(&woken));
        });
        let got = finished.recv_timeout(Duration::from_secs(30));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(got, Ok(Some(false)), "a writer that never pauses was never checkpointed");
    }

    #[test]
    fn the_checkpointer_stops_when_its_sender_goes() {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        wake.try_send(()).unwrap();
        drop(wake);
        assert_eq!(wait_for_pass(&woken), Some(true), "one last pass for what was pending");
        assert_eq!(wait_for_pass(&woken), None);
    }

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

    /// SQL lives in `store/` (docs/ARCHITECTURE.md): outside it, no non-test code holds
    /// an SQL statement or calls rusqlite's statement methods directly.
    #[test]
    fn sql_is_written_only_in_the_store_layer() {
        const CALLS: [&str; 9] = [
            ".prepare(",
            ".prepare_cached(",
            ".query_row(",
            ".query_map(",
            ".execute(",
            ".execute_batch(",
            ".pragma_update(",
            ".pragma_query_value(",
            ".pragma_query(",
        ];
        const KEYWORDS: [&str; 9] =
            ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "PRAGMA ", "VACUUM ", "CREATE ", "DROP ", "WITH "];
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        assert!(files.len() > 40, "found the sources: {}", files.len());
        let mut found = Vec::new();
        for file in files.iter().filter(|f| !f.starts_with(src.join("store"))) {
            let text = std::fs::read_to_string(file).unwrap();
            // Unit tests sit at the end of a file and may set up fixtures with SQL.
            let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                let sql_text =
                    line.split('"').skip(1).step_by(2).any(|lit| KEYWORDS.iter().any(|k| lit.starts_with(k)));
                if sql_text || CALLS.iter().any(|c| line.contains(c)) {
                    found.push(format!("{}:{}: {}", file.strip_prefix(&src).unwrap().display(), n + 1, trimmed));
                }
            }
        }
        assert!(found.is_empty(), "SQL outside store/:\n{}", found.join("\n"));
    }
}
