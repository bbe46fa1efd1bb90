//! The audit log's hash chain, checked on a second thread while the calling thread
//! reads SQLite and replays.
//!
//! The calling thread copies rows out of SQLite into batches (at most [`BATCH_ROWS`]
//! rows or about [`BATCH_BYTES`] bytes each, and never more than [`BATCHES`] of them
//! in flight, so memory stays bounded whatever the log's length) and hands them to the
//! hashing thread, which checks each row's UTF-8, `seq`, link and hash in order with
//! one [`ChainVerifier`] and gives the batch back with how many of its rows verified.
//! The hashing thread also runs a caller-given `prepare` step on each verified entry
//! (the replay parses `details` there), whose result travels back with the batch.
//! The calling thread then replays exactly those rows, in `seq` order, and stops at the
//! first batch that ends in a break or an error. One thread checks the chain in order
//! and the other replays in order, so the first problem reported is the one a
//! single-threaded walk reports, at the same `seq`.
use std::sync::mpsc;

use crate::{
    domain::audit::{ChainBreak, ChainVerifier, EntryRef},
    error::AppError,
    store::{
        StoreError,
        audit::{self, RawColumns},
    },
};

/// Rows per batch.
const BATCH_ROWS: usize = 512;
/// A batch is handed over once it holds this many bytes (one long row may exceed it).
const BATCH_BYTES: usize = 512 * 1024;
/// Batches in flight between the two threads (each direction's channel holds them all,
/// so neither thread ever blocks on a send).
const BATCHES: usize = 4;

/// Where one row's columns lie in its batch's bytes.
struct RowAt {
    seq: u64,
    start: usize,
    /// End of each column (`at`, `actor`, `action`, `subject`, `details`, `prev_hash`,
    /// `hash`); each starts where the previous one ends, the first at `start`.
    ends: [usize; 7],
}

impl RowAt {
    fn column(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { self.start } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    fn entry<'a>(&self, text: &'a str) -> Option<EntryRef<'a>> {
        let col = |i: usize| text.get(self.column(i));
        Some(EntryRef {
            seq: self.seq,
            at: col(0)?,
            actor: col(1)?,
            action: col(2)?,
            subject: col(3)?,
            details: col(4)?,
            prev_hash: col(5)?,
            hash: col(6)?,
        })
    }
}

/// Rows as read from SQLite, on their way to the hashing thread.
struct Filled<P> {
    bytes: Vec<u8>,
    rows: Vec<RowAt>,
    /// Reading the log failed after the last of these rows.
    read_error: Option<StoreError>,
    /// Empty, with its capacity kept, for the hashing thread to fill.
    prepared: Vec<P>,
}

impl<P> Default for Filled<P> {
    fn default() -> Self {
        Self { bytes: Vec::new(), rows: Vec::new(), read_error: None, prepared: Vec::new() }
    }
}

impl<P> Filled<P> {
    fn push(&mut self, seq: u64, cols: RawColumns<'_>) {
        let start = self.bytes.len();
        let mut ends = [0; 7];
        for (end, col) in ends.iter_mut().zip(cols) {
            self.bytes.extend_from_slice(col);
            *end = self.bytes.len();
        }
        self.rows.push(RowAt { seq, start, ends });
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS || self.bytes.len() >= BATCH_BYTES
    }
}

/// Why the walk ends inside a batch.
enum Stop {
    Broken(ChainBreak),
    Failed(AppError),
}

/// A batch back from the hashing thread: `rows[..verified]` verified, in order, and
/// `prepared[i]` is what `prepare` made of row `i`.
struct Checked<P> {
    text: String,
    rows: Vec<RowAt>,
    verified: usize,
    prepared: Vec<P>,
    stop: Option<Stop>,
}

