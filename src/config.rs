//! Typed configuration: defaults compiled in, a file, then the environment, validated once.
//!
//! Owns how settings are found and what makes them valid. It never opens a connection or a file
//! other than the one config file it is given, and never writes anything. Each platform's section
//! (`[google]`, `[jitsi]`) is a struct here that validates itself (`[zoom]`: `config/zoom.rs`, `[teams]`: `config/teams.rs`); `[http]` is `config/http.rs`, `[monitor]` `config/monitor.rs`,
//! `[webhooks]` is `config/webhooks.rs`, `check`'s timing and transport findings are `config/traps.rs`, the tests `config/tests.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::crypto::Keyring;
use crate::providers::Platform;

/// The defaults, with a comment on every key. Compiled in so the binary needs no file to start.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Credential names under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub const CREDENTIAL_ENCRYPTION_KEY: &str = "encryption-key";
pub const CREDENTIAL_GOOGLE_SECRET: &str = "google-client-secret";
pub const CREDENTIAL_JWT_SECRET: &str = "jwt-secret";
pub const CREDENTIAL_DATABASE_URL: &str = "database-url";

/// Environment variables with the `MEETINGD_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["config", "log", "log_format"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub fallback: FallbackConfig,
    pub jitsi: JitsiConfig,
    pub encryption: EncryptionConfig,
    pub google: GoogleConfig,
    pub zoom: ZoomConfig,
    pub teams: TeamsConfig,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub reconcile: ReconcileConfig,
    pub webhooks: WebhooksConfig,
    pub monitor: MonitorConfig,
}

/// The daily reconcile sweep from the platforms' side (see `reconcile.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// The hour (UTC, 0–23) it starts.
    pub hour_utc: u32,
    /// Pause between platform calls of one account.
    pub pause_ms: u64,
}

/// How long meetingd keeps what it wrote (see `db/maintenance.rs`); the daemon prunes every
/// `interval_secs`, `meetingd prune` on demand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// 0: the daemon never prunes (`meetingd prune` still does).
    pub interval_secs: u64,
    pub audit_log_days: u32,
    pub events_days: u32,
    /// Finished jobs whose booking has no live meeting and no pending create.
    pub finished_jobs_days: u32,
    /// Orphaned-meeting reports.
    pub orphaned_meetings_days: u32,
    /// Delivered webhooks (`meetingd.webhook_deliveries`).
    pub webhook_deliveries_days: u32,
    /// Dead-lettered webhooks (kept to be looked at and re-driven with `meetingd webhooks retry`).
    pub webhook_dead_days: u32,
}

/// Rate limits per platform (see `ratelimit.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub google_meet: RateConfig,
    pub zoom: RateConfig,
    pub teams: RateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Calls per second per connected account (all daemons together).
    pub integration_rate: f64,
    pub integration_burst: u32,
    /// Calls per second for the whole platform (all daemons together).
    pub platform_rate: f64,
    pub platform_burst: u32,
    /// Calls in flight at once per connected account (this daemon); 0: no limit. Microsoft
    /// Graph allows 4 concurrent requests per mailbox.
    #[serde(default)]
    pub integration_concurrency: u32,
    /// Meeting creations and updates per connected account per UTC day, counted in the database
    /// across daemons (`quota.rs`); 0: not counted. Zoom's only (`[limits.zoom]`).
    #[serde(default)]
    pub daily_meeting_writes: u32,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretString,
    /// Trusted root certificates (PEM file, or `system`) when the URL names no `sslrootcert`;
    /// empty = the system's store. See `db::tls`.
    pub sslrootcert: String,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    pub keepalive_idle_secs: u64,
    pub startup_wait_secs: u64,
    /// What sits between meetingd and PostgreSQL (see `db::sql`).
    pub pooler: Pooler,
    /// Where migrations run; empty = `url`. Required with a transaction pooler, since
    /// migrations hold a session-level advisory lock.
    pub migration_url: SecretString,
    /// How long a pooled statement waits for a row lock (a booking the app holds) before giving up.
    pub lock_timeout_ms: u64,
}

/// What `database.url` leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooler {
    /// PostgreSQL itself (or a pooler in session mode): prepared statements and session settings work.
    None,
    /// PgBouncer in transaction pooling mode: no named prepared statements, no session state.
    PgbouncerTransaction,
}

