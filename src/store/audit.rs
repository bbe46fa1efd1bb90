//! The audit_log table: append inside the caller's transaction, read in order.
use rusqlite::{Connection, OptionalExtension, Row, params, types::ValueRef};
use time::OffsetDateTime;

use super::{Cached, StoreError};
use crate::domain::audit::{AuditEntry, EntryRef, GENESIS_PREV_HASH, canonical_details, entry_hash, format_at};

/// Append one entry. Must be called inside the transaction that makes the change it
/// records, so that either both are written or neither is.
pub fn append(
    conn: &Connection,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    details: &serde_json::Value,
) -> Result<AuditEntry, StoreError> {
    let last: Option<(i64, String)> = conn
        .row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => {
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&hash, &mut prev).map_err(|_| {
                StoreError::Sqlite(rusqlite::Error::InvalidColumnType(1, "hash".into(), rusqlite::types::Type::Text))
            })?;
            (seq as u64 + 1, prev)
        }
        None => (1, GENESIS_PREV_HASH),
    };
    let at = format_at(at);
    let details = canonical_details(details);
    let hash = entry_hash(seq, &prev, &at, actor, action, subject, &details);
    let entry = AuditEntry {
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details,
        prev_hash: hex::encode(prev),
        hash: hex::encode(hash),
    };
    conn.exec(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![entry.seq as i64, entry.at, entry.actor, entry.action, entry.subject, entry.details, entry.prev_hash, entry.hash],
    )?;
    Ok(entry)
}

pub fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        details: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

pub const COLUMNS: &str = "seq, at, actor, action, subject, details, prev_hash, hash";

/// Filters for listing entries; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<u64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// `action` prefix, e.g. `custodian.` for all custodian events.
    pub action_prefix: Option<String>,
    pub subject: Option<String>,
    /// Inclusive lower bound on `at` (same fixed format, so text order is time order).
    pub since: Option<String>,
    /// Exclusive upper bound on `at`.
    pub until: Option<String>,
    /// Only entries before this `seq` (keyset paging of the newest-first audit page).
    pub before_seq: Option<u64>,
    /// Entries by or about this person: `actor` or `subject` is this value
    /// (`custodian:<id>`).
    pub person: Option<String>,
    /// Newest entries first (the audit page); paging with `after_seq` is oldest-first.
    pub newest_first: bool,
}

pub fn list(conn: &Connection, f: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let (sql, args) = list_query(f, limit);
    // Not cached: the limit is part of the text, and pages are not the hot path.
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQL and arguments of [`list`]. Every filter reads an index, never the whole log:
/// `action_prefix` is a range on `audit_log_by_action` (the prefix up to the prefix
/// followed by U+10FFFF, the largest character; `substr` keeps it exact), and `since`
/// becomes a lower bound on `seq` found in `audit_log_by_at` (the smallest `seq` at or
/// after it, exact whatever the clock did), so the page is read along the primary key.
/// Paging is by `seq` (keyset: `after_seq`, `before_seq`), never `OFFSET`, so a page deep
/// in a large log costs what the first one does. `person` (actor or subject) is two
/// ordered index reads, `audit_log_by_actor` and `audit_log_by_subject`, each cut at
/// `limit` and merged: a person with few entries in a huge log is found without a scan.
fn list_query(f: &AuditFilter, limit: u32) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(f.after_seq.unwrap_or(0) as i64)];
    let mut clauses = vec!["seq > ?1".to_owned()];
    let prefix_end = f.action_prefix.as_ref().map(|p| format!("{p}\u{10FFFF}"));
    let before = f.before_seq.map(|s| s as i64);
    // Each clause names its own parameter number (`{n}`), so one value can be used twice.
    let mut add = |template: &str, value: Option<Box<dyn rusqlite::ToSql>>| {
        if let Some(v) = value {
            args.push(v);
            clauses.push(template.replace("{n}", &args.len().to_string()));
        }
    };
    let text = |v: &Option<String>| v.clone().map(|v| Box::new(v) as Box<dyn rusqlite::ToSql>);
    add("seq < ?{n}", before.map(|v| Box::new(v) as Box<dyn rusqlite::ToSql>));
    add("actor = ?{n}", text(&f.actor));
    add("action = ?{n}", text(&f.action));
    add("action >= ?{n} AND substr(action, 1, length(?{n})) = ?{n}", text(&f.action_prefix));
    add("action < ?{n}", text(&prefix_end));
    add("subject = ?{n}", text(&f.subject));
    add(
        "seq >= coalesce((SELECT min(seq) FROM audit_log WHERE at >= ?{n} AND at < '~'), 9223372036854775807) AND at >= ?{n}",
        text(&f.since),
    );
    add("at < ?{n}", text(&f.until));
    let order = if f.newest_first { "DESC" } else { "ASC" };
    let sql = match &f.person {
        None => format!(
            "SELECT {COLUMNS} FROM audit_log WHERE {} ORDER BY seq {order} LIMIT {limit}",
            clauses.join(" AND ")
        ),
        Some(person) => {
            args.push(Box::new(person.clone()));
            let n = args.len();
            let branch = |column: &str| {
                format!(
                    "SELECT * FROM (SELECT {COLUMNS} FROM audit_log WHERE {} AND {column} = ?{n} ORDER BY seq {order} LIMIT {limit})",
                    clauses.join(" AND ")
                )
            };
            format!("{} UNION {} ORDER BY seq {order} LIMIT {limit}", branch("actor"), branch("subject"))
        }
    };
    (sql, args)
}