/// Walk the whole log in `seq` order, calling `f` on each entry whose chain verifies
/// (its UTF-8, its `seq`, its link to the previous entry and its hash) with what
/// `prepare` (run on the hashing thread, in order) made of it, until `f` returns
/// `false` or the chain breaks. Returns the verifier (its size and head are
/// the verified prefix's, unless `f` stopped the walk) and the first break, if any. A
/// row that cannot be read is an error, reported in `seq` order like a break: only
/// when every entry before it verified.
pub fn for_each_verified<P: Send>(
    conn: &rusqlite::Connection,
    prepare: impl Fn(&EntryRef<'_>) -> P + Send,
    f: impl FnMut(EntryRef<'_>, P) -> bool,
) -> Result<(ChainVerifier, Option<ChainBreak>), AppError> {
    std::thread::scope(|scope| {
        let (to_check, checking) = mpsc::sync_channel::<Filled<P>>(BATCHES);
        let (to_replay, checked) = mpsc::sync_channel::<Checked<P>>(BATCHES);
        let worker = std::thread::Builder::new()
            .name("audit-hash".into())
            .spawn_scoped(scope, move || check_batches(checking, to_replay, prepare))
            .map_err(|e| AppError::Internal(format!("cannot start the audit hashing thread: {e}")))?;
        let mut feeder = Feeder {
            to_check,
            checked,
            spare: (1..BATCHES).map(|_| Filled::default()).collect(),
            current: Filled::default(),
            in_flight: 0,
            f,
            done: None,
        };
        let read = audit::for_each_raw_after(conn, 0, |seq, cols| {
            feeder.current.push(seq, cols);
            if feeder.current.is_full() {
                feeder.hand_over();
            }
            feeder.done.is_none()
        });
        if feeder.done.is_none() {
            feeder.current.read_error = read.err();
            feeder.hand_over();
        }
        while feeder.done.is_none() && feeder.in_flight > 0 {
            feeder.receive_one();
        }
        let Feeder { to_check, checked, done, .. } = feeder;
        // The hashing thread ends once it sees no more batches can come.
        drop(to_check);
        drop(checked);
        let verifier = worker.join().map_err(|_| AppError::Internal("the audit hashing thread stopped".into()))?;
        match done {
            Some(Done::Failed(e)) => Err(e),
            Some(Done::Broken(b)) => Ok((verifier, Some(b))),
            Some(Done::Stopped) | None => Ok((verifier, None)),
        }
    })
}

/// Why the calling thread stopped replaying.
enum Done {
    /// `f` returned `false`.
    Stopped,
    Broken(ChainBreak),
    Failed(AppError),
}

/// The calling thread's side: fills batches, hands them over, replays what comes back.
struct Feeder<P, F> {
    to_check: mpsc::SyncSender<Filled<P>>,
    checked: mpsc::Receiver<Checked<P>>,
    /// Empty batches ready to fill (with their buffers' capacity kept).
    spare: Vec<Filled<P>>,
    current: Filled<P>,
    /// Batches handed over and not yet replayed (≤ [`BATCHES`]).
    in_flight: usize,
    f: F,
    done: Option<Done>,
}

impl<P, F: FnMut(EntryRef<'_>, P) -> bool> Feeder<P, F> {
    /// Hand the current batch to the hashing thread and take an empty one, replaying
    /// a checked batch first when none is spare.
    fn hand_over(&mut self) {
        let next = match self.spare.pop() {
            Some(b) => b,
            None => {
                self.receive_one();
                self.spare.pop().unwrap_or_default()
            }
        };
        let batch = std::mem::replace(&mut self.current, next);
        if self.done.is_some() {
            return;
        }
        if batch.rows.is_empty() && batch.read_error.is_none() {
            self.spare.push(batch);
            return;
        }
        match self.to_check.send(batch) {
            Ok(()) => self.in_flight += 1,
            Err(_) => self.done = Some(Done::Failed(AppError::Internal("the audit hashing thread stopped".into()))),
        }
    }

    /// Wait for the next checked batch and replay its verified rows.
    fn receive_one(&mut self) {
        let Ok(batch) = self.checked.recv() else {
            self.done = Some(Done::Failed(AppError::Internal("the audit hashing thread stopped".into())));
            return;
        };
        self.in_flight -= 1;
        let Checked { text, mut rows, verified, mut prepared, stop } = batch;
        for (row, p) in rows.iter().take(verified).zip(prepared.drain(..)) {
            let Some(e) = row.entry(&text) else {
                self.done = Some(Done::Failed(AppError::Internal("an audit batch came back misaligned".into())));
                break;
            };
            if !(self.f)(e, p) {
                self.done = Some(Done::Stopped);
                break;
            }
        }
        if self.done.is_none() {
            match stop {
                Some(Stop::Broken(b)) => self.done = Some(Done::Broken(b)),
                Some(Stop::Failed(e)) => self.done = Some(Done::Failed(e)),
                None => {}
            }
        }
        let mut bytes = text.into_bytes();
        bytes.clear();
        rows.clear();
        prepared.clear();
        self.spare.push(Filled { bytes, rows, read_error: None, prepared });
    }
}

/// The hashing thread: checks batches in order until the chain breaks, then passes
/// the rest back unchecked. Ends when the calling thread stops sending.
fn check_batches<P>(
    batches: mpsc::Receiver<Filled<P>>,
    back: mpsc::SyncSender<Checked<P>>,
    prepare: impl Fn(&EntryRef<'_>) -> P,
) -> ChainVerifier {
    let mut v = ChainVerifier::default();
    let mut stopped = false;
    for batch in batches {
        let checked = if stopped {
            Checked { text: String::new(), rows: batch.rows, verified: 0, prepared: batch.prepared, stop: None }
        } else {
            check(&mut v, batch, &prepare)
        };
        stopped |= checked.stop.is_some();
        if back.send(checked).is_err() {
            break;
        }
    }
    v
}

fn check<P>(v: &mut ChainVerifier, batch: Filled<P>, prepare: &impl Fn(&EntryRef<'_>) -> P) -> Checked<P> {
    let Filled { bytes, rows, read_error, mut prepared } = batch;
    let (text, readable, mut stop) = into_text(bytes, &rows);
    let mut verified = 0;
    for row in rows.iter().take(readable) {
        let Some(e) = row.entry(&text) else {
            stop = Some(Stop::Failed(AppError::Internal("an audit batch is misaligned".into())));
            break;
        };
        if let Err(b) = v.push(e) {
            stop = Some(Stop::Broken(b));
            break;
        }
        prepared.push(prepare(&e));
        verified += 1;
    }
    if verified == rows.len() {
        stop = read_error.map(|e| Stop::Failed(e.into()));
    }
    Checked { text, rows, verified, prepared, stop }
}

/// The batch's bytes as text, with how many leading rows are readable (every column
/// valid UTF-8) and, when one is not, the error reading it as `&str` gives.
fn into_text(bytes: Vec<u8>, rows: &[RowAt]) -> (String, usize, Option<Stop>) {
    // Valid as a whole and cut only at character boundaries means every column is
    // valid on its own (a column cut inside a character is not).
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => {
            let on_boundaries = rows
                .iter()
                .all(|r| (0..7).all(|i| text.is_char_boundary(r.column(i).start)) && text.is_char_boundary(r.ends[6]));
            if on_boundaries {
                return (text, rows.len(), None);
            }
            text.into_bytes()
        }
        Err(e) => e.into_bytes(),
    };
    // Find the first unreadable column the way a row-by-row reader would.
    for (n, row) in rows.iter().enumerate() {
        let unreadable = (0..7).find_map(|i| bytes.get(row.column(i)).and_then(|col| audit::text(col).err()));
        if let Some(err) = unreadable {
            let mut bytes = bytes;
            bytes.truncate(row.start);
            return match String::from_utf8(bytes) {
                Ok(text) => (text, n, Some(Stop::Failed(StoreError::from(err).into()))),
                Err(_) => (String::new(), 0, Some(Stop::Failed(StoreError::from(err).into()))),
            };
        }
    }
    (String::new(), 0, Some(Stop::Failed(AppError::Internal("an audit batch is not text".into()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of `n` entries, several batches long.
    fn log(n: u64) -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let t0 = time::macros::datetime!(2026-11-21 14:00:00 UTC);
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..n {
            let details = serde_json::json!({"checkout": format!("c{i}"), "n": i});
            audit::append(&tx, t0, "custodian:ada", "checkout.cancelled", "account:123456789012", &details).unwrap();
        }
        tx.commit().unwrap();
        conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
        (dir, conn)
    }

    type Outcome = Result<(u64, [u8; 32], Option<ChainBreak>, Vec<u64>), String>;

    /// The single-threaded walk this module must agree with.
    fn one_thread(conn: &rusqlite::Connection, stop_after: u64) -> Outcome {
        let mut v = ChainVerifier::default();
        let (mut broken, mut seen) = (None, Vec::new());
        audit::for_each_ref_after(conn, 0, |e| match v.push(e) {
            Ok(()) => {
                seen.push(e.seq);
                e.seq < stop_after
            }
            Err(b) => {
                broken = Some(b);
                false
            }
        })
        .map_err(|e| e.to_string())?;
        Ok((v.size(), v.head(), broken, seen))
    }

    fn two_threads(conn: &rusqlite::Connection, stop_after: u64) -> Outcome {
        let mut seen = Vec::new();
        let (v, broken) = for_each_verified(
            conn,
            |e| e.seq * 2,
            |e, prepared| {
                assert_eq!(prepared, e.seq * 2, "prepared on the hashing thread for this very entry");
                seen.push(e.seq);
                e.seq < stop_after
            },
        )
        .map_err(|e| e.to_string())?;
        Ok((v.size(), v.head(), broken, seen))
    }

    #[test]
    fn a_log_of_many_batches_verifies_exactly_as_one_thread_walks_it() {
        let n = 3 * BATCH_ROWS as u64 + 7;
        let (_dir, conn) = log(n);
        let expected = one_thread(&conn, u64::MAX).unwrap();
        assert_eq!(expected.0, n);
        assert_eq!(expected.2, None);
        assert_eq!(two_threads(&conn, u64::MAX), Ok(expected));
    }

    #[test]
    fn the_first_break_in_seq_order_is_reported_wherever_it_falls_in_a_batch() {
        let b = BATCH_ROWS as i64;
        // Two edits in different batches, on both sides of a batch boundary, a deleted
        // row, an edited link: the lowest seq is reported, and nothing after it replays.
        for sql in [
            format!("UPDATE audit_log SET details = '{{}}' WHERE seq IN ({}, {})", b + 3, 3 * b),
            format!("UPDATE audit_log SET actor = 'x' WHERE seq IN ({b}, {})", b + 1),
            format!("UPDATE audit_log SET actor = 'x' WHERE seq = {}", b + 1),
            format!("DELETE FROM audit_log WHERE seq = {}", 2 * b),
            format!("UPDATE audit_log SET prev_hash = upper(prev_hash) WHERE seq = {}", 2 * b + 5),
            "UPDATE audit_log SET hash = 'x' WHERE seq = 1".to_owned(),
        ] {
            let (_dir, conn) = log(3 * BATCH_ROWS as u64 + 7);
            conn.execute_batch(&sql).unwrap();
            let expected = one_thread(&conn, u64::MAX).unwrap();
            assert!(expected.2.is_some(), "{sql}");
            assert_eq!(two_threads(&conn, u64::MAX), Ok(expected), "{sql}");
        }
    }

    #[test]
    fn an_unreadable_row_is_the_same_error_and_only_when_no_break_comes_first() {
        let b = BATCH_ROWS as i64;
        for sql in [
            // Invalid UTF-8 in one column.
            format!("UPDATE audit_log SET actor = CAST(X'C328' AS TEXT) WHERE seq = {}", b + 9),
            // Two columns that are each invalid but valid once joined (€ cut in two).
            format!(
                "UPDATE audit_log SET actor = CAST(X'61E282' AS TEXT), action = CAST(X'AC62' AS TEXT) WHERE seq = {}",
                2 * b - 1
            ),
            // (The table is STRICT: a NULL or a blob cannot be stored in a text column.)
            format!("UPDATE audit_log SET details = CAST(X'7BFE' AS TEXT), at = CAST(X'FF' AS TEXT) WHERE seq = {}", b),
            format!("UPDATE audit_log SET hash = CAST(X'80' AS TEXT) WHERE seq = {}", 3 * b + 7),
        ] {
            let (_dir, conn) = log(3 * BATCH_ROWS as u64 + 7);
            conn.execute_batch(&sql).unwrap();
            let expected = one_thread(&conn, u64::MAX);
            assert!(expected.is_err(), "{sql}: {expected:?}");
            assert_eq!(two_threads(&conn, u64::MAX), expected, "{sql}");
            // An edit earlier in the log is reported instead of the unreadable row.
            conn.execute_batch(&format!("UPDATE audit_log SET actor = 'x' WHERE seq = {}", b - 5)).unwrap();
            let expected = one_thread(&conn, u64::MAX).unwrap();
            assert_eq!(expected.2.as_ref().map(ChainBreak::seq), Some(b as u64 - 5), "{sql}");
            assert_eq!(two_threads(&conn, u64::MAX), Ok(expected), "{sql}");
        }
    }

    #[test]
    fn the_walk_stops_where_the_caller_says() {
        let (_dir, conn) = log(2 * BATCH_ROWS as u64);
        let stopped = two_threads(&conn, 700).unwrap();
        assert_eq!(stopped.3, (1..=700).collect::<Vec<_>>());
        let (_dir, empty) = log(0);
        assert_eq!(two_threads(&empty, u64::MAX), one_thread(&empty, u64::MAX));
    }
}
