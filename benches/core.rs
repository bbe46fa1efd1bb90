//! `cargo bench --bench core`: server-side costs of the custody core, printed as a
//! Markdown table for docs/performance.md. A plain binary (no criterion) so it adds
//! nothing to the test build; each figure is the median of several runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::{Duration, Instant};

use breakglass::{
    app::audit::verify_chain,
    crypto::{
        EnvelopeHeader, UnsealedVault,
        seal::{self, KdfParams},
        vault,
    },
    store::{self, audit},
};
use secrecy::SecretString;
use serde_json::json;

fn median<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn fmt(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else if d.as_micros() >= 1000 {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    }
}

fn build_log(path: &std::path::Path, n: u64) {
    let mut conn = store::open(path).unwrap();
    let t0 = time::OffsetDateTime::now_utc();
    let mut done = 0;
    while done < n {
        let tx = conn.transaction().unwrap();
        for i in 0..(n - done).min(50_000) {
            audit::append(
                &tx,
                t0,
                "custodian:0b6f4c1e-8f5a-4d2b-9a51-2f4f0b1d9e11",
                "secret.deposited",
                "account:123456789012",
                &json!({"kind": "root_password", "version": done + i, "rotation_completed": false}),
            )
            .unwrap();
        }
        tx.commit().unwrap();
        done += (n - done).min(50_000);
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!("| operation | median |\n|---|---|");

    let pass = SecretString::from("correct horse battery staple");
    let d = median(5, || {
        seal::derive_from_passphrase(&pass, b"0123456789abcdef", KdfParams::default()).unwrap();
    });
    println!(
        "| argon2id (64 MiB, t=3, p=1): unseal cost at start-up | {} |",
        fmt(d)
    );

    let key = seal::derive_from_passphrase(
        &pass,
        b"0123456789abcdef",
        KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
    )
    .unwrap();
    let new = UnsealedVault::create(&key).unwrap();
    let acct = vault::new_account_key(&new.recipient, "123456789012").unwrap();
    let h = EnvelopeHeader::new("123456789012", "root_password", 1);
    let value = SecretString::from("a-long-root-password-123");
    let d = median(201, || {
        vault::encrypt_secret(&acct.recipient, &h, &value).unwrap();
    });
    println!("| deposit encryption (age X25519, envelope) | {} |", fmt(d));
    let ct = vault::encrypt_secret(&acct.recipient, &h, &value).unwrap();
    let d = median(201, || {
        new.vault
            .account_key("123456789012", &acct.wrapped)
            .unwrap()
            .open("root_password", 1, &ct)
            .unwrap();
    });
    println!("| unwrap account key + decrypt one secret | {} |", fmt(d));

    // One audit append in its own durable transaction (WAL, synchronous=FULL).
    let mut conn = store::open(&dir.path().join("append.db")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let d = median(101, || {
        store::transact(&mut conn, |tx| {
            audit::append(
                tx,
                now,
                "host:cli",
                "invite.created",
                "invite:x",
                &json!({"roles": ["custodian"]}),
            )
        })
        .unwrap();
    });
    println!(
        "| one audit entry in its own committed transaction | {} |",
        fmt(d)
    );

    for n in [100_000u64, 1_000_000] {
        let path = dir.path().join(format!("log{n}.db"));
        build_log(&path, n);
        let conn = store::open_read_only(&path).unwrap();
        let d = median(3, || {
            let s = verify_chain(&conn).unwrap();
            assert!(s.ok && s.entries == n);
        });
        println!(
            "| `audit verify`, {n} entries | {} ({:.0} entries/s) |",
            fmt(d),
            n as f64 / d.as_secs_f64()
        );
    }
}
