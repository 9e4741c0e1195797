//! The `[zoom]` section: meetingd's OAuth client at Zoom (a user-level "General app"), Zoom's
//! OAuth endpoints and its Meetings API base URL.
//!
//! Validates itself for `Config::problems` and `meetingd check`; it opens nothing but the client
//! secret's file. Zoom is offered only when `client_id` and a client secret are both set.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secret_or_file;

/// The Zoom client secret's name under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub const CREDENTIAL_ZOOM_SECRET: &str = "zoom-client-secret";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoomConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_file: PathBuf,
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

    /// Whether Zoom is offered: a client id and a client secret are both set.
    pub fn is_configured(&self) -> bool {
        !self.client_id.trim().is_empty() && matches!(self.client_secret(), Ok(Some(_)))
    }

    /// The systemd credential fills `client_secret_file` when neither it nor the secret is set.
    pub(super) fn use_credentials(&mut self, dir: &Path) {
        let unset = self.client_secret.expose_secret().is_empty() && self.client_secret_file.as_os_str().is_empty();
        let file = dir.join(CREDENTIAL_ZOOM_SECRET);
        if unset && file.is_file() {
            self.client_secret_file = file;
        }
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
        if !self.api_base_url.as_str().ends_with('/') {
            problems.push(format!("zoom.api_base_url must end with a slash: {}", self.api_base_url));
        }
        if self.request_timeout_ms == 0 {
            problems.push("zoom.request_timeout_ms must be greater than 0".into());
        }
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
        let mut config = Config::defaults();
        config.zoom.client_id = "id".into();
        config.use_credentials(&dir);
        assert_eq!(config.zoom.client_secret().unwrap().unwrap().expose_secret(), "from-systemd");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
