//! The `[zoom]` section: meetingd's OAuth client at Zoom (a user-level "General app"), Zoom's
//! OAuth endpoints and its Meetings API base URL.
//!
//! Validates itself for `Config::problems` and `meetingd check`; it opens nothing but the client
//! secret's and the webhook secret token's files. Zoom is offered only when `client_id` and a
//! client secret are both set; its deauthorization webhook (`http/webhooks.rs`) only when the
//! webhook secret token is set too.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secret_or_file;

/// The Zoom client secret's name under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub const CREDENTIAL_ZOOM_SECRET: &str = "zoom-client-secret";

/// The Zoom webhook secret token's name under `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_ZOOM_WEBHOOK_SECRET: &str = "zoom-webhook-secret-token";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoomConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_file: PathBuf,
    /// The app's Secret Token (Marketplace, Event Subscriptions): Zoom signs every webhook
    /// request with it.
    pub webhook_secret_token: SecretString,
    pub webhook_secret_token_file: PathBuf,
    pub auth_url: url::Url,
    pub token_url: url::Url,
    pub revoke_url: url::Url,
    /// Zoom's REST API, ending in a slash (`https://api.zoom.us/v2/`).
    pub api_base_url: url::Url,
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for ZoomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoomConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &if self.client_secret.expose_secret().is_empty() { "" } else { "***" })
            .field("client_secret_file", &self.client_secret_file)
            .field(
                "webhook_secret_token",
                &if self.webhook_secret_token.expose_secret().is_empty() { "" } else { "***" },
            )
            .field("webhook_secret_token_file", &self.webhook_secret_token_file)
            .field("token_url", &self.token_url.as_str())
            .field("api_base_url", &self.api_base_url.as_str())
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl ZoomConfig {
    /// The OAuth client secret, `None` when Zoom is not configured.
    pub fn client_secret(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.client_secret, &self.client_secret_file, "zoom.client_secret")
    }

    /// The webhook secret token, `None` when it is not set.
    pub fn webhook_secret_token(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.webhook_secret_token, &self.webhook_secret_token_file, "zoom.webhook_secret_token")
    }

    /// Whether Zoom is offered: a client id and a client secret are both set.
    pub fn is_configured(&self) -> bool {
        !self.client_id.trim().is_empty() && matches!(self.client_secret(), Ok(Some(_)))
    }

    /// The systemd credentials fill `client_secret_file` and `webhook_secret_token_file`, each
    /// when neither it nor its inline secret is set.
    pub(super) fn use_credentials(&mut self, dir: &Path) {
        fill_from_credential(&self.client_secret, &mut self.client_secret_file, dir, CREDENTIAL_ZOOM_SECRET);
        fill_from_credential(
            &self.webhook_secret_token,
            &mut self.webhook_secret_token_file,
            dir,
            CREDENTIAL_ZOOM_WEBHOOK_SECRET,
        );
    }

    /// What is wrong with the `[zoom]` section, added to `problems`.
    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        match self.client_secret() {
            Err(e) => problems.push(e),
            Ok(Some(_)) if self.client_id.trim().is_empty() => {
                problems.push("zoom: a client secret is set but zoom.client_id is empty".into());
            }
            Ok(_) => {}
        }
        match self.webhook_secret_token() {
            Err(e) => problems.push(e),
            Ok(Some(_)) if !self.is_configured() => problems.push(
                "zoom: a webhook secret token is set but Zoom has no OAuth client (zoom.client_id and a client secret)"
                    .into(),
            ),
            Ok(_) => {}
        }
        if !self.api_base_url.as_str().ends_with('/') {
            problems.push(format!("zoom.api_base_url must end with a slash: {}", self.api_base_url));
        }
        if self.request_timeout_ms == 0 {
            problems.push("zoom.request_timeout_ms must be greater than 0".into());
        }
    }
}

/// `file` becomes the credential `name` in `dir` when neither `inline` nor `file` is set and the
/// credential exists.
pub(super) fn fill_from_credential(inline: &SecretString, file: &mut PathBuf, dir: &Path, name: &str) {
    let unset = inline.expose_secret().is_empty() && file.as_os_str().is_empty();
    let credential = dir.join(name);
    if unset && credential.is_file() {
        *file = credential;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn zoom_is_off_by_default_and_on_with_a_client() {
        let mut config = Config::defaults();
        assert!(!config.zoom.is_configured());
        assert_eq!(config.zoom.api_base_url.as_str(), "https://api.zoom.us/v2/");
        assert_eq!(config.zoom.token_url.as_str(), "https://zoom.us/oauth/token");
        config.zoom.client_id = "id".into();
        assert!(!config.zoom.is_configured(), "a client id alone is not a client");
        config.zoom.client_secret = SecretString::from("secret");
        assert!(config.zoom.is_configured());
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert!(!format!("{:?}", config.zoom).contains("secret\""), "the secret is redacted");
    }

    #[test]
    fn a_bad_zoom_section_is_reported() {
        let mut config = Config::defaults();
        config.zoom.client_secret = SecretString::from("secret");
        config.zoom.api_base_url = "https://api.zoom.us/v2".parse().unwrap();
        config.zoom.request_timeout_ms = 0;
        let problems = config.problems();
        for want in ["zoom.client_id is empty", "zoom.api_base_url must end with a slash", "zoom.request_timeout_ms"] {
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
    }

    #[test]
    fn the_systemd_credential_fills_the_secret_file() {
        let dir = std::env::temp_dir().join(format!("meetingd-zoom-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CREDENTIAL_ZOOM_SECRET), "from-systemd\n").unwrap();
        std::fs::write(dir.join(CREDENTIAL_ZOOM_WEBHOOK_SECRET), "webhook-from-systemd\n").unwrap();
        let mut config = Config::defaults();
        config.zoom.client_id = "id".into();
        config.use_credentials(&dir);
        assert_eq!(config.zoom.client_secret().unwrap().unwrap().expose_secret(), "from-systemd");
        assert_eq!(config.zoom.webhook_secret_token().unwrap().unwrap().expose_secret(), "webhook-from-systemd");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_explicit_webhook_secret_token_wins_over_the_credential() {
        let dir = std::env::temp_dir().join(format!("meetingd-zoom-webhook-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CREDENTIAL_ZOOM_WEBHOOK_SECRET), "from-systemd\n").unwrap();
        let mut config = Config::defaults();
        config.zoom.webhook_secret_token = SecretString::from("mine");
        config.use_credentials(&dir);
        assert_eq!(config.zoom.webhook_secret_token_file.as_os_str(), "");
        assert_eq!(config.zoom.webhook_secret_token().unwrap().unwrap().expose_secret(), "mine");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_webhook_secret_token_is_redacted_and_needs_a_zoom_client() {
        let mut config = Config::defaults();
        assert_eq!(config.zoom.webhook_secret_token().unwrap().map(|_| ()), None, "unset by default");
        config.zoom.webhook_secret_token = SecretString::from("wh-token-value");
        assert!(!format!("{:?}", config.zoom).contains("wh-token-value"), "the token is redacted");
        let problems = config.problems();
        assert!(
            problems.iter().any(|p| p.contains("webhook secret token is set but Zoom has no OAuth client")),
            "{problems:?}"
        );
        config.zoom.client_id = "id".into();
        config.zoom.client_secret = SecretString::from("secret");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        config.zoom.webhook_secret_token_file = "/nonexistent/meetingd-webhook-token".into();
        let problems = config.problems();
        assert!(problems.iter().any(|p| p.contains("zoom.webhook_secret_token_file")), "{problems:?}");
    }
}
