//! Reading and verifying the audit log.
use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{App, audit_chain};
use crate::{
    crypto::evidence::{self, AssertionEvidence, PublicKeyRecord},
    domain::audit::{AuditEntry, ChainBreak, EntryRef},
    error::AppError,
    store::{
        StoreError,
        audit::{self, AuditFilter},
        checkouts, outbox,
    },
};

pub const MAX_PAGE: u32 = 1000;

/// The checkpoint high-water file in the data directory (see app/announce.rs).
pub const HIGH_WATER_FILE: &str = "checkpoint-high-water";

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` to get the next page; absent on the last page.
    pub next_after_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// The chain verifies, every approval's evidence verifies, and the checkpoints and
    /// the high-water mark agree with the log.
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last verified entry.
    pub head: String,
    /// The first broken entry, when the chain does not verify.
    pub broken_at_seq: Option<u64>,
    pub problem: Option<String>,
    /// WebAuthn assertions (approvals, denials, releases) checked offline.
    pub approvals_checked: u64,
    /// Every other problem found, each starting with `seq N:` (the entry it is about).
    pub approval_problems: Vec<String>,
    /// Signed checkpoints in the `checkpoints` table checked against the log.
    pub checkpoints_checked: u64,
    /// Things that do not make the log wrong but deserve a look (missing triggers).
    pub warnings: Vec<String>,
}

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 200;

/// Verify on an open connection (streaming). See [`verify_log`].
pub fn verify_chain(conn: &rusqlite::Connection) -> Result<ChainStatus, AppError> {
    verify_log(conn, None)
}

/// Verify the whole chain on an open connection (streaming), replaying the log to
/// check every WebAuthn assertion it records (docs/audit-log.md, "Verifying
/// evidence"), the `approvals` table beside it, every signed checkpoint the database
/// keeps, and the checkpoint high-water file when its path is given. Memory is bounded
/// by the open checkouts, the credentials and the people — not by the log's length.
pub fn verify_log(conn: &rusqlite::Connection, high_water: Option<&Path>) -> Result<ChainStatus, AppError> {
    verify_log_focused(conn, high_water, None).map(|(status, _)| status)
}

/// What the replay found about the entries of one checkout (its story page): the
/// assertions it checked and every problem it found on them, unabridged.
#[derive(Debug, Clone, Default)]
pub struct FocusReport {
    /// `seq` of each entry whose WebAuthn assertion was checked.
    pub checked: Vec<u64>,
    /// Problems found on this checkout's entries, with their `seq`.
    pub problems: Vec<(u64, String)>,
}

/// [`verify_log`], also reporting on the entries of checkout `focus`: the same replay,
/// so a story page shows exactly what `audit verify` concludes about each signature.
pub fn verify_log_focused(
    conn: &rusqlite::Connection,
    high_water: Option<&Path>,
    focus: Option<&str>,
) -> Result<(ChainStatus, FocusReport), AppError> {
    let mut replay = Replay::new(outbox::log_key(conn)?);
    replay.focus = focus.map(str::to_owned);
    let mut approvals_stmt = checkouts::approvals_in_log_order(conn)?;
    let mut approvals = approvals_stmt.query([])?;
    let mut checkpoints_stmt = outbox::checkpoints_in_order(conn)?;
    let mut checkpoints = checkpoints_stmt.query([])?;
    let mut side_error: Option<rusqlite::Error> = None;
    let mut next_checkpoint = read_checkpoint(&mut checkpoints)?;
    // The chain is checked on a second thread; this one replays each entry that verified.
    // `details` is parsed there too (`Prepared`, offsets into the entry's text).
    let (v, broken) = audit_chain::for_each_verified(conn, prepare, |e, details| {
        let mut next_approval = || approvals.next().and_then(|r| r.map(checkouts::approval_from_row).transpose());
        if let Err(err) = replay.observe(&e, details, &mut next_approval) {
            side_error = Some(err);
            return false;
        }
        while let Some(cp) = next_checkpoint.take_if(|cp| cp.0 <= e.seq) {
            replay.check_checkpoint(&cp, e.seq, e.hash);
            match read_checkpoint(&mut checkpoints) {
                Ok(next) => next_checkpoint = next,
                Err(err) => {
                    side_error = Some(err);
                    return false;
                }
            }
        }
        true
    })?;
    if let Some(err) = side_error {
        return Err(StoreError::from(err).into());
    }
    let size = v.size();
    if broken.is_none() {
        // Whatever is left beside a complete log is not in it.
        if let Some(row) = replay.pending_approval.take() {
            replay.problem(
                size,
                format!("approvals row {} (checkout {}) is not in the audit log", row.id, row.checkout_id),
            );
        }
        while let Some(row) = approvals.next()?.map(checkouts::approval_from_row).transpose()? {
            replay.problem(
                size,
                format!("approvals row {} (checkout {}) is not in the audit log", row.id, row.checkout_id),
            );
        }
        while let Some(cp) = next_checkpoint {
            replay.problem(
                size,
                format!(
                    "the checkpoint signed at size {} commits to more entries than the log has ({size}): the log was truncated",
                    cp.0
                ),
            );
            next_checkpoint = read_checkpoint(&mut checkpoints)?;
        }
    }
    for (seq, challenge) in std::mem::take(&mut replay.suspects) {
        if let Some(first) = outbox::earlier_issue_of_challenge(conn, &challenge, seq)? {
            replay
                .problem(seq, format!("this challenge was already issued at seq {first}: a challenge is issued once"));
        }
    }
    if let Some(path) = high_water {
        replay.check_high_water(conn, path, size)?;
    }
    let mut warnings = Vec::new();
    if !outbox::audit_triggers_present(conn)? {
        warnings.push(
            "warning: the append-only triggers on audit_log are missing (someone dropped them, perhaps to edit the log): investigate"
                .to_owned(),
        );
    }
    let mut problems = std::mem::take(&mut replay.problems);
    problems.sort_by_key(|(seq, _)| *seq);
    let mut approval_problems: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();
    if replay.omitted > 0 {
        approval_problems.push(format!("… and {} more problems", replay.omitted));
    }
    let focus_report = std::mem::take(&mut replay.focus_report);
    let status = ChainStatus {
        ok: broken.is_none() && approval_problems.is_empty(),
        entries: size,
        head: hex::encode(v.head()),
        broken_at_seq: broken.as_ref().map(ChainBreak::seq),
        problem: broken.map(|b| b.to_string()),
        approvals_checked: replay.checked,
        approval_problems,
        checkpoints_checked: replay.checkpoints_checked,
        warnings,
    };
    Ok((status, focus_report))
}

fn read_checkpoint(rows: &mut rusqlite::Rows<'_>) -> Result<Option<(u64, String, String)>, rusqlite::Error> {
    rows.next()?.map(|r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))).transpose()
}

/// A credential's public key and whose it is, as the log recorded at enrolment.
struct EnrolledKey {
    owner: String,
    key: PublicKeyRecord,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Approve,
    Release,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Approve => "an approval",
            Purpose::Release => "a release",
        }
    }
}

/// A challenge the log shows was issued to an actor for a checkout.
struct Issued {
    seq: u64,
    actor: String,
    purpose: Purpose,
    challenge: String,
    rp_id: String,
    origin: Option<String>,
    /// The decision the challenge was issued for, when the entry names one.
    decision: Option<String>,
    /// The entry whose evidence used it (a challenge is used once).
    used_at: Option<u64>,
}

/// What the log says about one open checkout, replayed; dropped when it ends.
struct Track {
    subject: String,
    requester: String,
    required: u32,
    /// The policy's veto, as recorded in `checkout.requested` (absent in old entries).
    veto: Option<bool>,
    /// The approver set recorded in `checkout.requested` (`None`: all custodians).
    approvers: Option<HashSet<String>>,
    decided: HashSet<String>,
    approved_by: HashSet<String>,
    denied_by: HashSet<String>,
    approved: bool,
    issued: Vec<Issued>,
    /// Root-task checkouts: the policy the approvals were for (`checkout.requested`).
    task_policy: Option<String>,
    /// Root-task authorisations not yet followed by their outcome.
    authorised_pending: u32,
}

/// The parts of `details` the replay reads (everything else is skipped unparsed).
/// Strings borrow from the entry's text unless they contain escapes.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Details<'a> {
    #[serde(borrow)]
    checkout: Option<Text<'a>>,
    approvals_required: Option<u64>,
    veto: Option<bool>,
    #[serde(borrow)]
    approvers: Option<Approvers<'a>>,
    #[serde(borrow)]
    challenge: Option<Text<'a>>,
    #[serde(borrow)]
    rp_id: Option<Text<'a>>,
    #[serde(borrow)]
    origin: Option<Text<'a>>,
    #[serde(borrow)]
    decision: Option<Text<'a>>,
    #[serde(borrow)]
    comment: Option<Text<'a>>,
    evidence: Option<serde_json::Value>,
    #[serde(borrow)]
    credential_id: Option<Text<'a>>,
    public_key: Option<serde_json::Value>,
    #[serde(borrow)]
    verifier_key: Option<Text<'a>>,
    /// Root-task checkouts: the policy requested, authorised and issued.
    #[serde(borrow)]
    task_policy: Option<Text<'a>>,
}

/// `"all"`, or the listed custodian ids. Untagged enums buffer their input, so this
/// reads either form by hand, borrowing the strings.
enum Approvers<'a> {
    All(Cow<'a, str>),
    Listed(Vec<Text<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Approvers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Approvers<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"all\" or a list of custodian ids")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Approvers::All(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Approvers::All(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<Text<'a>>()? {
                    ids.push(id);
                }
                Ok(Approvers::Listed(ids))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A JSON string that borrows from the entry's text unless it has escapes (serde's
/// `Cow<str>` copies when wrapped in an `Option` or a `Vec`).
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A string of `details` as found on the hashing thread: where it lies in the entry's
/// `details` text, or its unescaped copy.
enum TextAt {
    At(std::ops::Range<usize>),
    Owned(String),
}

impl TextAt {
    fn of(details: &str, t: Text<'_>) -> Self {
        match t.0 {
            Cow::Borrowed(s) => {
                // A borrowed string is a slice of `details` (serde_json borrows from its input).
                let start = (s.as_ptr() as usize).wrapping_sub(details.as_ptr() as usize);
                match details.get(start..start.wrapping_add(s.len())) {
                    Some(same) if same.as_ptr() == s.as_ptr() => TextAt::At(start..start + s.len()),
                    _ => TextAt::Owned(s.to_owned()),
                }
            }
            Cow::Owned(s) => TextAt::Owned(s),
        }
    }

    fn text(self, details: &str) -> Option<Text<'_>> {
        match self {
            TextAt::At(range) => details.get(range).map(|s| Text(Cow::Borrowed(s))),
            TextAt::Owned(s) => Some(Text(Cow::Owned(s))),
        }
    }
}

/// [`Details`] parsed on the hashing thread, its strings as [`TextAt`] so it can
/// travel back beside the entry's text.
struct DetailsAt {
    checkout: Option<TextAt>,
    approvals_required: Option<u64>,
    veto: Option<bool>,
    approvers: Option<ApproversAt>,
    challenge: Option<TextAt>,
    rp_id: Option<TextAt>,
    origin: Option<TextAt>,
    decision: Option<TextAt>,
    comment: Option<TextAt>,
    evidence: Option<serde_json::Value>,
    credential_id: Option<TextAt>,
    public_key: Option<serde_json::Value>,
    verifier_key: Option<TextAt>,
    task_policy: Option<TextAt>,
}

enum ApproversAt {
    All(TextAt),
    Listed(Vec<TextAt>),
}

impl DetailsAt {
    fn of(details: &str, d: Details<'_>) -> Self {
        let at = |t: Option<Text<'_>>| t.map(|t| TextAt::of(details, t));
        Self {
            checkout: at(d.checkout),
            approvals_required: d.approvals_required,
            veto: d.veto,
            approvers: d.approvers.map(|a| match a {
                Approvers::All(all) => ApproversAt::All(TextAt::of(details, Text(all))),
                Approvers::Listed(ids) => {
                    ApproversAt::Listed(ids.into_iter().map(|t| TextAt::of(details, t)).collect())
                }
            }),
            challenge: at(d.challenge),
            rp_id: at(d.rp_id),
            origin: at(d.origin),
            decision: at(d.decision),
            comment: at(d.comment),
            evidence: d.evidence,
            credential_id: at(d.credential_id),
            public_key: d.public_key,
            verifier_key: at(d.verifier_key),
            task_policy: at(d.task_policy),
        }
    }

    /// The [`Details`] again, borrowing from the same `details` text.
    fn details(self, details: &str) -> Option<Details<'_>> {
        fn text(details: &str, t: Option<TextAt>) -> Option<Option<Text<'_>>> {
            match t {
                Some(t) => t.text(details).map(Some),
                None => Some(None),
            }
        }
        let approvers = match self.approvers {
            None => None,
            Some(ApproversAt::All(all)) => Some(Approvers::All(all.text(details)?.0)),
            Some(ApproversAt::Listed(ids)) => {
                Some(Approvers::Listed(ids.into_iter().map(|t| t.text(details)).collect::<Option<Vec<_>>>()?))
            }
        };
        Some(Details {
            checkout: text(details, self.checkout)?,
            approvals_required: self.approvals_required,
            veto: self.veto,
            approvers,
            challenge: text(details, self.challenge)?,
            rp_id: text(details, self.rp_id)?,
            origin: text(details, self.origin)?,
            decision: text(details, self.decision)?,
            comment: text(details, self.comment)?,
            evidence: self.evidence,
            credential_id: text(details, self.credential_id)?,
            public_key: self.public_key,
            verifier_key: text(details, self.verifier_key)?,
            task_policy: text(details, self.task_policy)?,
        })
    }
}

/// What the hashing thread made of an entry's `details`: nothing (the replay does
/// not read this action), unreadable JSON, or the parts the replay reads.
#[allow(clippy::large_enum_variant)] // Kept in reused batch vectors: a box would be allocated on one thread, freed on the other.
enum Prepared {
    Skipped,
    Unreadable,
    Read(DetailsAt),
}

/// Run on the hashing thread for each verified entry, in order.
fn prepare(e: &EntryRef<'_>) -> Prepared {
    if !REPLAYED.contains(&e.action) {
        return Prepared::Skipped;
    }
    match serde_json::from_str::<Details<'_>>(e.details) {
        Ok(d) => Prepared::Read(DetailsAt::of(e.details, d)),
        Err(_) => Prepared::Unreadable,
    }
}

/// Actions whose details the replay reads.
const REPLAYED: &[&str] = &[
    "custodian.enrolled",
    "credential.added",
    "custodian.disabled",
    "log_key.created",
    "checkout.requested",
    "approval.challenge_issued",
    "release.challenge_issued",
    "checkout.approval_recorded",
    "checkout.denial_recorded",
    "checkout.approved",
    "checkout.denied",
    "checkout.cancelled",
    "checkout.expired",
    "checkout.closed",
    "checkout.released",
    "checkout.revealed",
    "checkout.root_task_authorized",
    "checkout.root_task_issued",
    "checkout.root_task_failed",
    "account.reshared",
];

/// Replays the log in order and checks every WebAuthn assertion it records, and that
/// the checkout state machine only moved when the evidence allowed it.
struct Replay {
    keys: HashMap<String, EnrolledKey>,
    /// Per credential: the last non-decreasing signature counter seen, and where.
    counters: HashMap<String, (u32, u64)>,
    disabled: HashSet<String>,
    tracks: HashMap<String, Track>,
    /// Account subject → its open checkout (one open checkout per account).
    open_by_subject: HashMap<String, String>,
    /// The log key recorded in the chain (`log_key.created`), else the `log_key` table's.
    log_key: Option<(String, [u8; 32])>,
    table_log_key: Option<(String, [u8; 32])>,
    pending_approval: Option<checkouts::ApprovalRow>,
    /// A 64-bit fingerprint of every challenge issued (8 bytes each, the only state that
    /// grows with the log); a repeat is confirmed exactly against the database afterwards.
    issued_fingerprints: HashSet<u64>,
    suspects: Vec<(u64, String)>,
    checked: u64,
    checkpoints_checked: u64,
    problems: Vec<(u64, String)>,
    omitted: u64,
    /// The checkout reported on in detail ([`verify_log_focused`]), whether the entry
    /// being observed belongs to it, and what was found on its entries.
    focus: Option<String>,
    in_focus: bool,
    focus_report: FocusReport,
}

fn decision_of(action: &str) -> &'static str {
    if action == "checkout.approval_recorded" { "approve" } else { "deny" }
}

/// Unpadded base64url that decodes and re-encodes to itself: only alphabet
/// characters, a length that is not 1 mod 4, and zero bits after the last whole
/// byte. Checked without decoding (this runs for every challenge in the log).
fn is_canonical_b64url(s: &str) -> bool {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let Some(&last) = bytes.last() else { return false };
    if !bytes.iter().all(|&c| value(c).is_some()) {
        return false;
    }
    let unused_bits_mask = match bytes.len() % 4 {
        0 => 0,
        2 => 0b1111,
        3 => 0b11,
        _ => return false,
    };
    value(last).is_some_and(|v| v & unused_bits_mask == 0)
}

impl Replay {
    fn new(table_key: Option<outbox::LogKeyRow>) -> Self {
        let table_log_key =
            table_key.and_then(|k| <[u8; 32]>::try_from(k.public_key.as_slice()).ok().map(|pk| (k.key_name, pk)));
        Self {
            keys: HashMap::new(),
            counters: HashMap::new(),
            disabled: HashSet::new(),
            tracks: HashMap::new(),
            open_by_subject: HashMap::new(),
            log_key: None,
            table_log_key,
            pending_approval: None,
            issued_fingerprints: HashSet::new(),
            suspects: Vec::new(),
            checked: 0,
            checkpoints_checked: 0,
            problems: Vec::new(),
            omitted: 0,
            focus: None,
            in_focus: false,
            focus_report: FocusReport::default(),
        }
    }

    fn problem(&mut self, seq: u64, what: impl std::fmt::Display) {
        if self.in_focus {
            self.focus_report.problems.push((seq, what.to_string()));
        }
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push((seq, format!("seq {seq}: {what}")));
        } else {
            self.omitted += 1;
        }
    }

    fn end(&mut self, checkout: &str) {
        if let Some(t) = self.tracks.remove(checkout)
            && self.open_by_subject.get(&t.subject).is_some_and(|c| c == checkout)
        {
            self.open_by_subject.remove(&t.subject);
        }
    }

    fn observe(
        &mut self,
        e: &EntryRef<'_>,
        details: Prepared,
        next_approval: &mut dyn FnMut() -> rusqlite::Result<Option<checkouts::ApprovalRow>>,
    ) -> rusqlite::Result<()> {
        let result = self.observe_entry(e, details, next_approval);
        self.in_focus = false;
        result
    }

    /// Count one checked assertion (and note it when it is the focused checkout's).
    fn count_checked(&mut self, seq: u64) {
        self.checked += 1;
        if self.in_focus {
            self.focus_report.checked.push(seq);
        }
    }

    /// Replay one entry, its `details` parsed by [`prepare`].
    fn observe_entry(
        &mut self,
        e: &EntryRef<'_>,
        details: Prepared,
        next_approval: &mut dyn FnMut() -> rusqlite::Result<Option<checkouts::ApprovalRow>>,
    ) -> rusqlite::Result<()> {
        let parsed = match details {
            Prepared::Skipped => return Ok(()),
            Prepared::Read(d) => d.details(e.details),
            Prepared::Unreadable => None,
        };
        let d: Details = match parsed {
            Some(d) => d,
            None => {
                self.problem(e.seq, format!("the details of this {} entry are not readable", e.action));
                Details::default()
            }
        };
        let checkout: &str = d.checkout.as_deref().unwrap_or_default();
        self.in_focus = self.focus.as_deref().is_some_and(|f| !checkout.is_empty() && f == checkout);
        match e.action {
            "custodian.enrolled" | "credential.added" => {
                let cred = d.credential_id.as_deref().unwrap_or_default();
                match d.public_key.clone().map(serde_json::from_value::<PublicKeyRecord>) {
                    Some(Ok(key)) if !self.keys.contains_key(cred) => {
                        self.keys.insert(cred.to_owned(), EnrolledKey { owner: e.subject.to_owned(), key });
                    }
                    Some(Ok(_)) => {
                        self.problem(e.seq, format!("credential {cred} was already enrolled earlier in the log"))
                    }
                    _ => {}
                }
            }
            "custodian.disabled" => {
                self.disabled.insert(e.subject.to_owned());
            }
            "log_key.created" => {
                let parsed = d.verifier_key.as_deref().map(crate::crypto::checkpoint::parse_verifier_key);
                match parsed {
                    Some(Ok(k)) if self.log_key.is_none() => {
                        if self.table_log_key.as_ref().is_some_and(|t| *t != k) {
                            self.problem(
                                e.seq,
                                "the log_key table holds a different key from the one this entry recorded: checkpoints are checked against this entry's",
                            );
                        }
                        self.log_key = Some(k);
                    }
                    Some(Ok(_)) => self.problem(e.seq, "a second log key: the log has one"),
                    _ => self.problem(e.seq, "its verifier_key does not parse"),
                }
            }
            "checkout.requested" => {
                // One open checkout per account: a new request means the last one ended.
                if let Some(old) = self.open_by_subject.remove(e.subject) {
                    self.tracks.remove(&old);
                }
                let required = d.approvals_required.map_or(u32::MAX, |r| r.min(u64::from(u32::MAX)) as u32);
                let approvers = match d.approvers {
                    Some(Approvers::Listed(ids)) => Some(ids.iter().map(|id| format!("custodian:{}", &**id)).collect()),
                    Some(Approvers::All(ref all)) if all.as_ref() != "all" => {
                        self.problem(e.seq, format!("approvers {all:?} is neither \"all\" nor a list"));
                        Some(HashSet::new())
                    }
                    _ => None,
                };
                self.open_by_subject.insert(e.subject.to_owned(), checkout.to_owned());
                self.tracks.insert(
                    checkout.to_owned(),
                    Track {
                        subject: e.subject.to_owned(),
                        requester: e.actor.to_owned(),
                        required,
                        veto: d.veto,
                        approvers,
                        decided: HashSet::new(),
                        approved_by: HashSet::new(),
                        denied_by: HashSet::new(),
                        approved: false,
                        issued: Vec::new(),
                        task_policy: d.task_policy.as_deref().map(str::to_owned),
                        authorised_pending: 0,
                    },
                );
            }
            "approval.challenge_issued" | "release.challenge_issued" => {
                let purpose = if e.action.starts_with("approval") { Purpose::Approve } else { Purpose::Release };
                let challenge: &str = d.challenge.as_deref().unwrap_or_default();
                if !is_canonical_b64url(challenge) {
                    self.problem(e.seq, "its challenge is not canonical base64url");
                }
                let fingerprint = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::hash::DefaultHasher::new();
                    challenge.hash(&mut h);
                    h.finish()
                };
                if !self.issued_fingerprints.insert(fingerprint) && self.suspects.len() < MAX_PROBLEMS {
                    self.suspects.push((e.seq, challenge.to_owned()));
                }
                let issued = Issued {
                    seq: e.seq,
                    actor: e.actor.to_owned(),
                    purpose,
                    challenge: challenge.to_owned(),
                    rp_id: d.rp_id.as_deref().unwrap_or_default().to_owned(),
                    origin: d.origin.as_deref().map(str::to_owned),
                    decision: d.decision.as_deref().map(str::to_owned),
                    used_at: None,
                };
                match self.tracks.get_mut(checkout) {
                    Some(t) => t.issued.push(issued),
                    None => {
                        self.problem(e.seq, format!("a challenge issued for checkout {checkout}, which is not open"))
                    }
                }
            }
            "checkout.approval_recorded" | "checkout.denial_recorded" => {
                let decision = decision_of(e.action);
                if d.decision.as_deref() != Some(decision) {
                    self.problem(
                        e.seq,
                        format!(
                            "details.decision {:?} disagrees with its action {} (a {decision})",
                            d.decision.as_deref().unwrap_or("(none)"),
                            e.action
                        ),
                    );
                }
                let evidence = d.evidence.and_then(|v| serde_json::from_value::<AssertionEvidence>(v).ok());
                self.match_approval_row(e, checkout, decision, d.comment.as_deref(), evidence.as_ref(), next_approval)?;
                let Some(evidence) = evidence else {
                    self.problem(e.seq, format!("a decision on checkout {checkout} carries no readable evidence"));
                    return Ok(());
                };
                self.count_checked(e.seq);
                match self.check_assertion(e.seq, checkout, e.actor, Purpose::Approve, Some(decision), &evidence) {
                    Ok(()) => self.count_decision(e, checkout, decision),
                    Err(why) => self.problem(e.seq, format!("{decision} evidence (checkout {checkout}): {why}")),
                }
            }
            "checkout.approved" => match self.tracks.get_mut(checkout) {
                Some(track) => {
                    let (n, required) = (track.approved_by.len(), track.required);
                    track.approved = true;
                    if (n as u64) < u64::from(required) || required == 0 {
                        self.problem(
                            e.seq,
                            format!(
                                "checkout {checkout} was approved with {n} verified approval(s) from people other than the requester; {required} required"
                            ),
                        );
                    }
                }
                None => self.problem(
                    e.seq,
                    format!("checkout {checkout} was approved with 0 verified approval(s): it is not open"),
                ),
            },
            "checkout.denied" => {
                match self.tracks.get(checkout) {
                    Some(t) if t.denied_by.is_empty() => {
                        self.problem(e.seq, format!("checkout {checkout} was denied without a verified denial"))
                    }
                    Some(t) if t.veto == Some(false) => self.problem(
                        e.seq,
                        format!(
                            "checkout {checkout} was denied although the policy it was requested under has no veto"
                        ),
                    ),
                    Some(_) => {}
                    None => self.problem(e.seq, format!("checkout {checkout} was denied but is not open")),
                }
                self.end(checkout);
            }
            "checkout.cancelled" => {
                if self.tracks.get(checkout).is_some_and(|t| t.requester != e.actor) {
                    self.problem(
                        e.seq,
                        format!("checkout {checkout} was cancelled by someone other than its requester"),
                    );
                }
                self.end(checkout);
            }
            "checkout.expired" | "checkout.closed" => self.end(checkout),
            "checkout.released" if !self.tracks.get(checkout).is_some_and(|t| t.approved) => {
                self.problem(e.seq, format!("checkout {checkout} was released without being approved"));
            }
            // A root-task session's outcome follows exactly one authorisation, for the
            // policy the approvals were for.
            "checkout.root_task_issued" | "checkout.root_task_failed" => {
                let policy = d.task_policy.as_deref().map(str::to_owned);
                match self.tracks.get_mut(checkout) {
                    Some(t) if t.authorised_pending > 0 && t.task_policy == policy => t.authorised_pending -= 1,
                    Some(t) if t.task_policy != policy => self.problem(
                        e.seq,
                        format!(
                            "a root-task outcome on checkout {checkout} names another task policy than was requested"
                        ),
                    ),
                    _ => self.problem(
                        e.seq,
                        format!("a root-task outcome on checkout {checkout} without an authorisation before it"),
                    ),
                }
            }
            // A reshare's release step and a root-task authorisation: the requester's
            // assertion, checked like a reveal's.
            "checkout.revealed" | "account.reshared" | "checkout.root_task_authorized" => {
                if e.action == "checkout.root_task_authorized" {
                    let policy = d.task_policy.as_deref().map(str::to_owned);
                    match self.tracks.get_mut(checkout) {
                        Some(t) if policy.is_some() && t.task_policy == policy => t.authorised_pending += 1,
                        Some(_) => self.problem(
                            e.seq,
                            format!("a root-task authorisation on checkout {checkout} for another task policy than was requested and approved"),
                        ),
                        None => {}
                    }
                }
                let ok = self.tracks.get(checkout).is_some_and(|t| t.approved && t.requester == e.actor);
                if !ok {
                    self.problem(
                        e.seq,
                        format!("a reveal on checkout {checkout} by someone other than its approved requester"),
                    );
                }
                match d.evidence.and_then(|v| serde_json::from_value::<AssertionEvidence>(v).ok()) {
                    Some(ev) => {
                        self.count_checked(e.seq);
                        if let Err(why) = self.check_assertion(e.seq, checkout, e.actor, Purpose::Release, None, &ev) {
                            self.problem(e.seq, format!("release evidence (checkout {checkout}): {why}"));
                        }
                    }
                    None => {
                        self.problem(e.seq, format!("a reveal on checkout {checkout} carries no readable evidence"))
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A verified decision counts toward quorum (or a veto) only when the rules
    /// recorded with the request allow this person to decide.
    fn count_decision(&mut self, e: &EntryRef<'_>, checkout: &str, decision: &str) {
        let disabled = self.disabled.contains(e.actor);
        let Some(track) = self.tracks.get_mut(checkout) else { return };
        let why_not = if e.actor == track.requester {
            Some(format!("the requester decided on their own checkout {checkout}"))
        } else if track.decided.contains(e.actor) {
            Some(format!("{} decided twice on checkout {checkout}", e.actor))
        } else if track.approvers.as_ref().is_some_and(|set| !set.contains(e.actor)) {
            Some(format!("{} is not in the approver set recorded for checkout {checkout}", e.actor))
        } else if disabled {
            Some(format!("{} decided on checkout {checkout} after being disabled", e.actor))
        } else {
            None
        };
        track.decided.insert(e.actor.to_owned());
        match why_not {
            Some(why) => self.problem(e.seq, why),
            None if decision == "approve" => {
                track.approved_by.insert(e.actor.to_owned());
            }
            None => {
                track.denied_by.insert(e.actor.to_owned());
            }
        }
    }

    /// Check one assertion against everything the log recorded before it, and consume
    /// its challenge.
    fn check_assertion(
        &mut self,
        seq: u64,
        checkout: &str,
        actor: &str,
        purpose: Purpose,
        decision: Option<&str>,
        ev: &AssertionEvidence,
    ) -> Result<(), String> {
        let enrolled = self.keys.get(&ev.credential_id).ok_or("its credential was not enrolled earlier in this log")?;
        if enrolled.owner != actor {
            return Err(format!("it is signed with a credential of {}, not of {actor}", enrolled.owner));
        }
        let Some(track) = self.tracks.get(checkout) else {
            return Err(format!("checkout {checkout} is not open here (never requested, or already ended)"));
        };
        let Some(at) = track.issued.iter().position(|i| i.challenge == ev.challenge) else {
            let elsewhere = self
                .tracks
                .iter()
                .find(|(_, t)| t.issued.iter().any(|i| i.challenge == ev.challenge))
                .map(|(id, _)| id.clone());
            return Err(match elsewhere {
                Some(other) => format!("its challenge was issued for checkout {other}, not for {checkout}"),
                None => format!("its challenge was not issued for checkout {checkout} (replayed evidence?)"),
            });
        };
        let issued = &track.issued[at];
        if issued.actor != actor {
            return Err(format!("its challenge was issued to {}, not to {actor}", issued.actor));
        }
        if issued.purpose != purpose {
            return Err(format!("its challenge was issued for {}, not for {}", issued.purpose.name(), purpose.name()));
        }
        if let Some(used) = issued.used_at {
            return Err(format!("its challenge (issued at seq {}) was already used at seq {used}", issued.seq));
        }
        if let (Some(signed_for), Some(d)) = (issued.decision.as_deref(), decision)
            && signed_for != d
        {
            return Err(format!("its challenge was issued for the decision {signed_for:?}, not {d:?}"));
        }
        evidence::verify(&enrolled.key, ev, &issued.rp_id, issued.origin.as_deref()).map_err(|e| e.to_string())?;
        let count = evidence::sign_count(ev).unwrap_or(0);
        if let Some(&(last, last_seq)) = self.counters.get(&ev.credential_id)
            && (count != 0 || last != 0)
            && count <= last
        {
            return Err(format!(
                "its signature counter {count} is not above {last}, seen at seq {last_seq} for the same credential (a cloned authenticator, or replayed evidence)"
            ));
        }
        self.counters.insert(ev.credential_id.clone(), (count, seq));
        if let Some(t) = self.tracks.get_mut(checkout) {
            t.issued[at].used_at = Some(seq);
        }
        Ok(())
    }

    /// The `approvals` table, walked beside the log: the next row must hold exactly this
    /// decision. A missing row (deleted) is reported once and the walk realigns.
    fn match_approval_row(
        &mut self,
        e: &EntryRef<'_>,
        checkout: &str,
        decision: &str,
        comment: Option<&str>,
        ev: Option<&AssertionEvidence>,
        next_approval: &mut dyn FnMut() -> rusqlite::Result<Option<checkouts::ApprovalRow>>,
    ) -> rusqlite::Result<()> {
        let row = match self.pending_approval.take() {
            Some(r) => Some(r),
            None => next_approval()?,
        };
        let Some(row) = row else {
            self.problem(
                e.seq,
                format!("no row of the approvals table holds this decision on checkout {checkout} (a row was deleted)"),
            );
            return Ok(());
        };
        let same_decider = row.checkout_id == checkout && format!("custodian:{}", row.custodian_id) == e.actor;
        let same = same_decider
            && row.decision == decision
            && row.comment.as_deref() == comment
            && ev.is_some_and(|ev| {
                row.credential_id == ev.credential_id
                    && row.challenge == ev.challenge
                    && row.client_data_json == ev.client_data_json
                    && row.authenticator_data == ev.authenticator_data
                    && row.signature == ev.signature
            });
        if same {
            return Ok(());
        }
        if same_decider {
            self.problem(
                e.seq,
                format!(
                    "approvals row {} (checkout {checkout}): the stored decision or evidence differs from the evidence in the audit log",
                    row.id
                ),
            );
        } else {
            self.problem(
                e.seq,
                format!("no row of the approvals table holds this decision on checkout {checkout} (a row was deleted)"),
            );
            self.pending_approval = Some(row);
        }
        Ok(())
    }

    /// A checkpoint the database keeps about itself: signed by the log key, naming
    /// the head the log has at its size.
    fn check_checkpoint(&mut self, cp: &(u64, String, String), seq: u64, hash: &str) {
        let (size, head, note) = cp;
        self.checkpoints_checked += 1;
        let Some((name, public)) = self.log_key.clone().or_else(|| self.table_log_key.clone()) else {
            self.problem(*size, format!("the checkpoint signed at size {size} cannot be checked: no log key"));
            return;
        };
        match crate::crypto::checkpoint::verify(note, &name, &public) {
            Err(why) => self.problem(*size, format!("the checkpoint signed at size {size} is not valid: {why}")),
            Ok(c) if c.size != *size || hex::encode(c.head) != *head || c.origin != name => self.problem(
                *size,
                format!("the checkpoints row for size {size} does not match its own signed note (edited)"),
            ),
            Ok(_) if seq != *size || head != hash => self.problem(
                *size,
                format!(
                    "the entry at seq {size} does not have the head the checkpoint signed at size {size} commits to: the log was rewritten after it"
                ),
            ),
            Ok(_) => {}
        }
    }

    /// The high-water file (`<size> <head hex>`, written outside the database each
    /// time a checkpoint is signed) must name an entry the log has, with that hash.
    fn check_high_water(&mut self, conn: &rusqlite::Connection, path: &Path, size: u64) -> Result<(), AppError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.problem(size, format!("the checkpoint high-water file {} cannot be read: {e}", path.display()));
                return Ok(());
            }
        };
        let parsed = text.trim_end_matches('\n').split_once(' ').and_then(|(s, h)| Some((s.parse::<u64>().ok()?, h)));
        let Some((mark, head)) = parsed else {
            self.problem(size, format!("the checkpoint high-water file {} is malformed", path.display()));
            return Ok(());
        };
        if mark > size {
            self.problem(
                size,
                format!("a checkpoint was signed at size {mark} ({}), but the log has {size} entries: truncated or restored", path.display()),
            );
        } else if outbox::audit_hash_at(conn, mark)?.as_deref() != Some(head) {
            self.problem(
                mark,
                format!(
                    "the entry at seq {mark} does not have the head recorded in {}: the log or the file was changed",
                    path.display()
                ),
            );
        }
        Ok(())
    }
}

impl App {
    #[tracing::instrument(skip_all)]
    pub async fn audit_page(&self, filter: AuditFilter, limit: u32) -> Result<AuditPage, AppError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.db
            .call(move |conn| {
                let entries = audit::list(conn, &filter, limit)?;
                let next_after_seq = (entries.len() as u32 == limit).then(|| entries.last().map(|e| e.seq)).flatten();
                Ok::<_, AppError>(AuditPage { entries, next_after_seq })
            })
            .await
    }

    /// Verify on a separate read-only connection: a long verification never holds
    /// up approvals or releases (WAL readers do not block the writer).
    #[tracing::instrument(skip_all)]
    pub async fn audit_verify(&self) -> Result<ChainStatus, AppError> {
        let path = self.db.path().to_owned();
        let high_water = self.config.data_dir.join(HIGH_WATER_FILE);
        tokio::task::spawn_blocking(move || verify_log(&crate::store::open_read_only(&path)?, Some(&high_water)))
            .await
            .map_err(|_| AppError::Internal("verification worker stopped".into()))?
    }
}

/// Prove that the database still contains the log a checkpoint commits to: the note's
/// signature verifies (by `verifier_key`, or by the log key recorded in the database
/// when none is given — the note names the key, so a swapped key does not match), and
/// the entry at the checkpoint's size has the checkpoint's head.
pub fn verify_checkpoint(
    conn: &rusqlite::Connection,
    note: &str,
    verifier_key: Option<&str>,
) -> Result<String, String> {
    use crate::crypto::checkpoint;
    let (name, public) = match verifier_key {
        Some(v) => checkpoint::parse_verifier_key(v).map_err(|e| e.to_string())?,
        None => {
            let row = crate::store::outbox::log_key(conn)
                .map_err(|e| e.to_string())?
                .ok_or("this database has no log key")?;
            let public: [u8; 32] =
                row.public_key.as_slice().try_into().map_err(|_| "the stored log key is malformed")?;
            (row.key_name, public)
        }
    };
    let cp = checkpoint::verify(note, &name, &public).map_err(|e| format!("checkpoint rejected: {e}"))?;
    let stored = crate::store::outbox::audit_hash_at(conn, cp.size).map_err(|e| e.to_string())?;
    match stored {
        None => Err(format!(
            "the database has fewer than the {} entries this checkpoint commits to: the log was truncated",
            cp.size
        )),
        Some(h) if h != hex::encode(cp.head) => Err(format!(
            "entry {} does not have the checkpoint's head: the log was rewritten after this checkpoint was signed",
            cp.size
        )),
        Some(_) => Ok(format!("checkpoint ok: the log contains the {} entries signed by {name}", cp.size)),
    }
}

/// Accept a bare signed note, a checkpoint JSON (`{"note": …}`) or a whole
/// announcement (`{"checkpoint": {"note": …}}`), as an auditor might have saved it.
pub fn extract_note(text: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else { return text.to_owned() };
    // What SQS, HTTP and e-mail-json subscribers receive: the SNS envelope around it.
    if let Some(inner) = v["Message"].as_str().and_then(|m| serde_json::from_str(m).ok()) {
        v = inner;
    }
    v["checkpoint"]["note"].as_str().or_else(|| v["note"].as_str()).unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::{REPLAYED, extract_note, is_canonical_b64url};
    use crate::domain::event::Event;

    /// `REPLAYED` names actions as strings, so a misspelt or renamed action would be
    /// skipped silently: each must be an `Event`'s action, and every action the replay
    /// matches on must be in it (else `prepare` skips the entry and the arm never runs).
    #[test]
    fn every_replayed_action_is_an_event_and_every_action_the_replay_matches_is_replayed() {
        let actions: Vec<&str> = REPLAYED.to_vec();
        for action in &actions {
            let refused = Event::parse(action, &serde_json::json!({})).err();
            assert!(
                !refused.is_some_and(|e| e.reason.contains("unknown variant")),
                "{action} is not an Event's action"
            );
        }
        let source = include_str!("audit.rs");
        let (Some(from), Some(to)) = (source.find("fn observe_entry("), source.find("fn count_decision(")) else {
            panic!("the replay's match moved: update this test");
        };
        let is_action = |lit: &str| {
            lit.split_once('.').is_some_and(|(a, b)| {
                [a, b].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
        };
        let mut matched = std::collections::BTreeSet::new();
        for line in source[from..to].lines() {
            let Some((pattern, _)) = line.split_once("=>") else { continue };
            matched.extend(pattern.split('"').skip(1).step_by(2).filter(|lit| is_action(lit)));
        }
        for action in &matched {
            assert!(actions.contains(action), "the replay matches {action} but REPLAYED skips it");
        }
        assert!(matched.len() >= 18, "found the match arms: {matched:?}");
    }

    #[test]
    fn canonical_base64url_is_exactly_what_decodes_and_re_encodes_to_itself() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let round_trips =
            |s: &str| !s.is_empty() && URL_SAFE_NO_PAD.decode(s).is_ok_and(|raw| URL_SAFE_NO_PAD.encode(raw) == s);
        let alphabet = "ABEQg-_9=+.";
        let mut cases: Vec<String> = vec![String::new()];
        for len in 1..=5 {
            let mut next = Vec::new();
            for prefix in cases.iter().filter(|c| c.len() == len - 1) {
                for c in alphabet.chars() {
                    next.push(format!("{prefix}{c}"));
                }
            }
            cases.extend(next);
        }
        cases.push(URL_SAFE_NO_PAD.encode([0xffu8; 32]));
        cases.push(format!("{}=", URL_SAFE_NO_PAD.encode([1u8; 31])));
        for s in &cases {
            assert_eq!(is_canonical_b64url(s), round_trips(s), "{s:?}");
        }
    }

    #[test]
    fn a_note_is_found_in_a_bare_note_a_checkpoint_an_announcement_and_an_sns_envelope() {
        let note = "o\n1\nAAAA\n\n\u{2014} o sig\n";
        let message = serde_json::json!({"event": "x", "checkpoint": {"note": note}});
        let envelope = serde_json::json!({"Type": "Notification", "Message": message.to_string()});
        assert_eq!(extract_note(note), note);
        assert_eq!(extract_note(&serde_json::json!({"note": note}).to_string()), note);
        assert_eq!(extract_note(&message.to_string()), note);
        assert_eq!(extract_note(&envelope.to_string()), note);
    }
}
