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
];

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
            conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()])?;
            tracing::info!(backup = %backup.display(), "backed up database before migrating");
        }
    }
    for (version, name, sql) in migrations.iter().filter(|(v, _, _)| *v > current) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(migration = name, "applied migration");
    }
    Ok(())
}
