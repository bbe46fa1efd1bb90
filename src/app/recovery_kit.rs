//! The printed recovery kit (`breakglass recovery-kit`, deploy/RUNBOOK.md section 8e):
//! one self-contained HTML page per deployment that tells the next person what
//! breakglass is, where it runs and where its copies are, how to check its log
//! offline, what it holds (accounts, custodians — never a secret or a ciphertext) and
//! how to restore it.
//!
//! Built from public data only: nothing is unsealed. Printing is recorded
//! (`recovery_kit.generated`) with a digest of each part of the page, and
//! [`kit_status`] compares those digests with the current state, so the dashboard can
//! say the paper copy is stale once accounts, custodians or keys changed.
use askama::Template;
use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::announce;
use crate::{
    config::{Config, SealMode},
    crypto::checkpoint,
    domain::{
        Custody,
        event::{Event, Subject},
    },
    error::AppError,
    store::{self, StoreError, outbox},
};

/// Where this deployment runs and where its copies are.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deployment {
    pub host_name: String,
    pub origin: String,
    pub data_dir: String,
    pub database: String,
    pub seal: String,
    pub litestream: bool,
    pub replica: String,
    pub backup_dir: String,
    pub backup_every_hours: u32,
    pub backup_keep: u32,
    pub backup_recipients: Vec<String>,
    pub sns_topic: String,
}

/// The public keys that identify this vault and its log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Keys {
    /// `name+id+key`: checks every signed checkpoint (announcements, `audit verify --checkpoint`).
    pub log_verifier_key: Option<String>,
    /// The vault's public age recipient (which vault a backup holds).
    pub vault_recipient: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KitAccount {
    pub account_id: String,
    pub alias: String,
    pub root_email: String,
    /// `policy` or `quorum`.
    pub custody: String,
    /// What a release needs, in words: `1 approval`, `quorum: 2 of 3 holders`.
    pub release_rule: String,
    pub approvers: String,
    pub veto: bool,
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KitCustodian {
    pub name: String,
    pub email: String,
    pub roles: String,
    pub status: String,
    /// Labels of the security keys enrolled (not the keys).
    pub keys: Vec<String>,
}

/// Everything the kit lists, apart from the date it was printed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Facts {
    pub deployment: Deployment,
    pub keys: Keys,
    pub accounts: Vec<KitAccount>,
    pub custodians: Vec<KitCustodian>,
}

/// SHA-256 (hex) of each part of the kit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub deployment: String,
    pub keys: String,
    pub accounts: String,
    pub custodians: String,
}

