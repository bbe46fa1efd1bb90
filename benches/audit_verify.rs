//! `cargo bench --bench audit_verify -- N`: speed and peak memory of `audit verify` over a
//! log of N checkout-shaped entries (request, approval challenge, cancellation: each
//! checkout leaves state in the replay index). Run once per N, in its own process, so the
//! peak resident set belongs to that N alone (docs/performance.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Instant;

use breakglass::{
    app::audit::verify_chain,
    store::{self, audit},
};
use serde_json::json;

fn build_log(path: &std::path::Path, n: u64) {
    let mut conn = store::open(path).unwrap();
    let t0 = time::macros::datetime!(2026-11-21 14:00:00 UTC);
    let requester = "custodian:0b6f4c1e-8f5a-4d2b-9a51-2f4f0b1d9e11";
    let approver = "custodian:5d0e2a9c-1b7f-4c3e-8d6a-0f9e8d7c6b5a";
    let subject = "account:123456789012";
    let mut seq = 0u64;
    while seq < n {
        let tx = conn.transaction().unwrap();
        let mut in_tx = 0;
        while seq < n && in_tx < 50_000 {
            let checkout = format!("00000000-0000-4000-8000-{:012x}", seq / 3);
            let (actor, action, details) = match seq % 3 {
                0 => (
                    requester,
                    "checkout.requested",
                    json!({"checkout": checkout, "kind": "emergency", "reason": "Billing lockout", "ticket": null, "duration_minutes": 30, "approvals_required": 1}),
                ),
                1 => {
                    let mut challenge = [0u8; 32];
                    challenge[..8].copy_from_slice(&seq.to_be_bytes());
                    (
                        approver,
                        "approval.challenge_issued",
                        json!({"checkout": checkout, "ceremony": checkout, "challenge": hex::encode(challenge), "rp_id": "localhost", "origin": "http://localhost:8080"}),
                    )
                }
                _ => (requester, "checkout.cancelled", json!({"checkout": checkout})),
            };
            audit::append(&tx, t0, actor, action, subject, &details).unwrap();
            seq += 1;
            in_tx += 1;
        }
        tx.commit().unwrap();
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args().skip(1).find_map(|a| a.replace('_', "").parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build_log(&path, n);
    let conn = store::open_read_only(&path).unwrap();
    // Reset the peak resident set so it measures the verification alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let s = verify_chain(&conn).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert!(s.ok && s.entries == n, "{s:?}");
    }
    let peak = status_kib("VmHWM:");
    println!(
        "| `audit verify`, {n} checkout-shaped entries | {:.0} ms ({:.0} entries/s) | peak RSS {:.1} MiB (+{:.1} MiB over the open connection) |",
        best * 1e3,
        n as f64 / best,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}
