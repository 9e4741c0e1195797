//! The `[webhooks]` section: where every row of `meetingd.events` is POSTed, signed per the
//! Standard Webhooks specification (`webhooks/`), and how hard meetingd tries.
//!
//! Validates itself for `Config::problems` and `meetingd check`; it opens nothing but the
//! secret's file. No `url`: the feature is off. The secret never leaves this struct but through
//! [`WebhooksConfig::secret`], and its `Debug` redacts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secret_or_file;
use super::traps::is_loopback;
use super::zoom::fill_from_credential;

/// The signing secret's name under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub const CREDENTIAL_WEBHOOKS_SECRET: &str = "webhooks-secret";

/// Standard Webhooks secrets: `whsec_` and base64 of 24 to 64 random bytes.
const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The receiver; empty: no webhooks.
    pub url: String,
    pub secret: SecretString,
    pub secret_file: PathBuf,
    /// An event not delivered this long after it happened (or was re-driven) is dead-lettered.
    pub max_age_secs: u64,
    /// One POST gives up after this long (then it is retried).
    pub timeout_ms: u64,
    /// POSTs in flight at once (this daemon).
    pub concurrency: usize,
    /// Back-off between attempts (`retry.rs`): exponential from `retry_base_ms`, capped at
    /// `retry_max_ms`, with jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("url", &self.shown_url())
            .field("secret", &if self.secret.expose_secret().is_empty() { "" } else { "***" })
            .field("secret_file", &self.secret_file)
            .field("max_age_secs", &self.max_age_secs)
            .field("timeout_ms", &self.timeout_ms)
            .field("concurrency", &self.concurrency)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .finish()
    }
}