/// Every entry about one checkout, in `seq` order: its account's entries from the
/// request on (`audit_log_by_subject`, bounded below through `audit_log_by_at`) whose
/// `details.checkout` names it — the request, challenges, decisions, share handovers,
/// release, reveals, check-in, a rotation through it and a drill it proved.
pub fn for_checkout(
    conn: &Connection,
    subject: &str,
    requested_at: &str,
    checkout_id: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE subject = ?1 \
         AND seq >= coalesce((SELECT min(seq) FROM audit_log WHERE at >= ?2 AND at < '~'), 9223372036854775807) \
         AND json_extract(details, '$.checkout') = ?3 ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![subject, requested_at, checkout_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest entry with this action: its `at` and `details` text.
pub fn newest_of(conn: &Connection, action: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .row("SELECT at, details FROM audit_log WHERE action = ?1 ORDER BY seq DESC LIMIT 1", [action], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Every entry with this action about this subject: `seq` and `details` text, in
/// `seq` order.
pub fn of_action_about(conn: &Connection, action: &str, subject: &str) -> Result<Vec<(i64, String)>, StoreError> {
    // Sorted here: an ORDER BY after `subject = ?2` makes SQLite re-prepare per subject.
    let mut stmt = conn.prepare_cached("SELECT seq, details FROM audit_log WHERE action = ?1 AND subject = ?2")?;
    let mut rows = stmt
        .query_map([action, subject], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    rows.sort_by_key(|r| r.0);
    Ok(rows)
}

/// Visit every entry in `seq` order without loading the whole log.
pub fn for_each(conn: &Connection, f: impl FnMut(AuditEntry) -> bool) -> Result<(), StoreError> {
    for_each_after(conn, 0, f)
}

/// Visit every entry after `after_seq`, in `seq` order.
pub fn for_each_after(
    conn: &Connection,
    after_seq: u64,
    mut f: impl FnMut(AuditEntry) -> bool,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq"))?;
    let mut rows = stmt.query([after_seq as i64])?;
    while let Some(row) = rows.next()? {
        if !f(from_row(row)?) {
            break;
        }
    }
    Ok(())
}

/// Visit every entry after `after_seq`, in `seq` order, borrowed from SQLite's row
/// buffer (no allocation per entry): what `audit verify` and checkpoint signing walk.
pub fn for_each_ref_after(
    conn: &Connection,
    after_seq: u64,
    mut f: impl FnMut(EntryRef<'_>) -> bool,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq"))?;
    let mut rows = stmt.query([after_seq as i64])?;
    while let Some(r) = rows.next()? {
        // Text columns read as `&str`, exactly as `String` would read them (a NULL or a
        // blob is an error either way).
        let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
        let e = EntryRef {
            seq: r.get::<_, i64>(0)? as u64,
            at: text(1)?,
            actor: text(2)?,
            action: text(3)?,
            subject: text(4)?,
            details: text(5)?,
            prev_hash: text(6)?,
            hash: text(7)?,
        };
        if !f(e) {
            break;
        }
    }
    Ok(())
}

/// The text columns of one row (`at`, `actor`, `action`, `subject`, `details`,
/// `prev_hash`, `hash`) as SQLite holds them, not yet checked as UTF-8.
pub type RawColumns<'a> = [&'a [u8]; 7];

/// Walk the log in `seq` order like [`for_each_ref_after`], handing over the text
/// columns as bytes: the UTF-8 check ([`text`]) can then run elsewhere (on the
/// verifier's hashing thread). A column that is NULL or a blob is the same error as
/// in [`for_each_ref_after`], and so is an invalid UTF-8 column before it in the row.
pub fn for_each_raw_after(
    conn: &Connection,
    after_seq: u64,
    mut f: impl FnMut(u64, RawColumns<'_>) -> bool,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq"))?;
    let mut rows = stmt.query([after_seq as i64])?;
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)? as u64;
        let mut cols: RawColumns<'_> = [&[][..]; 7];
        for i in 0..cols.len() {
            match r.get_ref(i + 1)? {
                ValueRef::Text(t) => cols[i] = t,
                other => {
                    // Read as `&str` column by column, the first bad column decides.
                    for earlier in &cols[..i] {
                        text(earlier)?;
                    }
                    other.as_str().map_err(rusqlite::Error::from)?;
                }
            }
        }
        if !f(seq, cols) {
            break;
        }
    }
    Ok(())
}

/// A text column read by [`for_each_raw_after`], checked as UTF-8: the same check and
/// the same error as reading it as `&str`.
pub fn text(bytes: &[u8]) -> Result<&str, rusqlite::Error> {
    Ok(ValueRef::Text(bytes).as_str()?)
}

pub fn count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.row("SELECT count(*) FROM audit_log", [], |r| r.get::<_, i64>(0))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, f: &AuditFilter) -> String {
        let (sql, args) = list_query(f, 100);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn action_prefix_and_since_filters_read_an_index_and_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let t0 = time::macros::datetime!(2026-11-21 14:00:00 UTC);
        for (i, action) in
            ["secret.deposited", "secretive.thing", "custodian.login", "secret.deposited"].iter().enumerate()
        {
            append(&conn, t0 + time::Duration::hours(i as i64), "host:cli", action, "vault", &serde_json::json!({}))
                .unwrap();
        }
        let prefix = AuditFilter { action_prefix: Some("secret.".into()), ..AuditFilter::default() };
        let since = AuditFilter { since: Some("2026-11-21T15:00:00.000Z".into()), ..AuditFilter::default() };
        for (f, index) in [(&prefix, "audit_log_by_action"), (&since, "audit_log_by_at")] {
            let p = plan(&conn, f);
            assert!(!p.contains("SCAN audit_log"), "{p}");
            assert!(p.contains(index), "{p}");
        }
        let seqs = |f: &AuditFilter| list(&conn, f, 100).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&prefix), vec![1, 4], "`secretive.` is not `secret.`");
        assert_eq!(seqs(&since), vec![2, 3, 4]);
        let newest = AuditFilter { newest_first: true, ..since.clone() };
        assert_eq!(seqs(&newest), vec![4, 3, 2]);
        let later = AuditFilter { since: Some("2027-01-01T00:00:00.000Z".into()), ..AuditFilter::default() };
        assert!(seqs(&later).is_empty());
    }

    #[test]
    fn a_deep_page_and_a_persons_entries_are_keyset_reads_not_scans() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let t0 = time::macros::datetime!(2026-11-21 14:00:00 UTC);
        for i in 0..300u64 {
            let (actor, subject) = match i % 3 {
                0 => ("custodian:ann", "account:1"),
                1 => ("custodian:bo", "custodian:ann"),
                _ => ("system", "account:2"),
            };
            append(
                &conn,
                t0 + time::Duration::seconds(i as i64),
                actor,
                "custodian.login",
                subject,
                &serde_json::json!({}),
            )
            .unwrap();
        }
        let deep = AuditFilter { before_seq: Some(40), newest_first: true, ..AuditFilter::default() };
        let ann = AuditFilter { person: Some("custodian:ann".into()), ..deep.clone() };
        for f in [&deep, &ann] {
            let (sql, _) = list_query(f, 100);
            assert!(!sql.contains("OFFSET"), "{sql}");
            let p = plan(&conn, f);
            assert!(!p.contains("SCAN audit_log"), "{p}");
        }
        assert!(plan(&conn, &ann).contains("audit_log_by_actor") && plan(&conn, &ann).contains("audit_log_by_subject"));
        let seqs = |f: &AuditFilter, n| list(&conn, f, n).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&deep, 3), vec![39, 38, 37]);
        // Ann acted (seq 1, 4, …) and was acted on (seq 2, 5, …): both, newest first, once each.
        assert_eq!(seqs(&ann, 5), vec![38, 37, 35, 34, 32]);
        let all_ann = AuditFilter { before_seq: None, ..ann.clone() };
        assert_eq!(seqs(&all_ann, 1000).len(), 200);
    }
}
