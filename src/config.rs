//! Settings: embedded defaults, then a TOML file (`--config` / `BREAKGLASS_CONFIG`),
//! then `BREAKGLASS_*` environment variables. Unknown keys and unknown
//! `BREAKGLASS_*` variables are errors, so a typo never silently falls back to a default.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use url::Url;

pub const DEFAULT_DATA_DIR: &str = "./breakglass-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ORIGIN: &str = "http://localhost:8080";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the SQLite database, backups and (dev only) the seal key file.
    pub data_dir: PathBuf,
    /// Socket address to listen on.
    pub listen: String,
    /// Public URL of the service, as browsers see it. The WebAuthn RP id is its host.
    pub origin: String,
    /// Name shown by authenticators during enrolment.
    pub rp_name: String,
    pub seal: SealConfig,
    pub security: SecurityConfig,
    pub http: HttpConfig,
    pub policy: PolicyDefaults,
    pub sns: SnsConfig,
    pub backup: BackupConfig,
    pub metrics: MetricsConfig,
    pub replication: ReplicationConfig,
    pub aws: AwsConfig,
}

/// Encrypted backups (`breakglass backup`, and scheduled ones in `serve`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// age recipients (`age1…`) every backup is encrypted to: an offline key the
    /// organisation keeps, never on this host.
    pub recipients: Vec<String>,
    /// Where `serve` writes scheduled backups. Empty: no scheduled backups.
    pub dir: PathBuf,
    /// A scheduled backup is taken when the newest one in `dir` is this old.
    pub every_hours: u32,
    /// Scheduled backups kept in `dir` (older ones are deleted).
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self { recipients: Vec::new(), dir: PathBuf::new(), every_hours: 24, keep: 14 }
    }
}

/// `GET /metrics` (Prometheus).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A file holding the bearer token scrapers must send. Empty: `/metrics` is off (404).
    pub token_file: PathBuf,
}

/// Continuous replication by an external engine (Litestream).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Litestream replicates the database: breakglass leaves WAL checkpoints to it
    /// (no `wal_checkpoint(TRUNCATE)` after quorum checkouts; docs/reliability.md).
    pub litestream: bool,
    /// Where the replica lives, in words the next operator can act on (e.g.
    /// `s3://acme-breakglass-replica/prod, eu-west-1, AWS account 222233334444`).
    /// Printed in the recovery kit; breakglass itself never uses it. Never credentials.
    pub replica: String,
}

/// The AWS side beyond announcements (deploy/aws/): the root activity feed. Region,
/// credentials and endpoint come from the standard AWS chain (`AWS_ENDPOINT_URL_SQS`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// The central SQS queue EventBridge routes CloudTrail root events to (the central
    /// stack's `RootActivityQueueUrl` output). Empty: no feed.
    pub root_activity_queue_url: String,
    /// Tolerance around a release window when explaining a root event (clock skew and
    /// CloudTrail's delay), in seconds.
    pub root_activity_slack_seconds: u32,
    /// Long-poll wait of each receive, in seconds (0 to 20).
    pub root_activity_wait_seconds: u32,
    /// Read each account's root posture from AWS (IAM account summary, alternate
    /// contacts, root e-mail in Organizations) on a schedule and on demand.
    pub posture_enabled: bool,
    /// The read-only role assumed in each account (the member stack's posture role);
    /// empty: the service's own credentials.
    pub posture_role_name: String,
    /// Hours between scheduled checks of every account (0: on demand only).
    pub posture_interval_hours: u32,
    /// Open `sts:AssumeRoot` sessions for `centralized_root` accounts (docs/root-tasks.md)
    /// with the service's own credentials; needs a region (no global endpoint).
    pub root_tasks_enabled: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            root_activity_queue_url: String::new(),
            root_activity_slack_seconds: 300,
            root_activity_wait_seconds: 20,
            posture_enabled: false,
            posture_role_name: String::new(),
            posture_interval_hours: 24,
            root_tasks_enabled: false,
        }
    }
}

/// Announcements. Region, credentials and endpoint come from the standard AWS chain
/// (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL_SNS`, container and instance roles).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SnsConfig {
    /// The topic every event is published to. Empty: announcements stay in the outbox
    /// (`no_sink`) until one is configured.
    pub topic_arn: String,
    /// Delivery attempts before a message is marked `failed` (retry with `breakglass outbox retry`).
    pub max_attempts: u32,
    /// First retry delay; it doubles (with jitter) up to `max_backoff_seconds`.
    pub base_backoff_seconds: u32,
    pub max_backoff_seconds: u32,
}

