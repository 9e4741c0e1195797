//! Connecting a provider's account on a platform: each platform's OAuth facts in one place.
//!
//! A platform that needs an account ([`Platform::needs_account`]) has an [`OAuthSpec`] (its fixed
//! facts: the path segment of `/api/auth/{platform}/…`, scopes, consent-screen parameters), found
//! with [`spec`], and, when the configuration enables it, a [`PlatformAuth`] (its configured
//! endpoints and client, and how to learn who the connected account is), found in
//! [`Connectors`]. The HTTP API's connect, callback and disconnect are written against these
//! alone, so they name no platform. The OAuth calls themselves are `crate::oauth`'s; nothing here
//! touches the database or logs a token.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;

use super::{Platform, ProviderError, google, teams, zoom};
use crate::config::Config;
use crate::oauth::{Authorization, OAuthClient};

/// A platform's fixed OAuth facts (the authorization-code flow with PKCE S256).
#[derive(Debug, PartialEq, Eq)]
pub struct OAuthSpec {
    pub platform: Platform,
    /// The platform in API paths (`/api/auth/google-meet/connect`); its stored name
    /// ([`Platform::as_str`]) is accepted too.
    pub path_segment: &'static str,
    /// Who runs the consent screen, as messages name it ("Google is not configured …").
    pub vendor: &'static str,
    /// The scopes asked for, and recorded when the token endpoint does not say which it granted.
    pub scopes: &'static [&'static str],
    /// Query parameters of the consent-screen URL beyond OAuth's own, in order.
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// What meetingd cannot work without: each entry is met by any one of its scopes (the
    /// narrowest first, then broader ones that include it). A consent screen lets the user untick
    /// scopes, so the callback checks the granted ones against this before storing anything.
    pub required_scopes: &'static [&'static [&'static str]],
    /// How long a refresh token lives when the platform says so; `None`: until revoked.
    pub refresh_lifetime: Option<Lifetime>,
}

/// When a platform's grant dies without a reconnect: `days` after its [`Anchor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub anchor: Anchor,
    pub days: u32,
}

/// What a grant's lifetime counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The consent: refreshes do not extend it (Google's apps in "Testing").
    Consent,
    /// The last successful refresh, which starts it again (Microsoft's idle limit; Zoom's new
    /// refresh token with every refresh).
    Refresh,
}

impl Anchor {
    /// Its name in `db::health::LifetimeParams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Anchor::Consent => "consent",
            Anchor::Refresh => "refresh",
        }
    }
}

impl OAuthSpec {
    /// The required scopes `granted` does not meet, each named by its narrowest scope; empty
    /// when the grant is enough.
    pub fn missing_scopes(&self, granted: &[String]) -> Vec<&'static str> {
        self.required_scopes
            .iter()
            .filter(|any_of| !any_of.iter().any(|scope| granted.iter().any(|g| g == scope)))
            .filter_map(|any_of| any_of.first().copied())
            .collect()
    }
}

/// The OAuth facts of a platform whose accounts meetingd can connect; `None` for one it cannot
/// (yet). Adding a platform adds its arm here.
pub fn spec(platform: Platform) -> Option<&'static OAuthSpec> {
    match platform {
        Platform::GoogleMeet => Some(&google::OAUTH),
        Platform::Zoom => Some(&zoom::OAUTH),
        Platform::Teams => Some(&teams::OAUTH),
        Platform::Jitsi => None,
    }
}

/// What a path segment of `/api/auth/{platform}/…` or `/api/integrations/{platform}` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPlatform {
    /// A platform whose accounts can be connected.
    Connectable(&'static OAuthSpec),
    /// A platform that needs an account, but whose connection this server does not offer yet.
    NotYet,
    /// Nothing meetingd connects.
    Unknown,
}

impl PathPlatform {
    pub fn parse(segment: &str) -> PathPlatform {
        let spec = Platform::ALL
            .into_iter()
            .filter_map(spec)
            .find(|s| s.path_segment == segment || s.platform.as_str() == segment);
        match (spec, segment.parse::<Platform>()) {
            (Some(spec), _) => PathPlatform::Connectable(spec),
            (None, Ok(platform)) if platform.needs_account() => PathPlatform::NotYet,
            _ => PathPlatform::Unknown,
        }
    }
}

/// Who a connected account is, as the platform tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The platform's id of the account (`user_meeting_integrations.platform_user_id`).
    pub platform_user_id: Option<String>,
    /// Its e-mail address.
    pub email: Option<String>,
}

/// `GET url` with the connection's fresh access token, its JSON answer read as `T`: how a
/// platform with a REST "who am I" endpoint (Zoom's `users/me`, Graph's `me`) learns the account.
/// `vendor` names the platform in the errors; neither the token nor the answer is ever quoted.
pub(super) async fn who_am_i<T: serde::de::DeserializeOwned>(
    url: Result<url::Url, url::ParseError>,
    access_token: &SecretString,
    timeout: std::time::Duration,
    vendor: &str,
) -> Result<T, ProviderError> {
    let url = url.map_err(|e| ProviderError::Permanent(format!("bad {vendor} API base URL: {e}")))?;
    let response = reqwest::Client::builder()
        // These endpoints do not redirect; following one could send the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("a reqwest client with rustls builds")
        .get(url)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(access_token))
        .send()
        .await
        .map_err(|e| ProviderError::Transient(format!("connection to {vendor} failed: {}", e.without_url())))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ProviderError::Unauthorized);
    }
    if !status.is_success() {
        return Err(ProviderError::Transient(format!("{vendor} answered HTTP {status} for the connected user")));
    }
    response
        .json()
        .await
        .map_err(|_| ProviderError::Transient(format!("{vendor}'s answer about the connected user could not be read")))
}

