//! The browser's quorum crypto (web/static/quorum.js and the vendored age bundle) is tested
//! in JavaScript with node's built-in runner; this runs those tests as part of `cargo test`.
//! They check the derivation against tests/vectors/prf-share-key.json (the same vector as
//! `crypto::keys`' unit test) and interoperate with the `age` CLI.
use std::path::Path;
use std::process::Command;

#[test]
fn browser_share_crypto_passes_its_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each test file by name: `node --test DIR` finds files in Node 20 but treats the
    // argument as a glob from Node 21 on.
    let mut files: Vec<_> = std::fs::read_dir(root.join("web/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|p| p.ends_with(".test.mjs")))
        .map(|p| p.strip_prefix(root).unwrap().to_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no web/tests/*.test.mjs found");

    let out = match Command::new("node").arg("--test").args(&files).current_dir(root).env("NO_COLOR", "1").output() {
        Ok(out) => out,
        Err(e) => {
            panic!("`node` (Node.js 20 or newer) is required to test web/static/quorum.js and could not be run: {e}")
        }
    };
    assert!(
        out.status.success(),
        "node --test {files:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# fail 0") && stdout.contains("# skipped 0") && !stdout.contains("# pass 0"),
        "every node test must run and pass:\n{stdout}"
    );
}
