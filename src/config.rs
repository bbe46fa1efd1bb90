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
    /// A client must send its request headers within this long; a kept-alive
    /// connection waiting longer for its next request is closed.
    pub header_read_timeout_seconds: u32,
    /// A connection on which no byte moves either way for this long is closed.
    /// Longer than `request_timeout_seconds`.
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
];

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
        if let Some(v) = env.get("BREAKGLASS_SEAL_PASSPHRASE_FILE") {
            config.seal.passphrase_file = Some(PathBuf::from(v));
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
            ("http.header_read_timeout_seconds", self.http.header_read_timeout_seconds, 1, 120),
            ("http.idle_timeout_seconds", self.http.idle_timeout_seconds, 2, 3600),
            ("http.ceremony_rate_per_minute", self.http.ceremony_rate_per_minute, 1, 100_000),
            ("http.ceremony_burst", self.http.ceremony_burst, 1, 100_000),
            ("policy.approvals_required", self.policy.approvals_required, 1, 20),
            ("policy.reveal_window_minutes", self.policy.reveal_window_minutes, 1, 24 * 60),
            ("policy.max_checkout_minutes", self.policy.max_checkout_minutes, 5, 7 * 24 * 60),
        ] {
            if value < min || value > max {
                p.push(format!("{name} = {value} is out of range: use a value from {min} to {max}."));
            }
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
        for proxy in &self.http.trusted_proxies {
            if proxy.parse::<std::net::IpAddr>().is_err() {
                p.push(format!(
                    "http.trusted_proxies contains {proxy:?}, which is not an IP address: list the proxies' addresses, e.g. [\"127.0.0.1\"]."
                ));
            }
        }
        if self.http.idle_timeout_seconds <= self.http.request_timeout_seconds {
            p.push(format!(
                "http.idle_timeout_seconds = {} must be longer than http.request_timeout_seconds = {}: a request may be silent while it is being answered.",
                self.http.idle_timeout_seconds, self.http.request_timeout_seconds
            ));
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
        let c = Config::from_toml("[http]\nrequest_timeout_seconds = 60\nidle_timeout_seconds = 60\n").unwrap();
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