impl Default for SnsConfig {
    fn default() -> Self {
        Self { topic_arn: String::new(), max_attempts: 12, base_backoff_seconds: 5, max_backoff_seconds: 900 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SealMode {
    /// Try-it-out mode: a key file generated in the data dir. Loudly not for production.
    DevKeyFile,
    /// A 32-byte key file (raw or 64 hex characters), mode 0600, outside the data dir.
    KeyFile,
    /// A passphrase stretched with argon2id, read from `passphrase_file` or a prompt.
    Passphrase,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    pub mode: SealMode,
    /// Key file for `key-file` mode.
    pub key_file: Option<PathBuf>,
    /// File holding the passphrase for `passphrase` mode (first line). Without it the
    /// passphrase is asked for on the terminal.
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub invite_ttl_hours: u32,
    pub cooling_off_hours: u32,
    pub ceremony_ttl_seconds: u32,
    pub session_idle_minutes: u32,
    pub session_absolute_hours: u32,
    /// Adding a credential needs a sign-in at most this old.
    pub reauth_window_minutes: u32,
    /// A checkout request waiting for approvals expires after this long.
    pub request_pending_ttl_hours: u32,
    /// An approved request not released within this long expires.
    pub request_approved_ttl_minutes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout_seconds: u32,
    /// A client must send a whole request header within this long (also the longest a
    /// kept-alive connection waits for its next request); then the connection is closed.
    pub header_read_timeout_seconds: u32,
    /// A connection on which no byte moves either way for this long is closed (a
    /// stalled upload, or a download nobody reads). At least `request_timeout_seconds`.
    pub idle_timeout_seconds: u32,
    /// Sustained rate of WebAuthn ceremony requests (enrol, sign-in) per client address.
    pub ceremony_rate_per_minute: u32,
    /// Burst allowed above that rate.
    pub ceremony_burst: u32,
    /// Addresses of reverse proxies in front of the service. Only from these is
    /// `X-Forwarded-For` read: from the right, past these addresses, across all its
    /// header lines (http/middleware.rs `RateLimiter::client_ip`).
    pub trusted_proxies: Vec<String>,
}

/// Defaults applied to accounts created without an explicit policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyDefaults {
    pub approvals_required: u32,
    pub reveal_window_minutes: u32,
    pub max_checkout_minutes: u32,
    pub drill_schedule: String,
    /// Days a drill may stay undone after it falls due before it is overdue.
    pub drill_grace_days: u32,
    /// Custodians who have not taken part in a drill for this many months are listed.
    pub drill_coverage_months: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN.into(),
            origin: DEFAULT_ORIGIN.into(),
            rp_name: "breakglass".into(),
            seal: SealConfig::default(),
            security: SecurityConfig::default(),
            http: HttpConfig::default(),
            policy: PolicyDefaults::default(),
            sns: SnsConfig::default(),
            backup: BackupConfig::default(),
            metrics: MetricsConfig::default(),
            replication: ReplicationConfig::default(),
            aws: AwsConfig::default(),
        }
    }
}

impl Default for SealConfig {
    fn default() -> Self {
        Self { mode: SealMode::DevKeyFile, key_file: None, passphrase_file: None }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            invite_ttl_hours: 72,
            cooling_off_hours: 24,
            ceremony_ttl_seconds: 300,
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            reauth_window_minutes: 10,
            request_pending_ttl_hours: 24,
            request_approved_ttl_minutes: 60,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout_seconds: 30,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            ceremony_rate_per_minute: 30,
            ceremony_burst: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            approvals_required: 1,
            reveal_window_minutes: 15,
            max_checkout_minutes: 240,
            drill_schedule: "0 9 1 * *".into(),
            drill_grace_days: 7,
            drill_coverage_months: 3,
        }
    }
}

/// The public origin of the service, parsed once: scheme and host lowercased, the
/// default port dropped, no user info, path, query, fragment or surrounding space.
/// Secure cookies, the `__Host-` prefix, HSTS, the CSRF `Origin` check and the
/// WebAuthn RP id are all derived from this value, never from the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    host: String,
    /// `scheme://host[:port]`, exactly as browsers send it in `Origin`.
    header: String,
    url: Url,
}

impl Origin {
    /// Parse and check a configured origin; the error says how to fix it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "origin = {text:?} contains spaces or control characters (or is empty): write the bare URL, e.g. \"https://breakglass.example.com\"."
            ));
        }
        let url = Url::parse(text).map_err(|e| {
            format!(
                "origin = {text:?} is not a URL ({e}): use the public URL, e.g. \"https://breakglass.example.com\"."
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            // Not repeated: the user info may hold a password.
            return Err(format!(
                "origin for host {:?} contains user info (user@ or user:password@): use scheme://host[:port] only.",
                url.host_str().unwrap_or_default()
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("origin = {text:?} has no host."));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "origin = {text:?} must be scheme://host[:port] with no path: browsers send the bare origin."
            ));
        }
        let https = match url.scheme() {
            "https" => true,
            "http" if host == "localhost" => false,
            "http" => {
                return Err(format!(
                    "origin = {text:?}: WebAuthn only works on https, or http on localhost. Put TLS in front and use https://."
                ));
            }
            other => return Err(format!("origin = {text:?}: scheme {other:?} is not http or https.")),
        };
        if url.host().is_some_and(|h| !matches!(h, url::Host::Domain(_))) {
            return Err(format!(
                "origin = {text:?}: WebAuthn needs a domain name, not an IP address. Use localhost or a DNS name."
            ));
        }
        let header = url.origin().ascii_serialization().to_ascii_lowercase();
        Ok(Self { https, host, header, url })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host: the WebAuthn relying-party id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `scheme://host[:port]` as browsers send it in the `Origin` header.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The origin as a URL (with path `/`).
    pub fn url(&self) -> Url {
        self.url.clone()
    }
}

/// Everything wrong with a configuration, each with how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(p: impl Into<String>) -> Self {
        Self { problems: vec![p.into()] }
    }
}

