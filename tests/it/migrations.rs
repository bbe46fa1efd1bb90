//! Schema migrations: applied in order, checked, refused when newer, backed up.
use breakglass::store::{self, Db, MIGRATIONS, SCHEMA_VERSION, StoreError, migrate};

#[test]
fn all_migrations_apply_to_an_empty_database_and_it_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/breakglass.db");
    let conn = store::open(&path).unwrap();
    assert_eq!(migrate::user_version(&conn).unwrap(), SCHEMA_VERSION);
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let fk_problems: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(fk_problems, 0);
    for pragma in ["foreign_keys", "secure_delete"] {
        let on: i64 = conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0)).unwrap();
        assert_eq!(on, 1, "{pragma}");
    }
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    // Opening again is a no-op.
    drop(conn);
    let conn = store::open(&path).unwrap();
    assert_eq!(migrate::user_version(&conn).unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakglass.db");
    drop(store::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let err = Db::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    assert!(store::open_read_only(&path).is_err());
}

#[test]
fn an_existing_database_is_backed_up_before_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakglass.db");
    let conn = store::open(&path).unwrap();
    conn.execute("INSERT INTO settings (key, value) VALUES ('marker', x'01')", []).unwrap();
    // The binary's migrations plus one more, as the next release would ship.
    let mut next = MIGRATIONS.to_vec();
    next.push((SCHEMA_VERSION + 1, "next_test", "CREATE TABLE upgraded (x INTEGER) STRICT;"));
    migrate::migrate_with(&conn, &path, &next).unwrap();
    assert_eq!(migrate::user_version(&conn).unwrap(), SCHEMA_VERSION + 1);
    let backup = path.with_extension(format!("v{SCHEMA_VERSION}.backup.db"));
    use std::os::unix::fs::PermissionsExt;
    // SQLite would create it 0644 under the usual umask: a readable copy of the vault.
    // Under a umask that already hides new files the check below could not fail, so
    // make sure this process's umask is not one of those.
    let control = dir.path().join("control");
    std::fs::write(&control, b"").unwrap();
    let control_mode = std::fs::metadata(&control).unwrap().permissions().mode() & 0o777;
    assert_ne!(
        control_mode & 0o044,
        0,
        "run the tests under umask 022 (the default): new files here are {control_mode:o}"
    );
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600, "backup is owner-only");
    let b = rusqlite::Connection::open(&backup).expect("backup exists");
    assert_eq!(migrate::user_version(&b).unwrap(), SCHEMA_VERSION, "backup is the pre-migration database");
    let marker: i64 = b.query_row("SELECT count(*) FROM settings WHERE key = 'marker'", [], |r| r.get(0)).unwrap();
    assert_eq!(marker, 1);
    // A failing migration leaves the database at its previous version.
    let mut broken = next.clone();
    broken.push((SCHEMA_VERSION + 2, "broken", "CREATE TABLE upgraded (x INTEGER);"));
    assert!(migrate::migrate_with(&conn, &path, &broken).is_err());
    assert_eq!(migrate::user_version(&conn).unwrap(), SCHEMA_VERSION + 1);
}

#[test]
fn a_version_1_database_is_upgraded_in_place_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakglass.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    migrate::migrate_with(&conn, &path, &MIGRATIONS[..1]).unwrap();
    conn.execute("INSERT INTO custodians (id, name, email, status, enrolled_at, approve_after) VALUES ('c1', 'Ada', 'a@example.com', 'active', 0, 0)", []).unwrap();
    drop(conn);
    let conn = store::open(&path).unwrap();
    assert_eq!(migrate::user_version(&conn).unwrap(), SCHEMA_VERSION);
    let n: i64 = conn.query_row("SELECT count(*) FROM custodians", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    assert!(path.with_extension("v1.backup.db").exists());
    let fk_problems: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(fk_problems, 0);
}

