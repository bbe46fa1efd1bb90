//! The audit log's hash chain (docs/audit-log.md is the normative description).
//!
//! `hash = SHA-256("breakglass/audit/v1" ‖ u64be(seq) ‖ u64be(32) ‖ prev_hash ‖
//! u64be(len at) ‖ at ‖ u64be(len actor) ‖ actor ‖ u64be(len action) ‖ action ‖
//! u64be(len subject) ‖ subject ‖ u64be(len details) ‖ details)`; the first entry's
//! `prev_hash` is 32 zero bytes.
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

pub const DOMAIN: &[u8] = b"breakglass/audit/v1";
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

const AT_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The `at` field: UTC, millisecond precision, fixed width (`2026-11-21T14:17:41.123Z`).
pub fn format_at(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(AT_FORMAT).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// Canonical JSON text (sorted keys, no whitespace), hashed as stored.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// One entry borrowed from the row being read: what verification walks, with no copy
/// of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub seq: u64,
    pub at: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub details: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

impl<'a> From<&'a AuditEntry> for EntryRef<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: &e.at,
            actor: &e.actor,
            action: &e.action,
            subject: &e.subject,
            details: &e.details,
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        }
    }
}

pub fn entry_hash(
    seq: u64,
    prev_hash: &[u8; 32],
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    details: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seq.to_be_bytes());
    for field in [
        prev_hash.as_slice(),
        at.as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        subject.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}

/// Canonical JSON for `details`: object keys sorted (serde_json's default map is a
/// `BTreeMap`), no insignificant whitespace.
pub fn canonical_details(v: &serde_json::Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

/// Keys sorted by their UTF-8 bytes at every level, explicitly: `serde_json::Map`
/// keeps insertion order when any crate in the build enables serde_json's
/// `preserve_order` feature, so the map's own order cannot be relied on.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Sequence numbers are not 1, 2, 3, … (a row deleted or inserted).
    SequenceGap { expected: u64, found: u64 },
    /// `prev_hash` is not the previous entry's `hash` (rows reordered or removed).
    PrevHashMismatch { seq: u64 },
    /// The stored hash does not match the entry's contents (a row edited).
    HashMismatch { seq: u64 },
    /// A hash field is not 64 lowercase hex characters.
    MalformedHash { seq: u64 },
}

impl ChainBreak {
    pub fn seq(&self) -> u64 {
        match self {
            ChainBreak::SequenceGap { expected, .. } => *expected,
            ChainBreak::PrevHashMismatch { seq }
            | ChainBreak::HashMismatch { seq }
            | ChainBreak::MalformedHash { seq } => *seq,
        }
    }
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::SequenceGap { expected, found } => {
                write!(
                    f,
                    "audit log broken at seq {expected}: expected seq {expected}, found {found} (an entry was deleted or inserted)"
                )
            }
            ChainBreak::PrevHashMismatch { seq } => {
                write!(
                    f,
                    "audit log broken at seq {seq}: prev_hash does not match the hash of seq {} (entries were removed or reordered)",
                    seq.saturating_sub(1)
                )
            }
            ChainBreak::HashMismatch { seq } => {
                write!(f, "audit log broken at seq {seq}: its contents do not match its hash (the entry was edited)")
            }
            ChainBreak::MalformedHash { seq } => {
                write!(f, "audit log broken at seq {seq}: a hash is not 64 hex characters")
            }
        }
    }
}

/// Streaming verifier: feed entries in `seq` order.
///
/// Hashes are compared as bytes: the previous hash is kept both raw (to hash the next
/// entry) and as its lowercase hex text (to compare with the stored `prev_hash`), and
/// the computed hash is hex-encoded once and compared with the stored `hash`. Nothing
/// is hex-decoded, and upper-case or malformed hex simply does not match.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev: [u8; 32],
    prev_hex: [u8; 64],
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::resume(0, GENESIS_PREV_HASH)
    }
}

