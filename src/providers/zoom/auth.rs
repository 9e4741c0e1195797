//! Connecting a Zoom account: Zoom's OAuth facts and its `PlatformAuth` (see `providers::auth`).
//! The consent screen, token and revocation endpoints come from `[zoom]`; who the account is
//! comes from `GET /v2/users/me`. It never touches the database or logs a token.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::super::auth::{Anchor, Identity, Lifetime, OAuthSpec, PlatformAuth, who_am_i};
use super::super::{Platform, ProviderError};
use super::oauth_client;
use crate::config::ZoomConfig;
use crate::oauth::OAuthClient;

/// Zoom's OAuth facts (a user-level "General app", granular scopes): make, move, delete, read
/// and list meetings, and read who the user is. Each is required: without one, a part of the
/// exactly-once create (the list) or the account's identity is missing.
pub static OAUTH: OAuthSpec = OAuthSpec {
    platform: Platform::Zoom,
    path_segment: "zoom",
    vendor: "Zoom",
    scopes: &[
        "meeting:write:meeting",
        "meeting:update:meeting",
        "meeting:delete:meeting",
        "meeting:read:meeting",
        "meeting:read:list_meetings",
        "user:read:user",
    ],
    authorize_params: &[],
    required_scopes: &[
        &["meeting:write:meeting"],
        &["meeting:update:meeting"],
        &["meeting:delete:meeting"],
        &["meeting:read:meeting"],
        &["meeting:read:list_meetings"],
        &["user:read:user"],
    ],
    // Each refresh answers a new refresh token that lives 90 days (the old one dies at once).
    refresh_lifetime: Some(Lifetime { anchor: Anchor::Refresh, days: 90 }),
};

/// Connecting a Zoom account (see `providers::auth`).
pub struct ZoomAuth {
    config: ZoomConfig,
    client: OAuthClient,
}

impl ZoomAuth {
    /// `None` when Zoom is not configured.
    pub fn from_config(config: &ZoomConfig) -> Result<Option<ZoomAuth>, String> {
        Ok(oauth_client(config)?.map(|client| ZoomAuth { config: config.clone(), client }))
    }
}

#[derive(Deserialize)]
struct ZoomUser {
    id: Option<String>,
    email: Option<String>,
}

#[async_trait::async_trait]
impl PlatformAuth for ZoomAuth {
    fn spec(&self) -> &'static OAuthSpec {
        &OAUTH
    }

    fn client(&self) -> &OAuthClient {
        &self.client
    }

    fn authorize_url(&self) -> &url::Url {
        &self.config.auth_url
    }

    fn revoke_url(&self) -> Option<&url::Url> {
        Some(&self.config.revoke_url)
    }

    /// Zoom's user id and e-mail address, from `GET /v2/users/me`.
    async fn identity(&self, access_token: &SecretString) -> Result<Identity, ProviderError> {
        let url = self.config.api_base_url.join("users/me");
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let user: ZoomUser = who_am_i(url, access_token, timeout, "Zoom").await?;
        Ok(Identity { platform_user_id: user.id, email: user.email })
    }
}
