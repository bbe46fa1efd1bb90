//! Embedded, forward-only migrations applied by a `PRAGMA user_version` loop.
use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// `(version, name, sql)`; version N is `migrations/000N_*.sql`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../../migrations/0001_init.sql")),
    (2, "0002_checkouts", include_str!("../../migrations/0002_checkouts.sql")),
    (3, "0003_outbox", include_str!("../../migrations/0003_outbox.sql")),
    (4, "0004_drills", include_str!("../../migrations/0004_drills.sql")),
    (5, "0005_audit_filters", include_str!("../../migrations/0005_audit_filters.sql")),
    (6, "0006_drill_participants", include_str!("../../migrations/0006_drill_participants.sql")),
    (7, "0007_quorum", include_str!("../../migrations/0007_quorum.sql")),
    (8, "0008_root_activity", include_str!("../../migrations/0008_root_activity.sql")),
    (9, "0009_root_tasks", include_str!("../../migrations/0009_root_tasks.sql")),
];

/// A migration whose first line is this marker rebuilds tables that others reference:
/// it runs with foreign keys off and must leave `PRAGMA foreign_key_check` empty.
const FOREIGN_KEYS_OFF: &str = "-- breakglass: foreign_keys=off";

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?)
}

pub fn check_not_newer(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    check_version(conn, path, SCHEMA_VERSION)
}

fn check_version(conn: &Connection, path: &Path, supported: i64) -> Result<i64, StoreError> {
    let found = user_version(conn)?;
    if found > supported {
        return Err(StoreError::TooNew { path: path.to_owned(), found, supported });
    }
    Ok(found)
}

/// Bring the database up to [`SCHEMA_VERSION`]. An existing database is copied with
/// `VACUUM INTO` next to itself before the first pending migration runs.
pub fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// [`migrate`] over an explicit list (tests use it to exercise upgrades).
pub fn migrate_with(conn: &Connection, path: &Path, migrations: &[(i64, &str, &str)]) -> Result<(), StoreError> {
    let target = migrations.last().map_or(0, |m| m.0);
    let current = check_version(conn, path, target)?;
    if current == target {
        return Ok(());
    }
    if current > 0 {
        let backup = path.with_extension(format!("v{current}.backup.db"));
        if !backup.exists() {
            backup_into(conn, &backup)?;
            tracing::info!(backup = %backup.display(), "backed up database before migrating");
        }
    }
    for (version, name, sql) in migrations.iter().filter(|(v, _, _)| *v > current) {
        let rebuild = sql.starts_with(FOREIGN_KEYS_OFF);
        if rebuild {
            // Only outside a transaction does this pragma take effect.
            conn.pragma_update(None, "foreign_keys", "OFF")?;
        }
        let applied = apply(conn, *version, name, sql, rebuild);
        if rebuild {
            conn.pragma_update(None, "foreign_keys", "ON")?;
        }
        applied?;
        tracing::info!(migration = name, "applied migration");
    }
    Ok(())
}

fn apply(conn: &Connection, version: i64, name: &str, sql: &str, rebuild: bool) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(sql)?;
    if rebuild {
        let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
        if broken > 0 {
            return Err(StoreError::Migration(format!(
                "{name} would leave {broken} rows pointing at missing rows; nothing was changed"
            )));
        }
    }
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    Ok(())
}

/// `VACUUM INTO` a file created first with mode 0600 (SQLite would create it under the
/// process umask, 0644 by default: a readable copy of every sealed secret and the log).
/// A failed copy leaves no empty file behind that a later run would take for a backup.
pub(crate) fn backup_into(conn: &Connection, backup: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::DataDir { path: backup.to_owned(), source };
    super::create_private_file(backup).map_err(io)?;
    let copied = conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()]).map_err(StoreError::from).and_then(|_| {
        std::fs::File::open(backup).and_then(|f| f.sync_all()).map_err(io)?;
        if let Some(dir) = backup.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::sync_dir(dir).map_err(io)?;
        }
        Ok(())
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(backup);
    }
    copied
}
