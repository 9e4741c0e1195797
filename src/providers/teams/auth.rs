//! Connecting a Microsoft 365 account: the Microsoft identity platform's OAuth facts and Teams'
//! `PlatformAuth` (see `providers::auth`). The consent screen and token endpoint come from
//! `[teams]` (the tenant's v2.0 endpoints); who the account is comes from Graph's `GET /me`.
//! Personal Microsoft accounts cannot hold online meetings: they are refused at connect time.
//! It never touches the database or logs a token.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::super::auth::{Anchor, Identity, Lifetime, OAuthSpec, PlatformAuth, who_am_i};
use super::super::{Platform, ProviderError};
use super::oauth_client;
use crate::config::TeamsConfig;
use crate::oauth::OAuthClient;

/// The Microsoft identity platform's facts for Teams (delegated permissions): make, move and
/// delete the user's online meetings, a refresh token (`offline_access`), and who the user is.
pub static OAUTH: OAuthSpec = OAuthSpec {
    platform: Platform::Teams,
    path_segment: "teams",
    vendor: "Microsoft",
    scopes: &["OnlineMeetings.ReadWrite", "offline_access", "User.Read"],
    authorize_params: &[],
    // The token endpoint answers the granted scopes as full resource URIs.
    required_scopes: &[
        &["https://graph.microsoft.com/OnlineMeetings.ReadWrite", "OnlineMeetings.ReadWrite"],
        &["https://graph.microsoft.com/User.Read", "User.Read"],
    ],
    // A refresh token unused for 90 days dies (AADSTS700082); every refresh starts it again.
    refresh_lifetime: Some(Lifetime { anchor: Anchor::Refresh, days: 90 }),
};

/// The error code in the callback's redirect for a personal Microsoft account.
pub const PERSONAL_ACCOUNT: &str = "personal_account_unsupported";

/// Connecting a Microsoft 365 account (see `providers::auth`).
pub struct TeamsAuth {
    config: TeamsConfig,
    auth_url: url::Url,
    client: OAuthClient,
}

impl TeamsAuth {
    /// `None` when Teams is not configured.
    pub fn from_config(config: &TeamsConfig) -> Result<Option<TeamsAuth>, String> {
        let Some(client) = oauth_client(config)? else { return Ok(None) };
        Ok(Some(TeamsAuth { config: config.clone(), auth_url: config.auth_url()?, client }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: Option<String>,
    mail: Option<String>,
    user_principal_name: Option<String>,
}

/// Whether Graph's id of a user is a work or school account's: an Entra object id is a GUID; a
/// personal Microsoft account's is 16 hex digits.
fn is_organisational(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

#[async_trait::async_trait]
impl PlatformAuth for TeamsAuth {
    fn spec(&self) -> &'static OAuthSpec {
        &OAUTH
    }

    fn client(&self) -> &OAuthClient {
        &self.client
    }

    fn authorize_url(&self) -> &url::Url {
        &self.auth_url
    }

    /// The Microsoft identity platform has no token revocation endpoint for a client: a
    /// disconnect wipes the tokens (the user removes the app under My Apps).
    fn revoke_url(&self) -> Option<&url::Url> {
        None
    }

    /// Graph's id of the user and their address (`mail`, else the sign-in name).
    async fn identity(&self, access_token: &SecretString) -> Result<Identity, ProviderError> {
        let url = self.config.api_base_url.join("me");
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let user: GraphUser = who_am_i(url, access_token, timeout, "Microsoft Graph").await?;
        Ok(Identity { platform_user_id: user.id, email: user.mail.or(user.user_principal_name) })
    }

    /// A personal Microsoft account (Outlook.com, Hotmail, Live) cannot create online meetings.
    fn refusal(&self, identity: &Identity) -> Option<&'static str> {
        identity.platform_user_id.as_deref().filter(|id| !is_organisational(id)).map(|_| PERSONAL_ACCOUNT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_accounts_are_told_apart_by_their_graph_id() {
        assert!(is_organisational("87d349ed-44d7-43e1-9a83-5f2406dee5bd"));
        assert!(!is_organisational("4d8e2c6f3b1a0e9d"));
        assert!(!is_organisational(""));
    }
}
