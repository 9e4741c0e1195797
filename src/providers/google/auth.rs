//! Connecting a Google account: Google's OAuth facts and its `PlatformAuth` (see
//! `providers::auth`). The consent screen, token and revocation endpoints come from `[google]`;
//! who the account is comes from the Calendar API (`super::account_email`).

use std::time::Duration;

use secrecy::SecretString;

use super::super::auth::{Anchor, Identity, Lifetime, OAuthSpec, PlatformAuth};
use super::super::{Platform, ProviderError};
use super::account_email;
use crate::config::GoogleConfig;
use crate::oauth::OAuthClient;

/// Google's OAuth facts: Calendar events (Meet conferences are made through them), required
/// (the consent screen lets the user untick it); offline access and a consent prompt, so a
/// refresh token is always issued.
pub static OAUTH: OAuthSpec = OAuthSpec {
    platform: Platform::GoogleMeet,
    path_segment: "google-meet",
    vendor: "Google",
    scopes: &["https://www.googleapis.com/auth/calendar.events"],
    authorize_params: &[("access_type", "offline"), ("prompt", "consent"), ("include_granted_scopes", "true")],
    // Events on the provider's calendar, or the whole calendar (which includes them).
    required_scopes: &[&[
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar",
    ]],
    // A published app's refresh tokens live until revoked; see `TESTING_LIFETIME`.
    refresh_lifetime: None,
};

/// A refresh token of an OAuth app whose publishing status is "Testing" dies 7 days after the
/// consent, however often it is used (`google.publishing_status = "testing"`).
pub const TESTING_LIFETIME: Lifetime = Lifetime { anchor: Anchor::Consent, days: 7 };

/// meetingd's OAuth client at Google's token endpoint; `None` when `google.client_id` or the
/// client secret is not set.
pub fn oauth_client(config: &GoogleConfig) -> Result<Option<OAuthClient>, String> {
    Ok(match config.client_secret()? {
        Some(secret) if !config.client_id.trim().is_empty() => Some(OAuthClient::new(
            &config.client_id,
            secret,
            config.token_url.clone(),
            Duration::from_millis(config.request_timeout_ms),
        )),
        _ => None,
    })
}

/// Connecting a Google account (see `providers::auth`).
pub struct GoogleAuth {
    config: GoogleConfig,
    client: OAuthClient,
}

impl GoogleAuth {
    /// `None` when Google is not configured.
    pub fn from_config(config: &GoogleConfig) -> Result<Option<GoogleAuth>, String> {
        Ok(oauth_client(config)?.map(|client| GoogleAuth { config: config.clone(), client }))
    }
}

#[async_trait::async_trait]
impl PlatformAuth for GoogleAuth {
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

    /// Google tells the e-mail address only (the id of the primary calendar).
    async fn identity(&self, access_token: &SecretString) -> Result<Identity, ProviderError> {
        let email = account_email(&self.config, access_token).await?;
        Ok(Identity { platform_user_id: None, email: Some(email) })
    }

    fn grant_lifetime(&self) -> Option<Lifetime> {
        self.config.testing().then_some(TESTING_LIFETIME)
    }
}