impl DatabaseConfig {
    /// The URL migrations run on.
    pub fn migration_url(&self) -> &SecretString {
        if self.migration_url.expose_secret().is_empty() { &self.url } else { &self.migration_url }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("sslrootcert", &self.sslrootcert)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("keepalive_idle_secs", &self.keepalive_idle_secs)
            .field("startup_wait_secs", &self.startup_wait_secs)
            .field("pooler", &self.pooler)
            .field("migration_url", &redact_url(self.migration_url.expose_secret()))
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub listen: bool,
    pub sweep_interval_ms: u64,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub shutdown_grace_ms: u64,
    pub listen_ping_interval_ms: u64,
}

impl WorkerConfig {
    /// How long the dispatcher waits without a wake-up before looking for due jobs itself.
    pub fn idle_wait(&self) -> Duration {
        Duration::from_millis(if self.listen { self.sweep_interval_ms } else { self.poll_interval_ms })
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
            max_attempts: self.max_attempts,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    pub platform: Fallback,
}

/// What a booking gets when its service's platform cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Fallback {
    /// Use this platform (one that needs no account).
    Platform(Platform),
    /// Fail the meeting with a clear error.
    None,
}

impl TryFrom<String> for Fallback {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "none" => Ok(Fallback::None),
            "jitsi" => Ok(Fallback::Platform(Platform::Jitsi)),
            other => Err(format!(
                "fallback.platform must be \"jitsi\" or \"none\" (a fallback cannot need an account), not {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitsiConfig {
    pub base_url: url::Url,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    pub key: SecretString,
    pub key_file: PathBuf,
    pub old_keys: Vec<SecretString>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("key", &if self.key.expose_secret().is_empty() { "" } else { "***" })
            .field("key_file", &self.key_file)
            .field("old_keys", &format!("{} key(s)", self.old_keys.len()))
            .finish()
    }
}

impl EncryptionConfig {
    /// The keyring, reading `key_file` when set. A missing key is an error: tokens are never
    /// stored or read in plaintext.
    pub fn keyring(&self) -> Result<Keyring, String> {
        let key = secret_or_file(&self.key, &self.key_file, "encryption.key")?.ok_or_else(|| {
            "no encryption key: set encryption.key_file (or encryption.key, MEETINGD_ENCRYPTION__KEY); \
             generate one with `meetingd keys generate`"
                .to_string()
        })?;
        Keyring::new(&key, &self.old_keys).map_err(|e| format!("encryption: {e}"))
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_file: PathBuf,
    pub auth_url: url::Url,
    pub token_url: url::Url,
    pub revoke_url: url::Url,
    pub api_base_url: url::Url,
    pub calendar_id: String,
    pub invite_customer: bool,
    pub send_updates: String,
    pub request_timeout_ms: u64,
    pub conference_wait_ms: u64,
    /// The OAuth app's publishing status at Google: `production`, or `testing`, whose refresh
    /// tokens die 7 days after consent.
    pub publishing_status: String,
}

impl std::fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &if self.client_secret.expose_secret().is_empty() { "" } else { "***" })
            .field("client_secret_file", &self.client_secret_file)
            .field("token_url", &self.token_url.as_str())
            .field("api_base_url", &self.api_base_url.as_str())
            .field("calendar_id", &self.calendar_id)
            .field("invite_customer", &self.invite_customer)
            .field("send_updates", &self.send_updates)
            .field("publishing_status", &self.publishing_status)
            .finish()
    }
}

impl GoogleConfig {
    /// The OAuth client secret, `None` when Google is not configured.
    pub fn client_secret(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.client_secret, &self.client_secret_file, "google.client_secret")
    }

    /// The OAuth app is in "Testing" at Google (its grants last 7 days).
    pub fn testing(&self) -> bool {
        self.publishing_status == "testing"
    }

    /// What is wrong with the `[google]` section, added to `problems`.
    fn problems(&self, problems: &mut Vec<String>) {
        if let Err(e) = self.client_secret() {
            problems.push(e);
        }
        if !matches!(self.send_updates.as_str(), "all" | "externalOnly" | "none") {
            problems.push(format!(
                "google.send_updates must be \"all\", \"externalOnly\" or \"none\", not {:?}",
                self.send_updates
            ));
        }
        if !self.api_base_url.as_str().ends_with('/') {
            problems.push(format!("google.api_base_url must end with a slash: {}", self.api_base_url));
        }
        if self.calendar_id.trim().is_empty() {
            problems.push("google.calendar_id must not be empty".into());
        }
        if self.request_timeout_ms == 0 {
            problems.push("google.request_timeout_ms must be greater than 0".into());
        }
        if !matches!(self.publishing_status.as_str(), "production" | "testing") {
            problems.push(format!(
                "google.publishing_status must be \"production\" or \"testing\", not {:?}",
                self.publishing_status
            ));
        }
    }
}