/// A platform's account connection as configured: its endpoints, meetingd's client, and the
/// lookup of the connected account.
#[async_trait::async_trait]
pub trait PlatformAuth: Send + Sync {
    fn spec(&self) -> &'static OAuthSpec;
    /// meetingd's client at the platform's token endpoint (the code and refresh grants).
    fn client(&self) -> &OAuthClient;
    /// The consent screen.
    fn authorize_url(&self) -> &url::Url;
    /// Where a token is revoked on disconnect; `None`: the platform has no revocation, the token
    /// is only wiped.
    fn revoke_url(&self) -> Option<&url::Url>;
    /// Who the account is, asked with its fresh access token.
    async fn identity(&self, access_token: &SecretString) -> Result<Identity, ProviderError>;
    /// Why an account of this kind cannot be used (the error code of the callback's redirect),
    /// decided from who it is; nothing is stored then. By default every account is accepted.
    fn refusal(&self, _identity: &Identity) -> Option<&'static str> {
        None
    }
    /// How long a grant lives here: the platform's fact ([`OAuthSpec::refresh_lifetime`]) unless
    /// the configuration changes it (a Google app in "Testing").
    fn grant_lifetime(&self) -> Option<Lifetime> {
        self.spec().refresh_lifetime
    }

    /// The consent-screen URL for `state`, sending the browser back to `redirect_url`.
    fn authorize(&self, redirect_url: &url::Url, state: &str) -> Authorization {
        let spec = self.spec();
        self.client().authorize(self.authorize_url(), redirect_url, spec.scopes, spec.authorize_params, state)
    }
}

/// The platforms whose accounts this server can connect (their OAuth clients are configured).
#[derive(Clone, Default)]
pub struct Connectors {
    map: HashMap<Platform, Arc<dyn PlatformAuth>>,
}

impl Connectors {
    /// Every platform the configuration enables. Adding a platform adds its line here.
    pub fn from_config(config: &Config) -> Result<Connectors, String> {
        let mut connectors = Connectors::default();
        if let Some(google) = google::GoogleAuth::from_config(&config.google)? {
            connectors = connectors.with(Arc::new(google));
        }
        if let Some(zoom) = zoom::ZoomAuth::from_config(&config.zoom)? {
            connectors = connectors.with(Arc::new(zoom));
        }
        if let Some(teams) = teams::TeamsAuth::from_config(&config.teams)? {
            connectors = connectors.with(Arc::new(teams));
        }
        Ok(connectors)
    }

    pub fn with(mut self, auth: Arc<dyn PlatformAuth>) -> Connectors {
        self.map.insert(auth.spec().platform, auth);
        self
    }

    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn PlatformAuth>> {
        self.map.get(&platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_name_platforms() {
        for segment in ["google-meet", "google_meet"] {
            assert_eq!(PathPlatform::parse(segment), PathPlatform::Connectable(&google::OAUTH));
        }
        assert_eq!(PathPlatform::parse("zoom"), PathPlatform::Connectable(&zoom::OAUTH));
        assert_eq!(PathPlatform::parse("teams"), PathPlatform::Connectable(&teams::OAUTH));
        assert_eq!(PathPlatform::parse("jitsi"), PathPlatform::Unknown);
        assert_eq!(PathPlatform::parse("skype"), PathPlatform::Unknown);
    }

    #[test]
    fn a_grant_without_a_required_scope_is_short() {
        let spec = &google::OAUTH;
        let grant = |scopes: &[&str]| scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let events = "https://www.googleapis.com/auth/calendar.events";
        assert!(spec.missing_scopes(&grant(&[events])).is_empty());
        assert!(spec.missing_scopes(&grant(&["openid", events, "email"])).is_empty());
        assert!(spec.missing_scopes(&grant(&["https://www.googleapis.com/auth/calendar"])).is_empty());
        assert_eq!(spec.missing_scopes(&grant(&[])), [events]);
        assert_eq!(spec.missing_scopes(&grant(&["openid", "email"])), [events]);
        assert_eq!(spec.missing_scopes(&grant(&["https://www.googleapis.com/auth/calendar.readonly"])), [events]);
    }

    #[test]
    fn every_spec_is_its_platforms() {
        for p in Platform::ALL {
            if let Some(s) = spec(p) {
                assert_eq!(s.platform, p);
                assert!(p.needs_account(), "{p}");
                // What is required is asked for: a grant of exactly the request is enough.
                let asked: Vec<String> = s.scopes.iter().map(|s| s.to_string()).collect();
                assert!(s.missing_scopes(&asked).is_empty(), "{p}");
                assert!(!s.required_scopes.is_empty(), "{p}");
            }
        }
    }
}
