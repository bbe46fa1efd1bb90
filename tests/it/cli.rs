//! The binary as an operator uses it: first run, host commands, seal failures.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use reqwest::StatusCode;

use crate::support::*;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `serve` on a free port; return the process, its URL and what it printed.
fn serve(data: &Path) -> (Running, String, Vec<String>) {
    let mut child = breakglass_cmd(data)
        .arg("serve")
        .env("BREAKGLASS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("serve printed its address within 30 s");
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("breakglass listening on ") {
            let url = rest.split_whitespace().next().unwrap().to_owned();
            return (running, url, lines);
        }
    }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn first_run_with_no_config_prints_an_invite_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url, lines) = serve(&data);
    let invite = lines.iter().find(|l| l.contains("/enrol#")).expect("an invite URL is printed");
    assert!(invite.trim().starts_with("http://localhost:8080/enrol#"), "{invite}");
    let (status, body) = get(&reqwest::Client::new(), format!("{url}/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&reqwest::Client::new(), format!("{url}/healthz")).await.0, StatusCode::OK);
    let key = data.join("dev-seal.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    drop(server);

    // Restarting with still no admin revokes the old first-run invite and prints a new one.
    let (server, _, lines) = serve(&data);
    let second = lines.iter().find(|l| l.contains("/enrol#")).unwrap();
    assert_ne!(second, invite);
    drop(server);
    let conn = rusqlite::Connection::open(data.join("breakglass.db")).unwrap();
    let (pending, revoked): (i64, i64) = conn
        .query_row("SELECT sum(revoked_at IS NULL), sum(revoked_at IS NOT NULL) FROM invites", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((pending, revoked), (1, 1));
    let out = breakglass(&data, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn host_commands_create_accounts_and_deposit_secrets_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let out = breakglass(data, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("dev-key-file"), "init warns about dev mode: {}", text(&out));

    let out = breakglass(
        data,
        &["account", "create", "--account-id", "123456789012", "--alias", "prod", "--root-email", "root@example.com"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let password = "a-root-password-from-stdin";
    let mut child = breakglass_cmd(data)
        .args(["account", "deposit", "--account-id", "123456789012", "--kind", "root_password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(password), "the secret is never printed");
    let mut child = breakglass_cmd(data)
        .args(["account", "deposit", "--account-id", "123456789012", "--kind", "totp_seed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"not a seed").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("base32"), "{}", text(&out));

    let out = breakglass(data, &["account", "list"]);
    assert!(text(&out).contains("root_password v1"), "{}", text(&out));
    let out = breakglass(data, &["invite", "--role", "custodian", "--role", "auditor"]);
    assert!(out.status.success());
    assert!(text(&out).contains("custodian + auditor") && text(&out).contains("/enrol#"), "{}", text(&out));

    let conn = rusqlite::Connection::open(data.join("breakglass.db")).unwrap();
    let actor: String =
        conn.query_row("SELECT actor FROM audit_log WHERE action = 'secret.deposited'", [], |r| r.get(0)).unwrap();
    assert_eq!(actor, "host:cli");
    // The secret was stored exactly (one trailing newline from the pipe removed).
    let key = breakglass::crypto::seal::read_key_file(&data.join("dev-seal.key")).unwrap();
    let (sealed, recipient): (Vec<u8>, String) =
        conn.query_row("SELECT sealed_key, recipient FROM vault", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let vault = breakglass::crypto::UnsealedVault::unseal(&key, &sealed, &recipient).unwrap();
    let wrapped: Vec<u8> = conn.query_row("SELECT wrapped_key FROM accounts", [], |r| r.get(0)).unwrap();
    let ct: Vec<u8> = conn.query_row("SELECT ciphertext FROM secret_versions", [], |r| r.get(0)).unwrap();
    let got = vault.account_key("123456789012", &wrapped).unwrap().open("root_password", 1, &ct).unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&got), password);
}

fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_wrong_passphrase_fails_cleanly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pass = dir.path().join("passphrase");
    let config = dir.path().join("breakglass.toml");
    std::fs::write(
        &config,
        format!("[seal]\nmode = \"passphrase\"\npassphrase_file = {:?}\n", pass.display().to_string()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();

    write_private(&pass, "short\n");
    let out = breakglass(&data, &["--config", cfg, "init", "--kdf-memory-mib", "8", "--kdf-passes", "1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("at least 12 characters"), "{}", text(&out));
    assert!(!data.join("breakglass.db").exists(), "nothing written");

    write_private(&pass, "correct horse battery staple\n");
    let out = breakglass(&data, &["--config", cfg, "init", "--kdf-memory-mib", "8", "--kdf-passes", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = breakglass(&data, &["--config", cfg, "init"]);
    assert!(!out.status.success() && text(&out).contains("already holds a vault"), "{}", text(&out));

    let db = data.join("breakglass.db");
    let before = std::fs::read(&db).unwrap();
    write_private(&pass, "incorrect horse battery staple\n");
    let out = breakglass(&data, &["--config", cfg, "serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("wrong passphrase or key file"), "{}", text(&out));
    assert_eq!(before, std::fs::read(&db).unwrap(), "the database is untouched");

    write_private(&pass, "correct horse battery staple\n");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = breakglass(&data, &["--config", cfg, "serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn key_file_mode_refuses_a_missing_or_world_readable_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("seal.key");
    let cmd = |args: &[&str]| {
        breakglass_cmd(&data)
            .env("BREAKGLASS_SEAL_MODE", "key-file")
            .env("BREAKGLASS_SEAL_KEY_FILE", &key)
            .args(args)
            .output()
            .unwrap()
    };

    let out = cmd(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("breakglass init"), "{}", text(&out));
    assert!(!data.join("breakglass.db").exists(), "serve does not create a vault outside dev mode");

    let out = cmd(&["init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cmd(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("readable by other users") && text(&out).contains("chmod 600"), "{}", text(&out));
    let out = cmd(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));

    std::fs::remove_file(&key).unwrap();
    let out = cmd(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));

    // A different key of the right shape is a wrong key.
    write_private(&key, &"ab".repeat(32));
    let out = cmd(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("wrong passphrase or key file"), "{}", text(&out));
}

#[test]
fn config_check_says_what_is_wrong_and_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let check = |toml: &str, env: &[(&str, &str)]| {
        std::fs::write(&config, toml).unwrap();
        let mut c = breakglass_cmd(dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(["--config", config.to_str().unwrap(), "config", "check"]).output().unwrap()
    };
    let out = check("listen = \"127.0.0.1:9000\"\nlisten_port = 9000\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown field `listen_port`"), "{}", text(&out));
    let out = check("origin = \"http://breakglass.internal:8080\"\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("https"), "{}", text(&out));
    let out = check("[security]\ncooling_off_hours = 100000\n", &[]);
    assert!(text(&out).contains("security.cooling_off_hours"), "{}", text(&out));
    let out = check("", &[("BREAKGLASS_ORIGN", "https://x.example.com")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("BREAKGLASS_ORIGN"), "{}", text(&out));
    let out = check("origin = \"https://custody.example.com\"\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("RP id custody.example.com"), "{}", text(&out));
    // Other commands refuse to run on a bad config.
    let out = check("listen_port = 1\n", &[]);
    let out2 =
        breakglass_cmd(dir.path()).args(["--config", config.to_str().unwrap(), "audit", "verify"]).output().unwrap();
    assert_eq!(out2.status.code(), Some(2));
    drop(out);
}

#[test]
fn audit_verify_refuses_a_database_newer_than_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    assert!(breakglass(dir.path(), &["init"]).status.success());
    rusqlite::Connection::open(dir.path().join("breakglass.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let out = breakglass(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("newer than this binary"), "{}", text(&out));
}

#[test]
fn systemd_credentials_may_be_group_readable_but_other_files_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let pass = creds.join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o440)).unwrap();
    // As systemd makes it: closed to others.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("data");
    let cmd = |with_credentials_dir: bool| {
        let mut c = breakglass_cmd(&data);
        c.env("BREAKGLASS_SEAL_MODE", "passphrase").env("BREAKGLASS_SEAL_PASSPHRASE_FILE", &pass);
        if with_credentials_dir {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        } else {
            c.env_remove("CREDENTIALS_DIRECTORY");
        }
        c.args(["init", "--kdf-memory-mib", "8", "--kdf-passes", "1"]).output().unwrap()
    };
    let out = cmd(false);
    assert!(!out.status.success() && text(&out).contains("mode 440"), "{}", text(&out));
    let out = cmd(true);
    assert!(out.status.success(), "{}", text(&out));
    // World-readable is refused even there.
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = breakglass_cmd(&data)
        .env("BREAKGLASS_SEAL_MODE", "passphrase")
        .env("BREAKGLASS_SEAL_PASSPHRASE_FILE", &pass)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("chmod 600"), "{}", text(&out));
    // A missing passphrase file is called what it is.
    let out = breakglass_cmd(&data)
        .env("BREAKGLASS_SEAL_MODE", "passphrase")
        .env("BREAKGLASS_SEAL_PASSPHRASE_FILE", dir.path().join("nope"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(text(&out).contains("passphrase file") && text(&out).contains("does not exist"), "{}", text(&out));
}

#[test]
fn init_creates_the_log_key_and_prints_its_verifier_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = breakglass(dir.path(), &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    let vkey = printed
        .lines()
        .find_map(|l| l.strip_prefix("Audit checkpoints will be signed by "))
        .expect("verifier key printed");
    let (name, public) = breakglass::crypto::checkpoint::parse_verifier_key(vkey).unwrap();
    assert_eq!(name, "localhost/breakglass/audit");
    let conn = rusqlite::Connection::open(dir.path().join("breakglass.db")).unwrap();
    let stored: Vec<u8> = conn.query_row("SELECT public_key FROM log_key", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, public.to_vec());
    let actions = audit_actions(&conn);
    assert_eq!(actions, ["vault.initialized", "log_key.created"]);
}

/// A data dir as an `init` killed halfway through leaves it with the old code: a
/// database with no vault and a hot rollback journal beside it.
fn half_made_data_dir(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("breakglass.db");
    let conn = rusqlite::Connection::open(&src).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA cache_size = 2; CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB);",
    )
    .unwrap();
    for i in 0..200 {
        conn.execute("INSERT INTO settings VALUES (?1, zeroblob(2000))", [format!("k{i}")]).unwrap();
    }
    // Mid-transaction, with pages already spilled to the file: copy what a crash leaves.
    conn.execute_batch("BEGIN; UPDATE settings SET value = zeroblob(3000);").unwrap();
    let journal = scratch.path().join("breakglass.db-journal");
    assert!(journal.exists(), "a hot journal");
    std::fs::copy(&src, data.join("breakglass.db")).unwrap();
    std::fs::copy(&journal, data.join("breakglass.db-journal")).unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_half_made_data_dir_is_named_as_such_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    half_made_data_dir(&data);
    for args in [&["init"][..], &["serve"], &["account", "list"], &["invite", "--role", "admin"]] {
        let out = breakglass_cmd(&data).env("BREAKGLASS_LISTEN", "127.0.0.1:0").args(args).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{args:?}: {t}");
        assert!(
            t.contains("holds no vault") && t.contains("was interrupted") && t.contains("Move it aside"),
            "{args:?}: {t}"
        );
        assert!(!t.contains("readonly"), "{args:?}: {t}");
    }
    // Following the advice works (the journal may already have been rolled back).
    for f in ["breakglass.db", "breakglass.db-journal"] {
        let _ = std::fs::rename(data.join(f), dir.path().join(f));
    }
    assert!(!data.join("breakglass.db").exists());
    let out = breakglass(&data, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn init_builds_the_database_aside_and_links_it_into_place_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data dir others can list (0755, as `mkdir` makes it) is tightened, and what a
    // crashed earlier init left under the temporary name is cleared away.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("breakglass.db.init"), b"half a database").unwrap();
    std::fs::write(data.join("breakglass.db.init-journal"), b"junk").unwrap();
    let out = breakglass(&data, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700, "data dir tightened");
    let db = data.join("breakglass.db");
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    let mut names: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(!names.iter().any(|n| n.contains(".init")), "no temporary files left: {names:?}");
    assert_eq!(std::fs::metadata(&db).unwrap().nlink(), 1, "the temporary name is gone");
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(audit_actions(&conn), ["vault.initialized", "log_key.created"]);
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    // A second init changes nothing.
    let out = breakglass(&data, &["init"]);
    assert!(!out.status.success() && text(&out).contains("already holds a vault"), "{}", text(&out));
}

#[test]
fn deposit_refuses_more_stdin_than_any_secret_needs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(breakglass(data, &["init"]).status.success());
    let out = breakglass(
        data,
        &["account", "create", "--account-id", "123456789012", "--alias", "prod", "--root-email", "root@example.com"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut child = breakglass_cmd(data)
        .args(["account", "deposit", "--account-id", "123456789012", "--kind", "recovery_notes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // 8 MiB offered; the CLI stops reading after 64 KiB (a closed pipe is fine here).
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'n'; 1024 * 1024];
        for _ in 0..8 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("more than 65536 bytes"), "{}", text(&out));
    let conn = rusqlite::Connection::open(data.join("breakglass.db")).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM secret_versions", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}
