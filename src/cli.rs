//! The command line: `serve`, `init`, `invite`, `config check`, `account …`, `audit …`,
//! `backup`, `restore`, `recovery-kit`.
//! Secrets are never taken from argv: they come from stdin, a prompt or a file.
use std::{
    io::{IsTerminal, Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::{
    app::{
        Actor, App,
        accounts::NewAccount,
        audit::verify_log,
        bootstrap::{self, SealInput},
    },
    clock::{Clock, SystemClock},
    config::{Config, SealMode},
    crypto::seal::{self, KdfParams},
    domain::{Role, SecretKind},
    error::AppError,
    notify::SnsSink,
    server::{Server, ServerOptions},
    store::{self, Db},
};

#[derive(Parser)]
#[command(name = "breakglass", version, about = "Two-person custody of AWS account root credentials")]
struct Cli {
    /// TOML configuration file (also BREAKGLASS_CONFIG). Without it, embedded defaults.
    #[arg(long, global = true, env = "BREAKGLASS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service. On a fresh data dir in the default dev mode it creates a
    /// throw-away vault and prints the first admin's invite.
    Serve,
    /// Create a production vault explicitly (key file or passphrase, per seal.mode).
    Init {
        /// argon2id memory in MiB for passphrase mode.
        #[arg(long, default_value_t = 64)]
        kdf_memory_mib: u32,
        /// argon2id passes for passphrase mode.
        #[arg(long, default_value_t = 3)]
        kdf_passes: u32,
    },
    /// Print a single-use invite URL for a new person.
    Invite {
        /// Role(s) for the invitee; repeat for several.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<RoleArg>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage accounts from the host.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Verify or export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Drills: status and coverage, the auditor export, a scheduler step by hand.
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Announcements waiting for or failing delivery.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Encrypted backups: `backup --to FILE` (safe while the service runs), `backup verify FILE`.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        /// Write a consistent snapshot, age-encrypted to backup.recipients, to this file.
        #[arg(long)]
        to: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<BackupCommand>,
    },
    /// Put a backup (or a `litestream restore` output) in place as this host's database,
    /// checked against published checkpoints (deploy/RUNBOOK.md section 8).
    Restore {
        /// An encrypted backup, or a plain SQLite file from `litestream restore -o`.
        #[arg(long)]
        from: PathBuf,
        /// The offline age identity file that opens encrypted backups.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// A saved checkpoint (signed note, checkpoint JSON, announcement, SNS envelope); repeat for several.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// The log's verifier key, if the checkpoints should not be checked with the key in the restored database.
        #[arg(long)]
        log_key: Option<String>,
        /// Restore even though the log is older than a published checkpoint (recorded and announced).
        #[arg(long)]
        accept_loss: bool,
        /// Restore with no saved checkpoint to compare with (recorded and announced).
        #[arg(long, conflicts_with = "checkpoints")]
        no_checkpoint: bool,
    },
    /// Write the printable recovery kit (HTML; print it to PDF or paper from a browser):
    /// where this deployment runs, its copies, keys, accounts, custodians and the restore
    /// procedure. Public data only; recorded in the audit log.
    RecoveryKit {
        /// Write the page to this file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Decrypt a backup with an identity into a private scratch directory, check the
    /// file and the whole audit chain, and delete the plaintext.
    Verify {
        file: PathBuf,
        /// The offline age identity file (AGE-SECRET-KEY-1…).
        #[arg(long)]
        identity: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration and say exactly what is wrong and how to fix it.
    Check,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Put an AWS account into custody.
    Create {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        alias: String,
        #[arg(long)]
        root_email: String,
        #[arg(long)]
        approvals_required: Option<u32>,
        /// The account has no root password (AWS centralized root access): its
        /// checkouts open sts:AssumeRoot sessions instead of revealing secrets.
        #[arg(long)]
        centralized_root: bool,
    },
    /// Deposit a secret, read from stdin (or a hidden prompt on a terminal).
    Deposit {
        #[arg(long)]
        account_id: String,
        #[arg(long, value_enum)]
        kind: KindArg,
    },
    /// List accounts and their secret versions (never the secrets).
    List,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and every WebAuthn signature; exits 1 naming what is wrong.
    Verify {
        /// Also prove the database still contains the log this signed checkpoint
        /// commits to (a note, or a saved announcement or checkpoint JSON).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key (`name+id+key`, printed by `serve` and in every
        /// announcement); default: the key recorded in the database.
        #[arg(long, requires = "checkpoint")]
        log_key: Option<String>,
    },
    /// Write every entry to stdout.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Per account: next due, open drill, last proven access, flags; who has not taken part.
    Status {
        /// Report as of this RFC 3339 time instead of now (to reproduce an earlier report).
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Drills due in a period with checklists, checkouts and approval evidence.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: DrillFormat,
        /// RFC 3339, inclusive (e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        until: Option<String>,
    },
    /// Run one scheduler step now (the server does this every minute).
    Run,
}

#[derive(Clone, Copy, ValueEnum)]
enum DrillFormat {
    Jsonl,
    Csv,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Show the delivery backlog and undelivered messages.
    List,
    /// Put messages that exhausted their attempts back in the queue.
    Retry,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Custodian,
    Auditor,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Custodian => Role::Custodian,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum KindArg {
    RootPassword,
    TotpSeed,
    RecoveryNotes,
}

impl From<KindArg> for SecretKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::RootPassword => SecretKind::RootPassword,
            KindArg::TotpSeed => SecretKind::TotpSeed,
            KindArg::RecoveryNotes => SecretKind::RecoveryNotes,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
}

/// Exit codes: 0 success, 1 failure (including a broken audit chain), 2 bad usage or config.
pub fn main() -> ExitCode {
    crate::telemetry::init();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            if matches!(cli.command, Command::Config { .. }) {
                println!("configuration has {} problem(s):", e.problems.len());
                for p in &e.problems {
                    println!("  - {p}");
                }
            } else {
                eprintln!("error: invalid configuration:");
                for p in &e.problems {
                    eprintln!("  - {p}");
                }
                eprintln!("Run `breakglass config check` for details.");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config).await,
        Command::Init { kdf_memory_mib, kdf_passes } => {
            init(config, KdfParams { m_kib: kdf_memory_mib * 1024, t: kdf_passes, p: 1 })
        }
        Command::Invite { roles } => {
            let app = host_app(config)?;
            let inv = app.create_invite(Actor::Host, roles.into_iter().map(Role::from).collect()).await?;
            let roles: Vec<&str> = inv.roles.iter().map(|r| r.as_str()).collect();
            println!("Invite for {} (single use, expires {}):", roles.join(" + "), inv.expires_at);
            println!("{}", inv.invite_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Check } => Ok(config_check(&config)),
        Command::Account { command } => account(config, command).await,
        Command::Audit { command } => audit(config, command),
        Command::Drill { command } => drill(config, command).await,
        Command::Backup { to: Some(dest), command: None } => {
            let db_path = config.db_path();
            if !bootstrap::is_initialized(&db_path)? {
                bail!("{} has no vault to back up.", db_path.display());
            }
            let started = std::time::Instant::now();
            let made = crate::app::backup::write_backup(&db_path, &config.data_dir, &dest, &config.backup.recipients)?;
            println!(
                "Backup written to {} ({} bytes encrypted to {} recipient(s); database {} bytes, {} audit entries, head {}) in {} ms.",
                made.path.display(),
                made.bytes,
                made.recipients,
                made.plain_bytes,
                made.entries,
                made.head,
                started.elapsed().as_millis()
            );
            println!(
                "Check it with the offline key: breakglass backup verify {} --identity KEYFILE",
                made.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { command: Some(BackupCommand::Verify { file, identity }), .. } => {
            let v = crate::app::backup::verify_backup(&file, Some(&identity))?;
            println!(
                "ok: {} opens with {}; schema version {}; {} audit entries, head {}; {} WebAuthn signatures and {} stored checkpoints verified; vault {}",
                file.display(),
                identity.display(),
                v.schema_version,
                v.entries,
                v.head,
                v.approvals_checked,
                v.checkpoints_checked,
                v.vault_recipient.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { .. } => bail!("give --to FILE, or `backup verify FILE --identity KEYFILE`"),
        Command::Restore { from, identity, checkpoints, log_key, accept_loss, no_checkpoint } => {
            let request =
                crate::app::backup::RestoreRequest { from, identity, checkpoints, log_key, accept_loss, no_checkpoint };
            let started = std::time::Instant::now();
            let r = crate::app::backup::restore(&config, &request, &mut OperatorInput(&config), SystemClock.now())?;
            for c in &r.checkpoints {
                println!(
                    "checkpoint {} (size {}): {}",
                    c["source"].as_str().unwrap_or_default(),
                    c["size"],
                    c["verdict"].as_str().unwrap_or_default()
                );
            }
            if let Some(lost) = r.lost_entries {
                println!(
                    "LOSS ACCEPTED: {lost} published audit entries are not in this database (recorded, announced as critical)."
                );
            }
            println!(
                "Restored {} ({} audit entries, head {}; the chain verifies and the seal opens the vault); recorded as entry {} in {} ms.",
                config.db_path().display(),
                r.entries,
                r.head,
                r.recorded_seq,
                started.elapsed().as_millis()
            );
            println!("Next: start the service, then `breakglass audit verify`.");
            Ok(ExitCode::SUCCESS)
        }
        Command::RecoveryKit { out } => recovery_kit(&config, out),
        Command::Outbox { command } => {
            let app = host_app(config)?;
            match command {
                OutboxCommand::Retry => println!(
                    "{} failed announcement(s) queued again; the server delivers them.",
                    app.retry_failed().await?
                ),
                OutboxCommand::List => {
                    let s = app.outbox_status().await?;
                    println!(
                        "undelivered: {}, failed: {}, oldest undelivered: {}",
                        s.undelivered,
                        s.failed,
                        s.oldest_undelivered_at.unwrap_or_else(|| "-".into())
                    );
                    for m in app.outbox_list(None, None).await?.into_iter().filter(|m| m.state != "delivered") {
                        println!(
                            "{:>6}  {:<9} {:<28} attempts {:<3} {}",
                            m.id,
                            m.state,
                            m.event,
                            m.attempts,
                            m.last_error.unwrap_or_default()
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn recovery_kit(config: &Config, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let db_path = config.db_path();
    if !bootstrap::is_initialized(&db_path)? {
        bail!("{} has no vault: there is nothing to describe yet.", db_path.display());
    }
    let kit = crate::app::recovery_kit::generate(config, SystemClock.now())?;
    match &out {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(kit.page.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            f.sync_all()?;
            eprintln!(
                "Recovery kit written to {} ({} accounts, {} custodians; sha256 {}), recorded as audit entry {}.",
                path.display(),
                kit.accounts,
                kit.custodians,
                kit.page_sha256,
                kit.recorded_seq
            );
            eprintln!(
                "Open it in a browser and print it (or print to PDF); deploy/RUNBOOK.md section 8e says where to keep it."
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(kit.page.as_bytes())?;
            stdout.flush()?;
            eprintln!("Recovery kit recorded as audit entry {} (sha256 {}).", kit.recorded_seq, kit.page_sha256);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rfc3339_arg(v: Option<String>, default: i64) -> anyhow::Result<i64> {
    match v {
        None => Ok(default),
        Some(s) => Ok(time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{s:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z"))?
            .unix_timestamp()),
    }
}

async fn drill(config: Config, command: DrillCommand) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = match &command {
        DrillCommand::Status { as_of: Some(at) } => Arc::new(crate::clock::FixedClock::new(
            time::OffsetDateTime::from_unix_timestamp(rfc3339_arg(Some(at.clone()), 0)?)?,
        )),
        _ => Arc::new(SystemClock),
    };
    let app = host_app_with_clock(config, clock)?;
    match command {
        DrillCommand::Run => {
            let t = app.run_drills().await?;
            println!(
                "opened {}, overdue {}, overdue reminders {}, missed {}",
                t.opened, t.became_overdue, t.reminded_overdue, t.missed
            );
        }
        DrillCommand::Status { .. } => {
            let s = app.drill_status().await?;
            for a in &s.accounts {
                let open = a
                    .open_drill
                    .as_ref()
                    .map(|d| format!("{} (due {})", d.state, d.due_at))
                    .unwrap_or_else(|| "-".into());
                let proven = a
                    .last_proven_access
                    .as_ref()
                    .and_then(|d| d.completed_at.clone())
                    .unwrap_or_else(|| "never".into());
                let flag = if a.flag.is_some() { "  FLAGGED: last drill failed" } else { "" };
                println!(
                    "{}  {:<20} next {:<21} open {:<34} proven {}{flag}",
                    a.account_id,
                    a.alias,
                    a.next_drill_due_at.clone().unwrap_or_else(|| "-".into()),
                    open,
                    proven
                );
            }
            if !s.not_exercised.is_empty() {
                let names: Vec<String> = s.not_exercised.iter().map(|p| format!("{} <{}>", p.name, p.email)).collect();
                println!("not in a passed drill for {} months: {}", s.coverage_months, names.join(", "));
            }
        }
        DrillCommand::Export { format, since, until } => {
            let rows = app.drill_evidence(rfc3339_arg(since, i64::MIN)?, rfc3339_arg(until, i64::MAX)?).await?;
            match format {
                DrillFormat::Jsonl => {
                    for r in &rows {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                DrillFormat::Csv => print!("{}", crate::app::drills::evidence_csv(&rows)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks for the passphrase on the terminal, or reads it from the configured file or
/// from piped stdin. Never from argv or the environment.
struct OperatorInput<'a>(&'a Config);

impl SealInput for OperatorInput<'_> {
    fn passphrase(&mut self, confirm: bool) -> Result<SecretString, AppError> {
        if let Some(path) = &self.0.seal.passphrase_file {
            return Ok(seal::read_passphrase_file(path)?);
        }
        let io = |e: std::io::Error| AppError::Internal(format!("cannot read the passphrase: {e}"));
        if std::io::stdin().is_terminal() {
            let first = SecretString::from(rpassword::prompt_password("Vault passphrase: ").map_err(io)?);
            if confirm {
                let again = SecretString::from(rpassword::prompt_password("Repeat the passphrase: ").map_err(io)?);
                if first.expose_secret() != again.expose_secret() {
                    return Err(AppError::invalid(
                        "passphrase_mismatch",
                        "The two passphrases differ; nothing was written.",
                    ));
                }
            }
            Ok(first)
        } else {
            let bytes = read_capped(std::io::stdin().lock(), STDIN_LIMIT_BYTES, true).map_err(|e| match e {
                CappedReadError::Io(e) => io(e),
                other => AppError::invalid("passphrase_too_long", other.to_string()),
            })?;
            let line = std::str::from_utf8(&bytes)
                .map_err(|_| AppError::invalid("passphrase_not_utf8", "The passphrase on stdin is not UTF-8 text."))?;
            Ok(SecretString::from(line.trim_end_matches(['\n', '\r']).to_owned()))
        }
    }
}

fn init(config: Config, kdf: KdfParams) -> anyhow::Result<ExitCode> {
    let db_path = config.db_path();
    if config.seal.mode == SealMode::DevKeyFile {
        eprintln!(
            "warning: seal.mode is dev-key-file: the key sits next to the database. Use key-file or passphrase for real credentials."
        );
    }
    let vault = bootstrap::init_vault(&db_path, &config, SystemClock.now(), &mut OperatorInput(&config), kdf)?;
    println!("Vault created in {} (recipient {}).", db_path.display(), vault.recipient());
    let name = format!("{}/breakglass/audit", config.rp_id());
    let signer = Db::open(&db_path)?
        .with(|conn| crate::app::announce::ensure_log_key(conn, &vault, &name, SystemClock.now()))?;
    println!("Audit checkpoints will be signed by {}", signer.verifier_key());
    match config.seal.mode {
        SealMode::Passphrase => println!(
            "Sealed with your passphrase (argon2id, {} MiB, {} passes). Without it the vault cannot be opened.",
            kdf.m_kib / 1024,
            kdf.t
        ),
        _ => println!(
            "Sealed with the key file {}. Back it up offline: without it the vault cannot be opened.",
            config.key_file_path().unwrap_or_default().display()
        ),
    }
    println!("Next: `breakglass serve` prints the first admin's invite.");
    Ok(ExitCode::SUCCESS)
}

fn config_check(config: &Config) -> ExitCode {
    let mut problems = Vec::new();
    match config.seal.mode {
        SealMode::KeyFile | SealMode::DevKeyFile => {
            if let Some(path) = config.key_file_path().filter(|p| p.exists()) {
                if let Err(e) = seal::read_key_file(&path) {
                    problems.push(e.to_string());
                }
            } else if config.seal.mode == SealMode::KeyFile {
                problems.push(format!(
                    "seal.key_file {} does not exist yet: `breakglass init` creates it.",
                    config.seal.key_file.clone().unwrap_or_default().display()
                ));
            }
        }
        SealMode::Passphrase => {
            if let Some(Err(e)) = config.seal.passphrase_file.as_deref().map(seal::read_passphrase_file) {
                problems.push(e.to_string().replace("key file", "passphrase file"));
            }
        }
    }
    if problems.is_empty() {
        println!("configuration OK");
        println!("  data_dir    {}", config.data_dir.display());
        println!("  listen      {}", config.listen);
        println!("  origin      {} (WebAuthn RP id {})", config.origin_header(), config.rp_id());
        println!("  seal.mode   {:?}", config.seal.mode);
        ExitCode::SUCCESS
    } else {
        println!("configuration has {} problem(s):", problems.len());
        for p in problems {
            println!("  - {p}");
        }
        ExitCode::from(2)
    }
}

/// An `App` for host commands: no unsealed vault, only public keys are needed.
fn host_app(config: Config) -> anyhow::Result<App> {
    host_app_with_clock(config, Arc::new(SystemClock))
}

fn host_app_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let db_path = config.db_path();
    if !bootstrap::is_initialized(&db_path)? {
        bail!(
            "{} has no vault yet: run `breakglass init` (or start `breakglass serve` once in dev mode).",
            db_path.display()
        );
    }
    let db = Db::open(&db_path)?;
    Ok(App::new(db, clock, Arc::new(config), None)?)
}

/// The most the CLI reads from stdin: far above any secret it accepts (recovery
/// notes, the longest, are at most 4,096 characters), far below harm.
pub const STDIN_LIMIT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    #[error("stdin holds more than {0} bytes; no secret is that long. Nothing was read or stored.")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Read up to `limit` bytes (or the first line when `first_line`) into memory that is
/// wiped when dropped, allocated once so no copy is left behind by a reallocation.
/// More than `limit` bytes is an error, not a silent cut.
pub fn read_capped(
    reader: impl std::io::BufRead,
    limit: usize,
    first_line: bool,
) -> Result<Zeroizing<Vec<u8>>, CappedReadError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
    let mut capped = reader.take(limit as u64 + 1);
    if first_line {
        std::io::BufRead::read_until(&mut capped, b'\n', &mut buf)?;
    } else {
        capped.read_to_end(&mut buf)?;
    }
    if buf.len() > limit {
        return Err(CappedReadError::TooLong(limit));
    }
    Ok(buf)
}

fn read_secret_from_stdin(kind: SecretKind) -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(format!("Paste the {} (input hidden): ", kind.as_str().replace('_', " ")))?;
        return Ok(SecretString::from(v));
    }
    let bytes =
        read_capped(std::io::stdin().lock(), STDIN_LIMIT_BYTES, false).context("reading the secret from stdin")?;
    let buf = std::str::from_utf8(&bytes).context("the secret on stdin is not UTF-8 text")?;
    let trimmed = buf.strip_suffix('\n').unwrap_or(buf);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(SecretString::from(trimmed.to_owned()))
}

async fn account(config: Config, command: AccountCommand) -> anyhow::Result<ExitCode> {
    let app = host_app(config)?;
    match command {
        AccountCommand::Create { account_id, alias, root_email, approvals_required, centralized_root } => {
            let a = app
                .create_account(
                    Actor::Host,
                    NewAccount {
                        account_id,
                        alias,
                        root_email,
                        approvals_required,
                        reveal_window_minutes: None,
                        max_checkout_minutes: None,
                        veto: None,
                        drill_schedule: None,
                        account_type: centralized_root
                            .then_some(crate::domain::root_task::AccountType::CentralizedRoot),
                    },
                )
                .await?;
            if centralized_root {
                println!(
                    "Account {} ({}) is in custody as centralized_root: nothing to deposit; its checkouts open AWS root-task sessions (aws.root_tasks_enabled).",
                    a.account_id, a.alias
                );
            } else {
                println!(
                    "Account {} ({}) is in custody. Deposit its root password and TOTP seed next.",
                    a.account_id, a.alias
                );
            }
        }
        AccountCommand::Deposit { account_id, kind } => {
            let kind = SecretKind::from(kind);
            let value = read_secret_from_stdin(kind)?;
            let d = app.deposit_secret(Actor::Host, account_id, kind, value).await?;
            println!("Deposited {} version {} for account {}.", d.kind, d.version, d.account_id);
        }
        AccountCommand::List => {
            for a in app.list_accounts().await? {
                let secrets: Vec<String> = a
                    .secrets
                    .iter()
                    .map(|s| format!("{} v{}", s.kind, s.versions.first().map(|v| v.version).unwrap_or(0)))
                    .collect();
                println!("{}  {:<24} {:<13} {}", a.account_id, a.alias, a.state, secrets.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit(config: Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let conn = store::open_read_only(&config.db_path())?;
    match command {
        AuditCommand::Verify { checkpoint, log_key } => {
            let status = verify_log(&conn, Some(&config.data_dir.join(crate::app::audit::HIGH_WATER_FILE)))?;
            for w in &status.warnings {
                println!("{w}");
            }
            if let Some(problem) = &status.problem {
                println!("{problem}");
                println!("{} entries before it verified (head {}).", status.entries, status.head);
            }
            for p in &status.approval_problems {
                println!("{p}");
            }
            let mut ok = status.ok;
            if let Some(path) = checkpoint {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                match crate::app::audit::verify_checkpoint(
                    &conn,
                    &crate::app::audit::extract_note(&text),
                    log_key.as_deref(),
                ) {
                    Ok(msg) => println!("{msg}"),
                    Err(why) => {
                        println!("{why}");
                        ok = false;
                    }
                }
            }
            if ok {
                println!(
                    "ok: {} entries, head {}; {} WebAuthn signatures verified (approvals, denials, releases); {} stored checkpoints verified",
                    status.entries, status.head, status.approvals_checked, status.checkpoints_checked
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        AuditCommand::Export { format: ExportFormat::Jsonl } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut result = Ok(());
            store::audit::for_each(&conn, |e| {
                result = serde_json::to_writer(&mut out, &e)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(out.write_all(b"\n")?));
                result.is_ok()
            })?;
            result?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let db_path = config.db_path();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let vault = if bootstrap::is_initialized(&db_path)? {
        bootstrap::unseal_vault(&db_path, &config, &mut OperatorInput(&config))?
    } else if config.seal.mode == SealMode::DevKeyFile {
        let v =
            bootstrap::init_vault(&db_path, &config, clock.now(), &mut OperatorInput(&config), KdfParams::default())?;
        eprintln!();
        eprintln!("  ******************************************************************");
        eprintln!("  *  DEV MODE: the vault key file is {}", config.dev_key_file().display());
        eprintln!("  *  next to the database. Anyone who can read the data dir can read");
        eprintln!("  *  every secret. This is for trying breakglass out. For real root");
        eprintln!("  *  credentials run `breakglass init` with seal.mode = \"key-file\"");
        eprintln!("  *  or \"passphrase\" (deploy/RUNBOOK.md).");
        eprintln!("  ******************************************************************");
        eprintln!();
        v
    } else {
        bail!("{} has no vault: run `breakglass init` first (seal.mode is {:?}).", db_path.display(), config.seal.mode);
    };
    let db = Db::open(&db_path)?;
    if let Some(inv) = db.with(|conn| bootstrap::first_admin_invite(conn, &config, clock.now()))? {
        println!();
        println!("No admin is enrolled yet. Open this single-use link to enrol the first admin");
        println!("(expires {}):", inv.expires_at);
        println!();
        println!("    {}", inv.invite_url);
        println!();
        println!("Enrolling through the API: POST /api/v1/enrol/start with invite_token = the part after '#'.");
        println!();
    }
    let listen: SocketAddr = config.listen.parse().context("listen address")?;
    let topic = config.sns.topic_arn.clone();
    let root_queue = config.aws.root_activity_queue_url.clone();
    let root_wait = config.aws.root_activity_wait_seconds;
    let posture = config.aws.posture_enabled.then(|| config.aws.posture_role_name.clone());
    let root_tasks = config.aws.root_tasks_enabled;
    let mut app = App::new(db, clock, Arc::new(config), Some(vault))?;
    if topic.is_empty() {
        eprintln!("warning: no sns.topic_arn: announcements are kept in the outbox (no_sink) and not published.");
    } else {
        app = app.with_sink(SnsSink::from_environment(&topic).await);
        println!("announcing to {topic}");
    }
    if root_queue.is_empty() {
        eprintln!("warning: no aws.root_activity_queue_url: root sign-ins in AWS are not reconciled with checkouts.");
    } else {
        let queue = crate::aws::RootActivityQueue::from_environment(&root_queue).await;
        app = app.with_root_feed(crate::aws::RootFeed::new(queue, root_wait));
        println!("reconciling root activity from {root_queue}");
    }
    if let Some(role) = posture {
        app = app.with_posture_reader(crate::aws::PostureReader::from_environment(&role).await);
        println!(
            "checking root posture{}",
            if role.is_empty() { String::new() } else { format!(" through role {role}") }
        );
    }
    if root_tasks {
        // A misconfiguration (no region) stops the start: every root-task release would fail.
        let tasks = crate::aws::RootTasks::from_environment().await.map_err(anyhow::Error::msg)?;
        println!("opening AWS root-task sessions (sts:AssumeRoot) through the STS endpoint of {}", tasks.region());
        app = app.with_root_tasks(tasks);
    }
    if let Some(vkey) = app.log_verifier_key() {
        println!("audit checkpoints are signed by {vkey}");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let server = Server::build(app.clone(), listener, ServerOptions::from_config(&app.config));
    let local = server.local_addr()?;
    println!("breakglass listening on http://{local} (origin {})", app.config.origin_header());
    server.run(shutdown_signal()).await?;
    // Failed sign-ins counted since the last minute's housekeeping.
    if let Err(e) = app.record_sign_in_failures().await {
        tracing::warn!(error = %e, "could not record the last failed sign-ins");
    }
    println!("breakglass stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_reads_are_capped_and_say_so() {
        let ok = read_capped(&b"secret\n"[..], 16, false).unwrap();
        assert_eq!(ok.as_slice(), b"secret\n");
        let exact = vec![b'x'; 16];
        assert_eq!(read_capped(exact.as_slice(), 16, false).unwrap().len(), 16);
        let over = vec![b'x'; 17];
        let e = read_capped(over.as_slice(), 16, false).unwrap_err();
        assert!(e.to_string().contains("more than 16 bytes"), "{e}");
        // First line only: what follows the newline is not read; a longer line is refused.
        assert_eq!(read_capped(&b"pass phrase\nrest"[..], 16, true).unwrap().as_slice(), b"pass phrase\n");
        assert!(matches!(read_capped(&[b'y'; 100][..], 16, true), Err(CappedReadError::TooLong(16))));
    }
}