#[test]
fn drill_participants_move_from_json_text_to_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakglass.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let before = MIGRATIONS.iter().position(|m| m.1 == "0006_drill_participants").unwrap();
    migrate::migrate_with(&conn, &path, &MIGRATIONS[..before]).unwrap();
    for (id, name) in [("c1", "Ada"), ("c2", "Bo")] {
        conn.execute(
            "INSERT INTO custodians (id, name, email, status, enrolled_at, approve_after) VALUES (?1, ?2, ?1 || '@example.com', 'active', 0, 0)",
            [id, name],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO accounts (account_id, alias, root_email, approvals_required, reveal_window_minutes, max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by) \
         VALUES ('123456789012', 'prod', 'r@example.com', 1, 15, 60, 1, '0 9 1 * *', 'age1x', x'00', 0, 'host:cli')",
        [],
    )
    .unwrap();
    for (id, participants) in [("d1", Some(r#"["c2","c1"]"#)), ("d2", None)] {
        conn.execute(
            "INSERT INTO drills (id, account_id, period, due_at, grace_ends_at, state, participants) VALUES (?1, '123456789012', ?1, 0, 0, 'passed', ?2)",
            rusqlite::params![id, participants],
        )
        .unwrap();
    }
    drop(conn);

    let conn = store::open(&path).unwrap();
    let d1 = store::drills::get(&conn, "d1").unwrap().unwrap();
    assert_eq!(d1.participants, ["c1", "c2"], "both people, now rows of drill_participants");
    assert!(store::drills::get(&conn, "d2").unwrap().unwrap().participants.is_empty());
    assert_eq!(d1.state, store::drills::DrillState::Passed);
    let rows: i64 = conn.query_row("SELECT count(*) FROM drill_participants", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 2);
    let old_column: i64 = conn
        .query_row("SELECT count(*) FROM pragma_table_info('drills') WHERE name = 'participants'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(old_column, 0, "the JSON column is gone");
    // A participant must be a real custodian.
    assert!(
        conn.execute("INSERT INTO drill_participants (drill_id, custodian_id) VALUES ('d2', 'nobody')", []).is_err()
    );
}

#[test]
fn the_quorum_migration_rebuilds_accounts_and_checkouts_keeping_every_row_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakglass.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    let before = MIGRATIONS.iter().position(|m| m.1 == "0007_quorum").unwrap();
    migrate::migrate_with(&conn, &path, &MIGRATIONS[..before]).unwrap();
    conn.execute_batch(
        "INSERT INTO custodians (id, name, email, status, enrolled_at, approve_after) VALUES ('c1', 'Ada', 'a@example.com', 'active', 0, 0);
         INSERT INTO credentials (id, custodian_id, label, passkey, public_key, created_at) VALUES ('k1', 'c1', 'key', '{}', '{}', 0);
         INSERT INTO accounts (account_id, alias, root_email, approvals_required, reveal_window_minutes, max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by, rotation_due_since)
             VALUES ('123456789012', 'prod', 'r@example.com', 1, 15, 60, 1, '0 9 1 * *', 'age1x', x'00', 0, 'host:cli', 42);
         INSERT INTO account_approvers (account_id, custodian_id) VALUES ('123456789012', 'c1');
         INSERT INTO checkouts (id, account_id, requester_id, kind, reason, duration_minutes, state, approvals_required, veto, reveal_window_minutes, created_at, expires_at)
             VALUES ('co1', '123456789012', 'c1', 'drill', 'r', 30, 'pending', 1, 1, 15, 0, 99);
         INSERT INTO approvals (checkout_id, custodian_id, credential_id, decision, at, challenge, client_data_json, authenticator_data, signature)
             VALUES ('co1', 'c1', 'k1', 'approve', 0, 'c', 'd', 'a', 's');
         INSERT INTO drills (id, account_id, period, due_at, grace_ends_at, state, checkout_id) VALUES ('d1', '123456789012', 'p', 0, 0, 'due', 'co1');",
    )
    .unwrap();
    drop(conn);

    let conn = store::open(&path).unwrap();
    let a = store::accounts::account(&conn, "123456789012").unwrap().unwrap();
    assert_eq!(
        (a.alias.as_str(), a.rotation_due_since, a.wrapped_key.as_deref()),
        ("prod", Some(42), Some(&[0u8][..]))
    );
    assert_eq!(a.custody, breakglass::domain::Custody::Policy);
    assert_eq!((a.key_version, a.quorum_k), (1, None));
    let c = store::checkouts::get(&conn, "co1").unwrap().unwrap();
    assert_eq!((c.kind.as_str(), c.state.as_str()), ("drill", "pending"));
    // References from other tables still resolve, and still are enforced.
    let fk: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 0);
    assert!(
        conn.execute("INSERT INTO drills (id, account_id, period, due_at, grace_ends_at, state) VALUES ('d2', '000000000000', 'p', 0, 0, 'due')", [])
            .is_err(),
        "foreign keys are back on"
    );
    // The one-open-checkout index came back; 'reshare' is a kind; policy mode needs its wrapped key.
    assert!(conn.execute("INSERT INTO checkouts (id, account_id, requester_id, kind, reason, duration_minutes, state, approvals_required, veto, reveal_window_minutes, created_at, expires_at) VALUES ('co2', '123456789012', 'c1', 'reshare', 'r', 30, 'pending', 1, 1, 15, 0, 99)", []).is_err());
    assert!(conn.execute("UPDATE accounts SET wrapped_key = NULL", []).is_err());
    let fresh: String = conn.query_row("SELECT prf_status FROM credentials WHERE id = 'k1'", [], |r| r.get(0)).unwrap();
    assert_eq!(fresh, "unknown");
}