/// The environment variables we read. Any other `BREAKGLASS_*` variable is a typo.
pub const ENV_VARS: &[&str] = &[
    "BREAKGLASS_CONFIG",
    "BREAKGLASS_LOG",
    "BREAKGLASS_DATA_DIR",
    "BREAKGLASS_LISTEN",
    "BREAKGLASS_ORIGIN",
    "BREAKGLASS_SEAL_MODE",
    "BREAKGLASS_SEAL_KEY_FILE",
    "BREAKGLASS_SEAL_PASSPHRASE_FILE",
    "BREAKGLASS_SNS_TOPIC_ARN",
    "BREAKGLASS_AWS_ROOT_ACTIVITY_QUEUE_URL",
    "BREAKGLASS_AWS_ROOT_ACTIVITY_SLACK_SECONDS",
    "BREAKGLASS_AWS_POSTURE_ROLE_NAME",
    "BREAKGLASS_SECURITY_INVITE_TTL_HOURS",
    "BREAKGLASS_SECURITY_COOLING_OFF_HOURS",
    "BREAKGLASS_SECURITY_CEREMONY_TTL_SECONDS",
    "BREAKGLASS_SECURITY_SESSION_IDLE_MINUTES",
    "BREAKGLASS_SECURITY_SESSION_ABSOLUTE_HOURS",
    "BREAKGLASS_SECURITY_REAUTH_WINDOW_MINUTES",
    "BREAKGLASS_SECURITY_REQUEST_PENDING_TTL_HOURS",
    "BREAKGLASS_SECURITY_REQUEST_APPROVED_TTL_MINUTES",
    "BREAKGLASS_HTTP_BODY_LIMIT_BYTES",
    "BREAKGLASS_HTTP_REQUEST_TIMEOUT_SECONDS",
    "BREAKGLASS_HTTP_HEADER_READ_TIMEOUT_SECONDS",
    "BREAKGLASS_HTTP_IDLE_TIMEOUT_SECONDS",
    "BREAKGLASS_HTTP_CEREMONY_RATE_PER_MINUTE",
    "BREAKGLASS_HTTP_CEREMONY_BURST",
    "BREAKGLASS_HTTP_TRUSTED_PROXIES",
    "BREAKGLASS_BACKUP_RECIPIENTS",
    "BREAKGLASS_BACKUP_DIR",
    "BREAKGLASS_BACKUP_EVERY_HOURS",
    "BREAKGLASS_BACKUP_KEEP",
    "BREAKGLASS_METRICS_TOKEN_FILE",
    "BREAKGLASS_REPLICATION_LITESTREAM",
    "BREAKGLASS_REPLICATION_REPLICA",
];

/// `BREAKGLASS_<SECTION>_<KEY>` for a whole number, or a problem naming the variable.
fn env_number<T: std::str::FromStr>(
    env: &BTreeMap<String, String>,
    name: &str,
    target: &mut T,
    problems: &mut Vec<String>,
) {
    if let Some(v) = env.get(name) {
        match v.trim().parse() {
            Ok(n) => *target = n,
            Err(_) => problems.push(format!("{name}={v:?} is not a whole number: give the value without a unit.")),
        }
    }
}