impl WebhooksConfig {
    /// Whether webhooks are sent: a URL is set.
    pub fn is_on(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The receiver's URL, `None` when off or unparsable (`problems` says which).
    pub fn url(&self) -> Option<url::Url> {
        url::Url::parse(self.url.trim()).ok()
    }

    /// The receiver as logs and `check` show it: scheme, host and port, never a path or query
    /// (which may carry a token of the receiver's).
    pub fn shown_url(&self) -> String {
        match self.url() {
            Some(u) => {
                format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"))
                    + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
            }
            None if self.is_on() => "(invalid)".into(),
            None => String::new(),
        }
    }

    /// The signing secret (`whsec_…`), `None` when unset.
    pub fn secret(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.secret, &self.secret_file, "webhooks.secret")
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    /// How long a claimed delivery belongs to this daemon: the POST's time-out and a margin for
    /// the claim and the write-back.
    pub fn lease(&self) -> Duration {
        self.timeout() + Duration::from_secs(30)
    }

    /// The back-off between attempts; attempts are bounded by `max_age`, not counted.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
            max_attempts: u32::MAX,
        }
    }

    /// The systemd credential fills `secret_file` when neither it nor `secret` is set.
    pub(super) fn use_credentials(&mut self, dir: &Path) {
        fill_from_credential(&self.secret, &mut self.secret_file, dir, CREDENTIAL_WEBHOOKS_SECRET);
    }

    /// What is wrong with the `[webhooks]` section, added to `problems`.
    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        let secret = match self.secret() {
            Ok(secret) => secret,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        if let Some(secret) = &secret
            && let Err(e) = check_secret(secret)
        {
            problems.push(e);
        }
        if !self.is_on() {
            return;
        }
        match self.url() {
            None => problems.push("webhooks.url is not a URL".into()),
            Some(u) if u.host().is_none() => problems.push("webhooks.url has no host".into()),
            Some(u) if u.scheme() == "https" => {}
            Some(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Some(u) => problems.push(format!(
                "webhooks.url must be https (plain http only to this machine), not {}://{}",
                u.scheme(),
                u.host_str().unwrap_or("?")
            )),
        }
        if secret.is_none() && self.secret().is_ok() {
            problems.push(
                "webhooks.url is set but no secret: set webhooks.secret_file (or webhooks.secret, or the systemd credential \"webhooks-secret\") to a whsec_ secret"
                    .into(),
            );
        }
        for (key, value) in [
            ("webhooks.max_age_secs", self.max_age_secs),
            ("webhooks.timeout_ms", self.timeout_ms),
            ("webhooks.retry_base_ms", self.retry_base_ms),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            problems.push("webhooks.retry_max_ms must not be below webhooks.retry_base_ms".into());
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            problems.push(format!("webhooks.concurrency must be between 1 and 256, not {}", self.concurrency));
        }
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes. The error never quotes
/// the secret.
fn check_secret(secret: &SecretString) -> Result<(), String> {
    let Some(key) = secret.expose_secret().strip_prefix(SECRET_PREFIX) else {
        return Err("webhooks.secret must start with whsec_ (a Standard Webhooks secret)".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if SECRET_BYTES.contains(&bytes.len()) => Ok(()),
        Ok(bytes) => Err(format!(
            "webhooks.secret must hold 24 to 64 bytes after whsec_ (base64), not {}; make one with `echo whsec_$(openssl rand -base64 32)`",
            bytes.len()
        )),
        Err(_) => Err("webhooks.secret: what follows whsec_ is not base64".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn webhooks_are_off_by_default_and_on_with_a_url_and_a_secret() {
        let mut config = Config::defaults();
        assert!(!config.webhooks.is_on());
        assert_eq!(config.webhooks.max_age_secs, 86_400);
        config.webhooks.url = "https://hooks.example.com/meetingd?token=abc".into();
        assert!(config.problems().iter().any(|p| p.contains("no secret")), "{:?}", config.problems());
        config.webhooks.secret = SecretString::from(SECRET);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let shown = format!("{:?}", config.webhooks);
        assert!(!shown.contains(SECRET) && !shown.contains("token=abc"), "{shown}");
        assert_eq!(config.webhooks.shown_url(), "https://hooks.example.com");
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let mut config = Config::defaults();
        config.webhooks.secret = SecretString::from(SECRET);
        config.webhooks.url = "http://127.0.0.1:9000/hook".into();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        config.webhooks.url = "http://hooks.example.com/hook".into();
        assert!(config.problems().iter().any(|p| p.contains("must be https")), "{:?}", config.problems());
        config.webhooks.url = "ftp://127.0.0.1/".into();
        assert!(config.problems().iter().any(|p| p.contains("must be https")), "{:?}", config.problems());
    }

    #[test]
    fn a_bad_secret_is_reported_without_quoting_it() {
        let mut config = Config::defaults();
        config.webhooks.url = "https://hooks.example.com/".into();
        for (bad, want) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
            ("whsec_not*base64!", "not base64"),
            ("whsec_c2hvcnQ=", "24 to 64 bytes"),
        ] {
            config.webhooks.secret = SecretString::from(bad);
            let problems = config.problems();
            assert!(problems.iter().any(|p| p.contains(want)), "{bad}: {problems:?}");
            assert!(!problems.iter().any(|p| p.contains(bad)), "the secret is quoted: {problems:?}");
        }
    }

    #[test]
    fn the_systemd_credential_fills_the_secret_file() {
        let dir = std::env::temp_dir().join(format!("meetingd-webhooks-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CREDENTIAL_WEBHOOKS_SECRET), format!("{SECRET}\n")).unwrap();
        let mut config = Config::defaults();
        config.webhooks.url = "https://hooks.example.com/".into();
        config.use_credentials(&dir);
        assert_eq!(config.webhooks.secret().unwrap().unwrap().expose_secret(), SECRET);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_numbers_are_reported() {
        let mut config = Config::defaults();
        config.webhooks.url = "https://hooks.example.com/".into();
        config.webhooks.secret = SecretString::from(SECRET);
        config.webhooks.max_age_secs = 0;
        config.webhooks.timeout_ms = 0;
        config.webhooks.concurrency = 0;
        let problems = config.problems();
        for want in ["webhooks.max_age_secs", "webhooks.timeout_ms", "webhooks.concurrency"] {
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
    }
}