fn digest(v: &impl Serialize) -> Result<String, AppError> {
    let bytes = serde_json::to_vec(v).map_err(|e| AppError::unexpected("hashing the recovery kit", e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

impl Facts {
    pub fn digests(&self) -> Result<Digests, AppError> {
        Ok(Digests {
            deployment: digest(&self.deployment)?,
            keys: digest(&self.keys)?,
            accounts: digest(&self.accounts)?,
            custodians: digest(&self.custodians)?,
        })
    }
}

/// This machine's name, as the kernel knows it (`/proc/sys/kernel/hostname`).
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Read what the kit lists from `conn` (read-only is enough) and `config`.
pub fn facts(conn: &Connection, config: &Config, host_name: &str) -> Result<Facts, StoreError> {
    let seal = match config.seal.mode {
        SealMode::Passphrase => "passphrase (argon2id); kept by people, not on this host".to_owned(),
        SealMode::KeyFile => format!(
            "key file {} (its offline copy is needed to restore)",
            config.key_file_path().unwrap_or_default().display()
        ),
        SealMode::DevKeyFile => {
            format!("DEV key file {} next to the database (not for real credentials)", config.dev_key_file().display())
        }
    };
    let deployment = Deployment {
        host_name: host_name.to_owned(),
        origin: config.origin_header(),
        data_dir: config.data_dir.display().to_string(),
        database: config.db_path().display().to_string(),
        seal,
        litestream: config.replication.litestream,
        replica: config.replication.replica.clone(),
        backup_dir: config.backup.dir.display().to_string(),
        backup_every_hours: config.backup.every_hours,
        backup_keep: config.backup.keep,
        backup_recipients: config.backup.recipients.clone(),
        sns_topic: config.sns.topic_arn.clone(),
    };
    let log_verifier_key = outbox::log_key(conn)?.and_then(|row| {
        let public: [u8; 32] = row.public_key.as_slice().try_into().ok()?;
        Some(checkpoint::verifier_key(&row.key_name, &public))
    });
    let vault_recipient = store::accounts::vault(conn)?.map(|v| v.recipient);
    let people = store::people::list_custodians(conn)?;
    let name_of = |id: &str| {
        people.iter().find(|c| c.id == id).map(|c| format!("{} <{}>", c.name, c.email)).unwrap_or_else(|| id.into())
    };
    let mut accounts = Vec::new();
    for a in store::accounts::list_accounts(conn)? {
        let (release_rule, holders) = match a.custody {
            Custody::Quorum => {
                let holders: Vec<String> = store::shares::shares_of_account(conn, &a.account_id)?
                    .iter()
                    .map(|s| name_of(&s.custodian_id))
                    .collect();
                (format!("quorum: {} of {} holders", a.quorum_k.unwrap_or(0), holders.len()), holders)
            }
            Custody::Policy => (format!("{} approval(s) besides the requester", a.approvals_required), Vec::new()),
        };
        let approvers = match a.approver_set {
            store::accounts::ApproverMode::All => "any active custodian".to_owned(),
            store::accounts::ApproverMode::Listed => store::checkouts::approvers(conn, &a.account_id)?
                .iter()
                .map(|id| name_of(id))
                .collect::<Vec<_>>()
                .join(", "),
        };
        accounts.push(KitAccount {
            custody: a.custody.as_str().to_owned(),
            account_id: a.account_id,
            alias: a.alias,
            root_email: a.root_email,
            release_rule,
            approvers,
            veto: a.veto,
            holders,
        });
    }
    let mut custodians = Vec::new();
    for c in &people {
        let keys = store::people::credentials_of(conn, &c.id)?.into_iter().map(|k| k.label).collect();
        custodians.push(KitCustodian {
            name: c.name.clone(),
            email: c.email.clone(),
            roles: c.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            status: c.status.clone(),
            keys,
        });
    }
    Ok(Facts { deployment, keys: Keys { log_verifier_key, vault_recipient }, accounts, custodians })
}

#[derive(Template)]
#[template(path = "recovery_kit.html")]
struct KitPage<'a> {
    f: &'a Facts,
    printed_at: String,
    restore_steps: Vec<Step>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// One step of the restore procedure: what to do, and the command when there is one.
pub struct Step {
    pub text: String,
    pub cmd: String,
}

fn step(text: impl Into<String>, cmd: impl Into<String>) -> Step {
    Step { text: text.into(), cmd: cmd.into() }
}

/// The restore procedure of deploy/RUNBOOK.md section 8c, with this deployment's values.
fn restore_steps(f: &Facts) -> Vec<Step> {
    let d = &f.deployment;
    let mut steps = vec![step(
        format!(
            "On the new host, install breakglass as in RUNBOOK sections 1–2: the binary, the breakglass user, the config (origin {}, data dir {}). Bring the seal: {}. Do not run init.",
            d.origin, d.data_dir, d.seal
        ),
        "",
    )];
    if d.litestream {
        steps.push(step(
            format!(
                "Newest copy, about a second behind: the Litestream replica{}. Restore it with the replica's credentials (/etc/breakglass/litestream.env):",
                if d.replica.is_empty() { String::new() } else { format!(" ({})", d.replica) }
            ),
            format!("litestream restore -config /etc/litestream.yml -o /var/tmp/restored.db {}", d.database),
        ));
    }
    if !d.backup_recipients.is_empty() {
        steps.push(step(
            format!(
                "{} an encrypted backup{}: bring the offline backup key (the identity of {}) for this step only, and add --identity breakglass-backup.key to the restore below.",
                if d.litestream { "Or, from" } else { "From" },
                if d.backup_dir.is_empty() {
                    String::new()
                } else {
                    format!(" (the newest breakglass-<time>.db.age in {})", d.backup_dir)
                },
                d.backup_recipients.join(" or ")
            ),
            "",
        ));
    }
    steps.push(step(
        "Find the newest announcement you saved (an SNS e-mail or queue copy): each carries a signed checkpoint. Then check the copy and put it in place; this refuses to overwrite anything, checks the file, the audit chain and the seal, and compares the log with the checkpoint:",
        format!(
            "breakglass restore --from /var/tmp/restored.db --checkpoint last-announcement.json{}",
            f.keys.log_verifier_key.as_deref().map(|k| format!(" --log-key {k}")).unwrap_or_default()
        ),
    ));
    steps.push(step(
        "Start it and check:",
        "sudo systemctl start breakglass litestream && breakglass audit verify && curl -fsS http://127.0.0.1:8080/readyz",
    ));
    steps.push(step(
        "Refused as older than a checkpoint already published: find a newer backup or replica. If there is none, tell the auditors and subscribers, then run the restore again with --accept-loss (recorded and announced as critical). Nothing saved to compare with: --no-checkpoint (also recorded).",
        "",
    ));
    steps.push(step(
        "Afterwards: the custodians sign in and run a drill checkout; print a new recovery kit (breakglass recovery-kit) and destroy this copy.",
        "",
    ));
    steps
}

/// The page, dated `printed_at`.
pub fn render(f: &Facts, printed_at: OffsetDateTime) -> Result<String, AppError> {
    KitPage { f, printed_at: rfc3339(printed_at), restore_steps: restore_steps(f) }
        .render()
        .map_err(|e| AppError::unexpected("rendering the recovery kit", e))
}

/// What `recovery-kit` made.
#[derive(Debug, Clone)]
pub struct KitMade {
    pub page: String,
    pub page_sha256: String,
    pub accounts: usize,
    pub custodians: usize,
    /// The audit entry that records it.
    pub recorded_seq: u64,
}

/// Build the kit for the database at `config.db_path()` (read-only), dated `now`, and
/// record it (`recovery_kit.generated`) in one transaction of its own. Never unseals.
pub fn generate(config: &Config, now: OffsetDateTime) -> Result<KitMade, AppError> {
    let host = host_name();
    let f = {
        let conn = store::open_read_only(&config.db_path())?;
        facts(&conn, config, &host)?
    };
    let page = render(&f, now)?;
    let page_sha256 = hex::encode(Sha256::digest(page.as_bytes()));
    let d = f.digests()?;
    let event = Event::RecoveryKitGenerated {
        page_sha256: page_sha256.clone(),
        accounts: f.accounts.len() as u64,
        custodians: f.custodians.len() as u64,
        deployment_digest: d.deployment,
        keys_digest: d.keys,
        accounts_digest: d.accounts,
        custodians_digest: d.custodians,
    };
    let mut conn = store::open(&config.db_path())?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let recorded_seq = store::transact(&mut conn, |tx| {
        Ok::<_, AppError>(announce::record(tx, now, &super::Actor::Host.audit_name(), &Subject::Vault, &event)?.seq)
    })?;
    Ok(KitMade { page, page_sha256, accounts: f.accounts.len(), custodians: f.custodians.len(), recorded_seq })
}

/// Whether the printed kit still says what is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KitStatus {
    Never,
    Current {
        printed_at: String,
    },
    /// `changed`: which parts differ (`deployment`, `keys`, `accounts`, `custodians`).
    Stale {
        printed_at: String,
        changed: Vec<&'static str>,
    },
}

/// Compare the newest `recovery_kit.generated` entry with the current state.
pub fn kit_status(conn: &Connection, config: &Config, host_name: &str) -> Result<KitStatus, AppError> {
    let last = crate::store::audit::newest_of(conn, "recovery_kit.generated")?;
    let Some((at, details)) = last else { return Ok(KitStatus::Never) };
    let value: serde_json::Value =
        serde_json::from_str(&details).map_err(|e| AppError::unexpected("reading the recovery kit entry", e))?;
    let Ok(Event::RecoveryKitGenerated { deployment_digest, keys_digest, accounts_digest, custodians_digest, .. }) =
        Event::parse("recovery_kit.generated", &value)
    else {
        return Err(AppError::Internal("a recovery_kit.generated entry does not parse".into()));
    };
    let now = facts(conn, config, host_name)?.digests()?;
    let changed: Vec<&'static str> = [
        ("deployment", deployment_digest == now.deployment),
        ("keys", keys_digest == now.keys),
        ("accounts", accounts_digest == now.accounts),
        ("custodians", custodians_digest == now.custodians),
    ]
    .into_iter()
    .filter_map(|(part, same)| (!same).then_some(part))
    .collect();
    let printed_at = at;
    Ok(if changed.is_empty() { KitStatus::Current { printed_at } } else { KitStatus::Stale { printed_at, changed } })
}

impl super::App {
    /// [`kit_status`] for the dashboard.
    #[tracing::instrument(skip_all)]
    pub async fn recovery_kit_status(&self) -> Result<KitStatus, AppError> {
        let config = self.config.clone();
        self.db.call(move |conn| kit_status(conn, &config, &host_name())).await
    }
}