impl Config {
    /// Load from an optional file and the given environment (pass `std::env::vars()`).
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::one(format!(
                        "cannot read config file {}: {e}. Check the path given to --config or BREAKGLASS_CONFIG.",
                        path.display()
                    ))
                })?;
                Self::from_toml(&text)
                    .map_err(|e| ConfigError::one(format!("{}: {}", path.display(), e.problems.join("; "))))?
            }
            None => Self::default(),
        };
        let env: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("BREAKGLASS_")).collect();
        let mut problems = Vec::new();
        for key in env.keys() {
            if !ENV_VARS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown environment variable {key}: known ones are {}. Unset it or fix the spelling.",
                    ENV_VARS.join(", ")
                ));
            }
        }
        if let Some(v) = env.get("BREAKGLASS_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env.get("BREAKGLASS_LISTEN") {
            config.listen = v.clone();
        }
        if let Some(v) = env.get("BREAKGLASS_ORIGIN") {
            config.origin = v.clone();
        }
        if let Some(v) = env.get("BREAKGLASS_SEAL_MODE") {
            match v.as_str() {
                "dev-key-file" => config.seal.mode = SealMode::DevKeyFile,
                "key-file" => config.seal.mode = SealMode::KeyFile,
                "passphrase" => config.seal.mode = SealMode::Passphrase,
                other => problems.push(format!(
                    "BREAKGLASS_SEAL_MODE={other:?} is not a seal mode: use dev-key-file, key-file or passphrase."
                )),
            }
        }
        if let Some(v) = env.get("BREAKGLASS_SEAL_KEY_FILE") {
            config.seal.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env.get("BREAKGLASS_SNS_TOPIC_ARN") {
            config.sns.topic_arn = v.clone();
        }
        if let Some(v) = env.get("BREAKGLASS_AWS_ROOT_ACTIVITY_QUEUE_URL") {
            config.aws.root_activity_queue_url = v.clone();
        }
        if let Some(v) = env.get("BREAKGLASS_AWS_POSTURE_ROLE_NAME") {
            config.aws.posture_role_name = v.clone();
        }
        env_number(
            &env,
            "BREAKGLASS_AWS_ROOT_ACTIVITY_SLACK_SECONDS",
            &mut config.aws.root_activity_slack_seconds,
            &mut problems,
        );
        if let Some(v) = env.get("BREAKGLASS_SEAL_PASSPHRASE_FILE") {
            config.seal.passphrase_file = Some(PathBuf::from(v));
        }
        let sec = &mut config.security;
        for (name, target) in [
            ("BREAKGLASS_SECURITY_INVITE_TTL_HOURS", &mut sec.invite_ttl_hours),
            ("BREAKGLASS_SECURITY_COOLING_OFF_HOURS", &mut sec.cooling_off_hours),
            ("BREAKGLASS_SECURITY_CEREMONY_TTL_SECONDS", &mut sec.ceremony_ttl_seconds),
            ("BREAKGLASS_SECURITY_SESSION_IDLE_MINUTES", &mut sec.session_idle_minutes),
            ("BREAKGLASS_SECURITY_SESSION_ABSOLUTE_HOURS", &mut sec.session_absolute_hours),
            ("BREAKGLASS_SECURITY_REAUTH_WINDOW_MINUTES", &mut sec.reauth_window_minutes),
            ("BREAKGLASS_SECURITY_REQUEST_PENDING_TTL_HOURS", &mut sec.request_pending_ttl_hours),
            ("BREAKGLASS_SECURITY_REQUEST_APPROVED_TTL_MINUTES", &mut sec.request_approved_ttl_minutes),
        ] {
            env_number(&env, name, target, &mut problems);
        }
        let http = &mut config.http;
        env_number(&env, "BREAKGLASS_HTTP_BODY_LIMIT_BYTES", &mut http.body_limit_bytes, &mut problems);
        for (name, target) in [
            ("BREAKGLASS_HTTP_REQUEST_TIMEOUT_SECONDS", &mut http.request_timeout_seconds),
            ("BREAKGLASS_HTTP_HEADER_READ_TIMEOUT_SECONDS", &mut http.header_read_timeout_seconds),
            ("BREAKGLASS_HTTP_IDLE_TIMEOUT_SECONDS", &mut http.idle_timeout_seconds),
            ("BREAKGLASS_HTTP_CEREMONY_RATE_PER_MINUTE", &mut http.ceremony_rate_per_minute),
            ("BREAKGLASS_HTTP_CEREMONY_BURST", &mut http.ceremony_burst),
        ] {
            env_number(&env, name, target, &mut problems);
        }
        if let Some(v) = env.get("BREAKGLASS_HTTP_TRUSTED_PROXIES") {
            http.trusted_proxies = v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
        }
        if let Some(v) = env.get("BREAKGLASS_BACKUP_RECIPIENTS") {
            config.backup.recipients =
                v.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect();
        }
        if let Some(v) = env.get("BREAKGLASS_BACKUP_DIR") {
            config.backup.dir = PathBuf::from(v);
        }
        env_number(&env, "BREAKGLASS_BACKUP_EVERY_HOURS", &mut config.backup.every_hours, &mut problems);
        env_number(&env, "BREAKGLASS_BACKUP_KEEP", &mut config.backup.keep, &mut problems);
        if let Some(v) = env.get("BREAKGLASS_METRICS_TOKEN_FILE") {
            config.metrics.token_file = PathBuf::from(v);
        }
        if let Some(v) = env.get("BREAKGLASS_REPLICATION_LITESTREAM") {
            match v.trim() {
                "true" | "1" => config.replication.litestream = true,
                "false" | "0" | "" => config.replication.litestream = false,
                other => problems
                    .push(format!("BREAKGLASS_REPLICATION_LITESTREAM={other:?} is not a boolean: use true or false.")),
            }
        }
        if let Some(v) = env.get("BREAKGLASS_REPLICATION_REPLICA") {
            config.replication.replica = v.trim().to_owned();
        }
        problems.extend(config.problems());
        if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::one(e.to_string().trim().replace('\n', " ")))
    }

    /// Semantic checks, each problem phrased with its fix.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "listen = {:?} is not a socket address: use IP:PORT, e.g. \"127.0.0.1:8080\".",
                self.listen
            ));
        }
        if let Err(e) = self.origin_url() {
            p.push(e);
        }
        match self.seal.mode {
            SealMode::KeyFile if self.seal.key_file.is_none() => p.push(
                "seal.mode = \"key-file\" needs seal.key_file (or BREAKGLASS_SEAL_KEY_FILE): the path of a 32-byte key file, mode 0600.".into(),
            ),
            SealMode::DevKeyFile if self.seal.key_file.is_some() => p.push(
                "seal.key_file is set but seal.mode is dev-key-file: set seal.mode = \"key-file\" to use your own key file.".into(),
            ),
            _ => {}
        }
        if self.seal.mode == SealMode::Passphrase && self.seal.key_file.is_some() {
            p.push("seal.key_file is set but seal.mode is \"passphrase\": the vault is sealed by the passphrase alone; remove seal.key_file (or BREAKGLASS_SEAL_KEY_FILE), or set seal.mode = \"key-file\".".into());
        }
        if self.seal.passphrase_file.is_some() && self.seal.mode != SealMode::Passphrase {
            p.push("seal.passphrase_file is set but seal.mode is not \"passphrase\": set the mode or remove the file setting.".into());
        }
        let s = &self.security;
        for (name, value, min, max) in [
            ("security.invite_ttl_hours", s.invite_ttl_hours, 1, 24 * 30),
            ("security.cooling_off_hours", s.cooling_off_hours, 0, 24 * 30),
            ("security.ceremony_ttl_seconds", s.ceremony_ttl_seconds, 30, 3600),
            ("security.session_idle_minutes", s.session_idle_minutes, 1, 24 * 60),
            ("security.session_absolute_hours", s.session_absolute_hours, 1, 24 * 7),
            ("security.reauth_window_minutes", s.reauth_window_minutes, 1, 24 * 60),
            ("http.request_timeout_seconds", self.http.request_timeout_seconds, 1, 600),
            ("http.header_read_timeout_seconds", self.http.header_read_timeout_seconds, 1, 300),
            ("http.idle_timeout_seconds", self.http.idle_timeout_seconds, 1, 3600),
            ("http.ceremony_rate_per_minute", self.http.ceremony_rate_per_minute, 1, 100_000),
            ("http.ceremony_burst", self.http.ceremony_burst, 1, 100_000),
            ("policy.approvals_required", self.policy.approvals_required, 1, 20),
            ("policy.reveal_window_minutes", self.policy.reveal_window_minutes, 1, 24 * 60),
            ("policy.max_checkout_minutes", self.policy.max_checkout_minutes, 5, 7 * 24 * 60),
            ("policy.drill_grace_days", self.policy.drill_grace_days, 1, 90),
            ("policy.drill_coverage_months", self.policy.drill_coverage_months, 1, 24),
            ("sns.max_attempts", self.sns.max_attempts, 1, 1000),
            ("sns.base_backoff_seconds", self.sns.base_backoff_seconds, 1, 3600),
            ("sns.max_backoff_seconds", self.sns.max_backoff_seconds, 1, 24 * 3600),
            ("backup.every_hours", self.backup.every_hours, 1, 24 * 31),
            ("backup.keep", self.backup.keep, 1, 10_000),
            ("aws.root_activity_slack_seconds", self.aws.root_activity_slack_seconds, 0, 3600),
            ("aws.root_activity_wait_seconds", self.aws.root_activity_wait_seconds, 0, 20),
            ("aws.posture_interval_hours", self.aws.posture_interval_hours, 0, 24 * 31),
        ] {
            if value < min || value > max {
                p.push(format!("{name} = {value} is out of range: use a value from {min} to {max}."));
            }
        }
        if self.sns.max_backoff_seconds < self.sns.base_backoff_seconds {
            p.push(format!(
                "sns.max_backoff_seconds = {} is less than sns.base_backoff_seconds = {}: the longest wait must be at least the first.",
                self.sns.max_backoff_seconds, self.sns.base_backoff_seconds
            ));
        }
        if let Err(e) = crate::domain::drill::Schedule::parse(&self.policy.drill_schedule) {
            p.push(format!("policy.{}", e.message));
        }
        let arn = &self.sns.topic_arn;
        if !arn.is_empty() && (!arn.starts_with("arn:") || arn.split(':').count() != 6 || !arn.contains(":sns:")) {
            p.push(format!(
                "sns.topic_arn = {arn:?} is not an SNS topic ARN: use arn:aws:sns:REGION:ACCOUNT:NAME, or leave it empty to keep announcements in the outbox."
            ));
        }
        if self.http.idle_timeout_seconds <= self.http.request_timeout_seconds {
            p.push(format!(
                "http.idle_timeout_seconds = {} must be longer than http.request_timeout_seconds = {}: a request may be silent while it is being answered.",
                self.http.idle_timeout_seconds, self.http.request_timeout_seconds
            ));
        }
        for r in &self.backup.recipients {
            if r.parse::<age::x25519::Recipient>().is_err() {
                p.push(format!(
                    "backup.recipients: {r:?} is not an age X25519 recipient: give the age1… public key printed by `age-keygen -y KEYFILE`."
                ));
            }
        }
        if !self.backup.dir.as_os_str().is_empty() && self.backup.recipients.is_empty() {
            p.push("backup.dir is set but backup.recipients is empty: scheduled backups are encrypted to the recipients; add the age1… key the organisation keeps offline.".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            p.push(format!(
                "http.body_limit_bytes = {} is out of range: use a value from 1024 to 16777216.",
                self.http.body_limit_bytes
            ));
        }
        p
    }

    /// The configured origin, parsed and normalised (see [`Origin::parse`]).
    pub fn origin(&self) -> Result<Origin, String> {
        Origin::parse(&self.origin)
    }

    /// The origin as a URL, checked to be usable for WebAuthn.
    pub fn origin_url(&self) -> Result<Url, String> {
        self.origin().map(|o| o.url())
    }

    /// The WebAuthn relying-party id: the origin's host.
    pub fn rp_id(&self) -> String {
        self.origin().map(|o| o.host().to_owned()).unwrap_or_default()
    }

    /// The origin exactly as browsers send it in the `Origin` header.
    pub fn origin_header(&self) -> String {
        self.origin().map(|o| o.header().to_owned()).unwrap_or_else(|_| self.origin.clone())
    }

    /// Whether browsers reach the service over https (from the parsed origin, never a
    /// string prefix): decides `Secure` cookies, the `__Host-` prefix and HSTS.
    pub fn is_https(&self) -> bool {
        self.origin().is_ok_and(|o| o.is_https())
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("breakglass.db")
    }

    pub fn dev_key_file(&self) -> PathBuf {
        self.data_dir.join("dev-seal.key")
    }

    /// The key file in use for key-file modes.
    pub fn key_file_path(&self) -> Option<PathBuf> {
        match self.seal.mode {
            SealMode::DevKeyFile => Some(self.dev_key_file()),
            SealMode::KeyFile => self.seal.key_file.clone(),
            SealMode::Passphrase => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.rp_id(), "localhost");
        assert_eq!(c.origin_header(), "http://localhost:8080");
        assert_eq!(c.listen, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_toml_key_is_rejected_with_its_name() {
        let e = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn unknown_env_var_is_rejected() {
        let e = Config::load(None, [("BREAKGLASS_LISTN".into(), "x".into())]).unwrap_err();
        assert!(e.to_string().contains("BREAKGLASS_LISTN"), "{e}");
    }

    #[test]
    fn env_overrides_file_values() {
        let c = Config::load(
            None,
            [
                ("BREAKGLASS_ORIGIN".into(), "https://custody.example.com".into()),
                ("BREAKGLASS_LISTEN".into(), "0.0.0.0:9000".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.rp_id(), "custody.example.com");
        assert!(c.is_https());
    }

    #[test]
    fn plain_http_origin_off_localhost_is_refused() {
        let e = Config::load(None, [("BREAKGLASS_ORIGIN".into(), "http://10.0.0.1:8080".into())]).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        let e = Config::load(None, [("BREAKGLASS_ORIGIN".into(), "https://x.example/path".into())]).unwrap_err();
        assert!(e.to_string().contains("no path"), "{e}");
    }

    #[test]
    fn the_documented_example_config_is_valid_and_not_the_defaults() {
        let c = Config::from_toml(include_str!("../deploy/config.example.toml")).unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
        assert_eq!(c.seal.mode, SealMode::KeyFile);
        assert!(c.is_https());
    }

    #[test]
    fn nonsense_delivery_drill_and_seal_settings_are_refused_by_name() {
        let problems = |toml: &str| Config::from_toml(toml).unwrap().problems().join("\n");
        for (toml, expect) in [
            ("[sns]\nmax_attempts = 0\n", "sns.max_attempts = 0"),
            ("[sns]\nbase_backoff_seconds = 0\n", "sns.base_backoff_seconds = 0"),
            ("[sns]\nmax_backoff_seconds = 0\n", "sns.max_backoff_seconds = 0"),
            ("[sns]\nbase_backoff_seconds = 60\nmax_backoff_seconds = 30\n", "less than sns.base_backoff_seconds"),
            ("[policy]\ndrill_grace_days = 0\n", "policy.drill_grace_days = 0"),
            ("[policy]\ndrill_grace_days = 365\n", "policy.drill_grace_days = 365"),
            ("[policy]\ndrill_coverage_months = 0\n", "policy.drill_coverage_months = 0"),
            ("[policy]\ndrill_coverage_months = 120\n", "policy.drill_coverage_months = 120"),
            ("[policy]\ndrill_schedule = \"*/10 * * * *\"\n", "more often than once a day"),
            (
                "[seal]\nmode = \"passphrase\"\nkey_file = \"/etc/bg.key\"\n",
                "seal.key_file is set but seal.mode is \"passphrase\"",
            ),
        ] {
            let got = problems(toml);
            assert!(got.contains(expect), "{toml:?}: {got}");
        }
        // The edges of each range are accepted.
        let ok = "[sns]\nmax_attempts = 1\nbase_backoff_seconds = 30\nmax_backoff_seconds = 30\n\
                  [policy]\ndrill_grace_days = 1\ndrill_coverage_months = 1\ndrill_schedule = \"0 9 * * *\"\n";
        assert_eq!(problems(ok), "");
        let e = Config::load(
            None,
            [
                ("BREAKGLASS_SEAL_MODE".into(), "passphrase".into()),
                ("BREAKGLASS_SEAL_KEY_FILE".into(), "/etc/bg.key".into()),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("seal.key_file"), "{e}");
    }

    #[test]
    fn every_security_and_http_setting_has_an_environment_variable() {
        let env: Vec<(String, String)> = vec![
            ("BREAKGLASS_SECURITY_INVITE_TTL_HOURS".into(), "48".into()),
            ("BREAKGLASS_SECURITY_COOLING_OFF_HOURS".into(), "0".into()),
            ("BREAKGLASS_SECURITY_CEREMONY_TTL_SECONDS".into(), "120".into()),
            ("BREAKGLASS_SECURITY_SESSION_IDLE_MINUTES".into(), "15".into()),
            ("BREAKGLASS_SECURITY_SESSION_ABSOLUTE_HOURS".into(), "8".into()),
            ("BREAKGLASS_SECURITY_REAUTH_WINDOW_MINUTES".into(), "5".into()),
            ("BREAKGLASS_SECURITY_REQUEST_PENDING_TTL_HOURS".into(), "6".into()),
            ("BREAKGLASS_SECURITY_REQUEST_APPROVED_TTL_MINUTES".into(), "20".into()),
            ("BREAKGLASS_HTTP_BODY_LIMIT_BYTES".into(), "32768".into()),
            ("BREAKGLASS_HTTP_REQUEST_TIMEOUT_SECONDS".into(), "10".into()),
            ("BREAKGLASS_HTTP_HEADER_READ_TIMEOUT_SECONDS".into(), "5".into()),
            ("BREAKGLASS_HTTP_IDLE_TIMEOUT_SECONDS".into(), "30".into()),
            ("BREAKGLASS_HTTP_CEREMONY_RATE_PER_MINUTE".into(), "60".into()),
            ("BREAKGLASS_HTTP_CEREMONY_BURST".into(), "5".into()),
            ("BREAKGLASS_HTTP_TRUSTED_PROXIES".into(), "127.0.0.1, ::1".into()),
        ];
        let c = Config::load(None, env).unwrap();
        let d = Config::default();
        let s = &c.security;
        assert_eq!(
            (s.invite_ttl_hours, s.cooling_off_hours, s.ceremony_ttl_seconds, s.session_idle_minutes),
            (48, 0, 120, 15)
        );
        assert_eq!(
            (
                s.session_absolute_hours,
                s.reauth_window_minutes,
                s.request_pending_ttl_hours,
                s.request_approved_ttl_minutes
            ),
            (8, 5, 6, 20)
        );
        assert_eq!(
            (
                c.http.body_limit_bytes,
                c.http.request_timeout_seconds,
                c.http.ceremony_rate_per_minute,
                c.http.ceremony_burst
            ),
            (32768, 10, 60, 5)
        );
        assert_eq!(c.http.trusted_proxies, ["127.0.0.1", "::1"]);
        assert_eq!((c.http.header_read_timeout_seconds, c.http.idle_timeout_seconds), (5, 30));
        // Every field changed: no setting was forgotten (a new one fails here until added).
        let changed = |a: toml::Value, b: toml::Value| {
            let (a, b) = (a.as_table().unwrap().clone(), b.as_table().unwrap().clone());
            a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count() == a.len()
        };
        assert!(changed(toml::Value::try_from(&c.security).unwrap(), toml::Value::try_from(&d.security).unwrap()));
        assert!(changed(toml::Value::try_from(&c.http).unwrap(), toml::Value::try_from(&d.http).unwrap()));

        let e = Config::load(None, [("BREAKGLASS_SECURITY_COOLING_OFF_HOURS".into(), "24h".into())]).unwrap_err();
        assert!(e.to_string().contains("BREAKGLASS_SECURITY_COOLING_OFF_HOURS=\"24h\" is not a whole number"), "{e}");
        let e = Config::load(None, [("BREAKGLASS_HTTP_CEREMONY_BURST".into(), "0".into())]).unwrap_err();
        assert!(
            e.to_string().contains("http.ceremony_burst = 0"),
            "values from the environment are range-checked: {e}"
        );
    }

    #[test]
    fn every_backup_metrics_and_replication_setting_has_an_environment_variable() {
        let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let env: Vec<(String, String)> = vec![
            ("BREAKGLASS_BACKUP_RECIPIENTS".into(), format!("{recipient}, {recipient}")),
            ("BREAKGLASS_BACKUP_DIR".into(), "/srv/backups".into()),
            ("BREAKGLASS_BACKUP_EVERY_HOURS".into(), "6".into()),
            ("BREAKGLASS_BACKUP_KEEP".into(), "30".into()),
            ("BREAKGLASS_METRICS_TOKEN_FILE".into(), "/etc/breakglass/metrics.token".into()),
            ("BREAKGLASS_REPLICATION_LITESTREAM".into(), "true".into()),
            ("BREAKGLASS_REPLICATION_REPLICA".into(), "s3://acme-breakglass/prod, eu-west-1".into()),
        ];
        let c = Config::load(None, env).unwrap();
        let d = Config::default();
        assert_eq!(c.backup.recipients, [recipient, recipient]);
        assert_eq!((c.backup.dir.to_str().unwrap(), c.backup.every_hours, c.backup.keep), ("/srv/backups", 6, 30));
        assert!(c.replication.litestream);
        assert_eq!(c.replication.replica, "s3://acme-breakglass/prod, eu-west-1");
        let changed = |a: toml::Value, b: toml::Value| {
            let (a, b) = (a.as_table().unwrap().clone(), b.as_table().unwrap().clone());
            a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count() == a.len()
        };
        assert!(changed(toml::Value::try_from(&c.backup).unwrap(), toml::Value::try_from(&d.backup).unwrap()));
        assert!(changed(toml::Value::try_from(&c.metrics).unwrap(), toml::Value::try_from(&d.metrics).unwrap()));
        assert!(changed(
            toml::Value::try_from(&c.replication).unwrap(),
            toml::Value::try_from(&d.replication).unwrap()
        ));
        let e = Config::load(None, [("BREAKGLASS_BACKUP_RECIPIENTS".into(), "age1nope".into())]).unwrap_err();
        assert!(e.to_string().contains("not an age X25519 recipient"), "{e}");
        let e = Config::load(None, [("BREAKGLASS_BACKUP_DIR".into(), "/srv/b".into())]).unwrap_err();
        assert!(e.to_string().contains("backup.recipients is empty"), "{e}");
        let e = Config::load(None, [("BREAKGLASS_REPLICATION_LITESTREAM".into(), "yes".into())]).unwrap_err();
        assert!(e.to_string().contains("not a boolean"), "{e}");
    }

    #[test]
    fn the_root_activity_feed_is_set_from_the_environment_and_range_checked() {
        let env = [
            ("BREAKGLASS_AWS_ROOT_ACTIVITY_QUEUE_URL".to_owned(), "https://sqs.us-east-1.amazonaws.com/1/q".to_owned()),
            ("BREAKGLASS_AWS_ROOT_ACTIVITY_SLACK_SECONDS".to_owned(), "120".to_owned()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.aws.root_activity_queue_url, "https://sqs.us-east-1.amazonaws.com/1/q");
        assert_eq!(c.aws.root_activity_slack_seconds, 120);
        let c = Config::load(None, [("BREAKGLASS_AWS_POSTURE_ROLE_NAME".into(), "reader".into())]).unwrap();
        assert_eq!(c.aws.posture_role_name, "reader");
        let c = Config::from_toml("[aws]\nroot_activity_wait_seconds = 21\n").unwrap();
        assert!(c.problems().iter().any(|p| p.contains("aws.root_activity_wait_seconds = 21")), "{:?}", c.problems());
        let e = Config::load(None, [("BREAKGLASS_AWS_ROOT_ACTIVITY_SLACK_SECONDS".into(), "7200".into())]).unwrap_err();
        assert!(e.to_string().contains("aws.root_activity_slack_seconds = 7200"), "{e}");
    }

    #[test]
    fn every_setting_and_environment_variable_is_documented_in_the_example_config() {
        let example = include_str!("../deploy/config.example.toml");
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (key, value) in defaults.as_table().unwrap() {
            match value.as_table() {
                Some(section) => {
                    assert!(example.contains(&format!("[{key}]")), "section [{key}]");
                    for k in section.keys() {
                        if !example.contains(&format!("\n{k} =")) && !example.contains(&format!("# {k} =")) {
                            missing.push(format!("{key}.{k}"));
                        }
                    }
                }
                None if !example.contains(&format!("\n{key} =")) => missing.push(key.clone()),
                None => {}
            }
        }
        for var in ENV_VARS.iter().filter(|v| **v != "BREAKGLASS_CONFIG") {
            if !example.contains(var) {
                missing.push((*var).to_owned());
            }
        }
        assert!(missing.is_empty(), "not in deploy/config.example.toml: {missing:?}");
    }

    #[test]
    fn connection_timeouts_are_range_checked_and_idle_outlasts_a_request() {
        let c = Config::from_toml("[http]\nidle_timeout_seconds = 10\nrequest_timeout_seconds = 30").unwrap();
        assert!(
            c.problems().iter().any(|p| p.contains("idle_timeout_seconds = 10 must be longer")),
            "{:?}",
            c.problems()
        );
        let c = Config::from_toml("[http]\nheader_read_timeout_seconds = 0").unwrap();
        assert!(c.problems().iter().any(|p| p.contains("http.header_read_timeout_seconds")), "{:?}", c.problems());
        let c = Config::from_toml("[http]\nheader_read_timeout_seconds = 5\nidle_timeout_seconds = 31").unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
    }

    #[test]
    fn the_origin_is_parsed_once_into_a_normalised_value() {
        let o = Origin::parse("HTTPS://Custody.Example.COM:443").unwrap();
        assert!(o.is_https());
        assert_eq!((o.host(), o.header()), ("custody.example.com", "https://custody.example.com"));
        let o = Origin::parse("https://custody.example.com:8443/").unwrap();
        assert_eq!(o.header(), "https://custody.example.com:8443");
        let o = Origin::parse("http://LOCALHOST:8080").unwrap();
        assert!(!o.is_https());
        assert_eq!(o.header(), "http://localhost:8080");
        for bad in [
            "",
            " https://x.example.com",
            "https://x.example.com\n",
            "https://x.exa mple.com",
            "https://u@x.example.com",
            "https://u:p@x.example.com",
            "https://x.example.com/p",
            "https://x.example.com?q",
            "https://x.example.com#f",
            "http://x.example.com",
            "https://192.0.2.1",
            "wss://x.example.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?}");
        }
        let c = Config { origin: "HTTPS://X.example.com".into(), ..Config::default() };
        assert!(c.is_https(), "not a string prefix test");
        assert_eq!(c.rp_id(), "x.example.com");
        let e = Origin::parse("https://admin:hunter2@x.example.com").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn idle_timeout_must_outlast_the_request_timeout() {
        let c = Config::from_toml("[http]\nrequest_timeout_seconds = 60\nidle_timeout_seconds = 59\n").unwrap();
        assert!(c.problems().iter().any(|p| p.contains("http.idle_timeout_seconds")), "{:?}", c.problems());
        let c = Config::from_toml("[http]\nheader_read_timeout_seconds = 0\n").unwrap();
        assert!(c.problems().iter().any(|p| p.contains("http.header_read_timeout_seconds")));
    }

    #[test]
    fn key_file_mode_needs_a_path() {
        let e = Config::from_toml("[seal]\nmode = \"key-file\"\n").unwrap();
        assert!(e.problems().iter().any(|p| p.contains("seal.key_file")));
    }
}
