//! The `[teams]` section: meetingd's app registration in Microsoft Entra ID (the Microsoft
//! identity platform v2), the tenant whose accounts may connect, and the Graph API base URL.
//!
//! Validates itself for `Config::problems` and `meetingd check`; it opens nothing but the client
//! secret's file. Teams is offered only when `client_id` and a client secret are both set.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secret_or_file;

/// The Teams client secret's name under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub const CREDENTIAL_TEAMS_SECRET: &str = "teams-client-secret";

/// The Microsoft identity platform's host.
const LOGIN_BASE: &str = "https://login.microsoftonline.com/";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_file: PathBuf,
    /// Whose accounts may connect: `organizations` (any work or school account), a tenant id or
    /// domain (one organisation's). `common` also lets personal accounts reach the consent screen,
    /// and they are refused after it: they cannot hold online meetings.
    pub tenant: String,
    /// The consent screen and the token endpoint; "" derives them from `tenant`.
    pub auth_url: String,
    pub token_url: String,
    /// Microsoft Graph, ending in a slash (`https://graph.microsoft.com/v1.0/`).
    pub api_base_url: url::Url,
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for TeamsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &if self.client_secret.expose_secret().is_empty() { "" } else { "***" })
            .field("client_secret_file", &self.client_secret_file)
            .field("tenant", &self.tenant)
            .field("api_base_url", &self.api_base_url.as_str())
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl TeamsConfig {
    /// The OAuth client secret, `None` when Teams is not configured.
    pub fn client_secret(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.client_secret, &self.client_secret_file, "teams.client_secret")
    }

    /// Whether Teams is offered: a client id and a client secret are both set.
    pub fn is_configured(&self) -> bool {
        !self.client_id.trim().is_empty() && matches!(self.client_secret(), Ok(Some(_)))
    }

    /// The consent screen: `teams.auth_url`, else the tenant's v2.0 authorize endpoint.
    pub fn auth_url(&self) -> Result<url::Url, String> {
        self.endpoint(&self.auth_url, "auth_url", "authorize")
    }

    /// The token endpoint: `teams.token_url`, else the tenant's v2.0 token endpoint.
    pub fn token_url(&self) -> Result<url::Url, String> {
        self.endpoint(&self.token_url, "token_url", "token")
    }

    fn endpoint(&self, set: &str, key: &str, leaf: &str) -> Result<url::Url, String> {
        let text = if set.trim().is_empty() {
            format!("{LOGIN_BASE}{}/oauth2/v2.0/{leaf}", self.tenant.trim())
        } else {
            set.trim().to_string()
        };
        text.parse().map_err(|e| format!("teams.{key} is not a URL ({e}): {text:?}"))
    }

    /// The systemd credential fills `client_secret_file` when neither it nor the secret is set.
    pub(super) fn use_credentials(&mut self, dir: &Path) {
        let unset = self.client_secret.expose_secret().is_empty() && self.client_secret_file.as_os_str().is_empty();
        let file = dir.join(CREDENTIAL_TEAMS_SECRET);
        if unset && file.is_file() {
            self.client_secret_file = file;
        }
    }

    /// What is wrong with the `[teams]` section, added to `problems`.
    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        match self.client_secret() {
            Err(e) => problems.push(e),
            Ok(Some(_)) if self.client_id.trim().is_empty() => {
                problems.push("teams: a client secret is set but teams.client_id is empty".into());
            }
            Ok(_) => {}
        }
        let tenant = self.tenant.trim();
        if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
            problems.push(format!(
                "teams.tenant must be \"organizations\", \"common\", a tenant id or a tenant's domain, not {:?}",
                self.tenant
            ));
        } else if tenant == "consumers" {
            problems.push(
                "teams.tenant = \"consumers\" admits personal Microsoft accounts only, which cannot hold online meetings; use \"organizations\"".into(),
            );
        }
        for e in [self.auth_url().err(), self.token_url().err()].into_iter().flatten() {
            problems.push(e);
        }
        if !self.api_base_url.as_str().ends_with('/') {
            problems.push(format!("teams.api_base_url must end with a slash: {}", self.api_base_url));
        }
        if self.request_timeout_ms == 0 {
            problems.push("teams.request_timeout_ms must be greater than 0".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn teams_is_off_by_default_and_its_endpoints_follow_the_tenant() {
        let mut config = Config::defaults();
        assert!(!config.teams.is_configured());
        assert_eq!(config.teams.tenant, "organizations");
        assert_eq!(
            config.teams.auth_url().unwrap().as_str(),
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
        );
        assert_eq!(config.teams.api_base_url.as_str(), "https://graph.microsoft.com/v1.0/");
        config.teams.tenant = "contoso.onmicrosoft.com".into();
        assert_eq!(
            config.teams.token_url().unwrap().as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        config.teams.token_url = "http://127.0.0.1:9/tenant/oauth2/v2.0/token".into();
        assert_eq!(config.teams.token_url().unwrap().as_str(), "http://127.0.0.1:9/tenant/oauth2/v2.0/token");
        config.teams.client_id = "id".into();
        assert!(!config.teams.is_configured(), "a client id alone is not a client");
        config.teams.client_secret = SecretString::from("secret");
        assert!(config.teams.is_configured());
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert!(!format!("{:?}", config.teams).contains("secret\""), "the secret is redacted");
    }

    #[test]
    fn a_bad_teams_section_is_reported() {
        let mut config = Config::defaults();
        config.teams.client_secret = SecretString::from("secret");
        config.teams.tenant = "consumers".into();
        config.teams.api_base_url = "https://graph.microsoft.com/v1.0".parse().unwrap();
        config.teams.request_timeout_ms = 0;
        let problems = config.problems();
        for want in [
            "teams.client_id is empty",
            "personal Microsoft accounts only",
            "must end with a slash",
            "teams.request_timeout_ms",
        ] {
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
        config.teams.tenant = "evil/../x".into();
        assert!(config.problems().iter().any(|p| p.contains("teams.tenant must be")));
    }
}
