//! The binary as an operator uses it: first run, host commands, seal failures.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
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