/// A secret given inline or as a file; empty means unset.
fn secret_or_file(inline: &SecretString, file: &Path, key: &str) -> Result<Option<SecretString>, String> {
    if !file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{key}_file {}: {e}", file.display()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{key}_file {} is empty", file.display()));
        }
        return Ok(Some(SecretString::from(text.to_string())));
    }
    let inline = inline.expose_secret().trim();
    Ok((!inline.is_empty()).then(|| SecretString::from(inline.to_string())))
}

impl Config {
    /// The layered sources, without validation: defaults, the file, `DATABASE_URL`, `MEETINGD_*`.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        figment.merge(Env::prefixed("MEETINGD_").split("__").ignore(NON_CONFIG_ENV))
    }

    /// Loads and validates the configuration the daemon runs with.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The compiled-in defaults alone (tests and the demo start from these).
    pub fn defaults() -> Config {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML))).expect("default.toml is valid")
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            config.use_credentials(Path::new(&dir));
        }
        config.validate()?;
        Ok(config)
    }

    /// systemd credentials (`LoadCredential=`): a file named after a secret fills that secret's
    /// `*_file` key when the configuration sets neither the secret nor its file.
    pub fn use_credentials(&mut self, dir: &Path) {
        let present = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let unset =
            |inline: &SecretString, file: &Path| inline.expose_secret().is_empty() && file.as_os_str().is_empty();
        if unset(&self.encryption.key, &self.encryption.key_file)
            && let Some(p) = present(CREDENTIAL_ENCRYPTION_KEY)
        {
            self.encryption.key_file = p;
        }
        if unset(&self.google.client_secret, &self.google.client_secret_file)
            && let Some(p) = present(CREDENTIAL_GOOGLE_SECRET)
        {
            self.google.client_secret_file = p;
        }
        self.zoom.use_credentials(dir);
        self.teams.use_credentials(dir);
        self.webhooks.use_credentials(dir);
        if unset(&self.http.jwt_secret, &self.http.jwt_secret_file)
            && let Some(p) = present(CREDENTIAL_JWT_SECRET)
        {
            self.http.jwt_secret_file = p;
        }
        if let Some(p) = present(CREDENTIAL_DATABASE_URL)
            && let Ok(url) = std::fs::read_to_string(&p)
        {
            self.database.url = SecretString::from(url.trim().to_string());
        }
    }

    /// Every problem at once, so `meetingd check` can list them all in one run.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match crate::db::tls::split(self.database.url.expose_secret(), None) {
            Ok((rest, _)) => {
                if let Err(e) = rest.parse::<tokio_postgres::Config>() {
                    problems.push(format!("database.url is not a PostgreSQL connection string: {e}"));
                }
            }
            Err(e) => problems.push(format!("database.url: {e}")),
        }
        let d = &self.database;
        if !d.migration_url.expose_secret().is_empty() {
            match crate::db::tls::split(d.migration_url.expose_secret(), None) {
                Ok((rest, _)) => {
                    if let Err(e) = rest.parse::<tokio_postgres::Config>() {
                        problems.push(format!("database.migration_url is not a PostgreSQL connection string: {e}"));
                    }
                }
                Err(e) => problems.push(format!("database.migration_url: {e}")),
            }
        }
        if d.lock_timeout_ms == 0 {
            problems.push("database.lock_timeout_ms must be greater than 0".into());
        }
        if d.pooler == Pooler::PgbouncerTransaction {
            if self.worker.listen {
                problems.push(
                    "worker.listen must be false with database.pooler = \"pgbouncer-transaction\": LISTEN does not work through transaction pooling (the daemon then polls, see worker.poll_interval_ms)"
                        .into(),
                );
            }
            if d.migration_url.expose_secret().is_empty() {
                problems.push(
                    "database.migration_url must be set with database.pooler = \"pgbouncer-transaction\": migrations hold a session advisory lock, so they need a direct connection to PostgreSQL (or a session-mode pool)"
                        .into(),
                );
            }
        }
        let w = &self.worker;
        if w.concurrency == 0 || w.concurrency > 1024 {
            problems.push(format!("worker.concurrency must be between 1 and 1024, not {}", w.concurrency));
        }
        if w.max_attempts == 0 {
            problems.push("worker.max_attempts must be at least 1".into());
        }
        if w.lease_secs < 5 {
            problems.push(format!("worker.lease_secs must be at least 5, not {}", w.lease_secs));
        }
        for (key, value) in [
            ("worker.sweep_interval_ms", w.sweep_interval_ms),
            ("worker.poll_interval_ms", w.poll_interval_ms),
            ("worker.listen_ping_interval_ms", w.listen_ping_interval_ms),
            ("worker.retry_base_ms", w.retry_base_ms),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if w.retry_max_ms < w.retry_base_ms {
            problems.push("worker.retry_max_ms must not be below worker.retry_base_ms".into());
        }
        // Room links are meeting links: https only (`links.rs`), so a plain-http base would fail
        // every Jitsi booking.
        if self.jitsi.base_url.scheme() != "https" || self.jitsi.base_url.host().is_none() {
            problems.push(format!(
                "jitsi.base_url must be an https URL with a host (meeting links are https only), not {}",
                self.jitsi.base_url
            ));
        }
        // A missing or malformed key is reported by `check` and refused by `run`; other commands
        // (migrate, demo) do not need one.
        for k in &self.encryption.old_keys {
            if let Err(e) = Keyring::new(k, &[]) {
                problems.push(format!("encryption.old_keys: {e}"));
            }
        }
        self.google.problems(&mut problems);
        self.zoom.problems(&mut problems);
        self.teams.problems(&mut problems);
        self.webhooks.problems(&mut problems);
        self.monitor.problems(&mut problems);
        for (name, r) in
            [("google_meet", &self.limits.google_meet), ("zoom", &self.limits.zoom), ("teams", &self.limits.teams)]
        {
            if !(r.integration_rate > 0.0 && r.platform_rate > 0.0) || r.integration_burst == 0 || r.platform_burst == 0
            {
                problems.push(format!("limits.{name}: rates and bursts must be greater than 0"));
            }
            if name != "zoom" && r.daily_meeting_writes != 0 {
                problems.push(format!(
                    "limits.{name}.daily_meeting_writes: only Zoom's daily limit is counted (set it in [limits.zoom])"
                ));
            }
        }
        let h = &self.http;
        if !h.listen.is_empty() && h.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen must be an address like 127.0.0.1:8080 (or \"\" to disable), not {:?}",
                h.listen
            ));
        }
        if !h.metrics_listen.is_empty() && h.metrics_listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.metrics_listen must be an address like 127.0.0.1:9187 (or \"\"), not {:?}",
                h.metrics_listen
            ));
        }
        if !matches!(h.jwt_algorithm.as_str(), "HS256" | "RS256" | "ES256") {
            problems.push(format!("http.jwt_algorithm must be HS256, RS256 or ES256, not {:?}", h.jwt_algorithm));
        }
        if let Err(e) = h.jwt_secret() {
            problems.push(e);
        }
        h.jwt_problems(&mut problems);
        if self.reconcile.hour_utc > 23 {
            problems.push("reconcile.hour_utc must be an hour from 0 to 23".into());
        }
        if h.pool_size == 0 {
            problems.push("http.pool_size must be at least 1".into());
        }
        if h.body_limit_bytes < 256 {
            problems.push("http.body_limit_bytes must be at least 256".into());
        }
        problems
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn pool_size(&self) -> usize {
        if self.database.pool_size == 0 { self.worker.concurrency + 2 } else { self.database.pool_size }
    }
}

/// A connection string with any password replaced, for logs and reports.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        // key=value form: drop the password pair.
        Err(_) => url
            .split_whitespace()
            .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

mod http;
mod monitor;
mod teams;
mod traps;
mod webhooks;
mod zoom;

pub use http::HttpConfig;
pub use monitor::MonitorConfig;
pub use teams::{CREDENTIAL_TEAMS_SECRET, TeamsConfig};
pub use webhooks::{CREDENTIAL_WEBHOOKS_SECRET, WebhooksConfig};
pub use zoom::{CREDENTIAL_ZOOM_SECRET, ZoomConfig};

#[cfg(test)]
mod tests;