/// Lowercase hex of a hash, without allocating.
pub fn hex64(h: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn is_hash_text(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ChainVerifier {
    /// Continue a chain already verified up to entry `size` whose hash is `head`
    /// (`0` and the genesis value for a fresh start).
    pub fn resume(size: u64, head: [u8; 32]) -> Self {
        Self { next_seq: size + 1, prev: head, prev_hex: hex64(&head) }
    }

    pub fn push<'a>(&mut self, e: impl Into<EntryRef<'a>>) -> Result<(), ChainBreak> {
        let e = e.into();
        if e.seq != self.next_seq {
            return Err(ChainBreak::SequenceGap { expected: self.next_seq, found: e.seq });
        }
        if e.prev_hash.as_bytes() != self.prev_hex {
            return Err(if is_hash_text(e.prev_hash) {
                ChainBreak::PrevHashMismatch { seq: e.seq }
            } else {
                ChainBreak::MalformedHash { seq: e.seq }
            });
        }
        let computed = entry_hash(e.seq, &self.prev, e.at, e.actor, e.action, e.subject, e.details);
        let computed_hex = hex64(&computed);
        if e.hash.as_bytes() != computed_hex {
            return Err(if is_hash_text(e.hash) {
                ChainBreak::HashMismatch { seq: e.seq }
            } else {
                ChainBreak::MalformedHash { seq: e.seq }
            });
        }
        self.prev = computed;
        self.prev_hex = computed_hex;
        self.next_seq += 1;
        Ok(())
    }

    /// Number of entries verified so far.
    pub fn size(&self) -> u64 {
        self.next_seq - 1
    }

    /// Hash of the last verified entry (the genesis value when empty).
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev: [u8; 32], action: &str) -> AuditEntry {
        let at = "2026-11-21T14:00:00.000Z";
        let details = canonical_details(&serde_json::json!({"b": 1, "a": {"z": true, "y": null}}));
        let h = entry_hash(seq, &prev, at, "custodian:ada", action, "account:123456789012", &details);
        AuditEntry {
            seq,
            at: at.into(),
            actor: "custodian:ada".into(),
            action: action.into(),
            subject: "account:123456789012".into(),
            details,
            prev_hash: hex::encode(prev),
            hash: hex::encode(h),
        }
    }

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_PREV_HASH;
        (1..=n)
            .map(|seq| {
                let e = entry(seq, prev, "account.created");
                hex::decode_to_slice(&e.hash, &mut prev).unwrap();
                e
            })
            .collect()
    }

    #[test]
    fn canonical_details_sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canonical_details(&serde_json::json!({"b": 1, "a": {"z": true, "y": null}})),
            r#"{"a":{"y":null,"z":true},"b":1}"#
        );
    }

    #[test]
    fn worked_test_vector_matches_the_documented_value() {
        // This vector is printed in docs/audit-log.md; change both together.
        let h = entry_hash(
            1,
            &GENESIS_PREV_HASH,
            "2026-11-21T14:00:00.000Z",
            "host:cli",
            "invite.created",
            "invite:7d0f3c1e-0000-4000-8000-000000000001",
            r#"{"expires_at":"2026-11-24T14:00:00Z","roles":["admin","custodian"]}"#,
        );
        assert_eq!(hex::encode(h), include_str!("../../docs/audit-vector.sha256").trim());
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let mut v = ChainVerifier::default();
        for e in chain(5) {
            v.push(&e).unwrap();
        }
        assert_eq!(v.size(), 5);
    }

    #[test]
    fn edited_deleted_and_swapped_entries_are_found_at_the_right_seq() {
        let mut edited = chain(5);
        edited[2].details = r#"{"a":2}"#.into();
        let mut v = ChainVerifier::default();
        let err = edited.iter().try_for_each(|e| v.push(e)).unwrap_err();
        assert_eq!(err, ChainBreak::HashMismatch { seq: 3 });

        let mut deleted = chain(5);
        deleted.remove(1);
        let mut v = ChainVerifier::default();
        let err = deleted.iter().try_for_each(|e| v.push(e)).unwrap_err();
        assert_eq!(err.seq(), 2);

        // Swap contents but keep seq numbers in order: the chain link breaks at 2.
        let mut swapped = chain(5);
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = AuditEntry { seq: 2, ..b };
        swapped[2] = AuditEntry { seq: 3, ..a };
        let mut v = ChainVerifier::default();
        let err = swapped.iter().try_for_each(|e| v.push(e)).unwrap_err();
        assert_eq!(err.seq(), 2);
    }

    #[test]
    fn upper_case_or_short_hashes_are_malformed_and_a_resumed_chain_continues() {
        let mut upper = chain(3);
        upper[1].hash = upper[1].hash.to_uppercase();
        let mut v = ChainVerifier::default();
        let err = upper.iter().try_for_each(|e| v.push(e)).unwrap_err();
        assert_eq!(err, ChainBreak::MalformedHash { seq: 2 });

        let c = chain(5);
        let mut head = [0u8; 32];
        hex::decode_to_slice(&c[2].hash, &mut head).unwrap();
        let mut v = ChainVerifier::resume(3, head);
        v.push(&c[3]).unwrap();
        v.push(&c[4]).unwrap();
        assert_eq!(v.size(), 5);
        let mut wrong = ChainVerifier::resume(2, head);
        assert_eq!(wrong.push(&c[3]), Err(ChainBreak::SequenceGap { expected: 3, found: 4 }));
    }

    #[test]
    fn length_prefixes_make_field_boundaries_unambiguous() {
        let a = entry_hash(1, &GENESIS_PREV_HASH, "t", "ab", "c", "s", "{}");
        let b = entry_hash(1, &GENESIS_PREV_HASH, "t", "a", "bc", "s", "{}");
        assert_ne!(a, b);
    }

    #[test]
    fn at_has_fixed_millisecond_format() {
        let t = time::macros::datetime!(2026-11-21 14:17:41.123456 UTC);
        assert_eq!(format_at(t), "2026-11-21T14:17:41.123Z");
    }
}
