//! The meeting platforms behind one trait.
//!
//! Owns the `MeetingProvider` contract, the platform names, the error classes the worker branches
//! on, the choice of platform for a booking (including the fallback), and the registry of what
//! the configuration enables ([`Providers::real`]; account connections in `auth`). Each
//! platform's wire format and OAuth facts stay inside its own module; nothing here touches the
//! database.

mod account;
pub mod auth;
pub mod google;
pub mod jitsi;
pub mod offer;
pub mod teams;
pub mod zoom;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{Config, Fallback};
use crate::crypto::Keyring;
use crate::db::Pool;
use crate::quota::QuotaStore;
pub use crate::settings::{MeetingOption, MeetingOptions, Recording};
use crate::tokens::TokenStore;

/// Platform names as stored in `services.meeting_platform` and `bookings.meeting_platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    GoogleMeet,
    Zoom,
    Teams,
    Jitsi,
}

impl Platform {
    pub const ALL: [Platform; 4] = [Platform::GoogleMeet, Platform::Zoom, Platform::Teams, Platform::Jitsi];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::GoogleMeet => "google_meet",
            Platform::Zoom => "zoom",
            Platform::Teams => "teams",
            Platform::Jitsi => "jitsi",
        }
    }

    /// How providers and customers call it.
    pub fn display_name(self) -> &'static str {
        match self {
            Platform::GoogleMeet => "Google Meet",
            Platform::Zoom => "Zoom",
            Platform::Teams => "Microsoft Teams",
            Platform::Jitsi => "Jitsi Meet",
        }
    }

    /// Whether the provider must connect an account (an integration row) to use it.
    pub fn needs_account(self) -> bool {
        !matches!(self, Platform::Jitsi)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown meeting platform {s:?}"))
    }
}

/// What a provider needs to create or update a booking's meeting.
#[derive(Debug, Clone)]
pub struct MeetingRequest {
    pub booking_id: Uuid,
    /// Counts the meetings created for this booking; part of any platform-side idempotency key, so
    /// a re-confirmation after a cancel gets a new identity while a retry reuses the same one.
    pub generation: i32,
    /// The service's provider (whose account the meeting is created in).
    pub provider_user_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    /// Invited as an attendee where the platform and configuration do that.
    pub customer_email: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `services.meeting_settings` as read (recorded on the booking with its meeting).
    pub settings: serde_json::Value,
    /// The meeting options parsed from `settings`; a platform applies those it honours
    /// ([`MeetingProvider::supported_options`]).
    pub options: MeetingOptions,
    /// The account the worker decided a new meeting is made in, and on which platform: the
    /// claim's snapshot of the provider's integration for the booking's platform (the account
    /// its create intent records). A create that finds the provider connected to another account
    /// by the time it reads a token makes nothing (a transient error: the next run decides again
    /// with the new account), so a meeting is never made in an account the intent does not name.
    pub expected_account: Option<(Platform, Account)>,
}

/// A meeting as it exists at the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// The platform's id for it (`bookings.meeting_id`).
    pub external_id: String,
    /// The link participants open (`bookings.meeting_link`).
    pub join_url: String,
    /// The account it lives in; `None` on a platform without accounts (Jitsi), and for meetings
    /// recorded before meetingd recorded accounts (they are acted on in the provider's current one).
    pub account: Option<Account>,
}

/// A provider's connected account on a platform, as a meeting made in it remembers it: updates
/// and deletes of that meeting go through this account, not whatever the provider connects later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The provider who connected it.
    pub user_id: Uuid,
    /// Their `user_meeting_integrations` row (its ciphertexts are bound to this id).
    pub integration_id: Uuid,
    /// The platform's identity of the account (`platform_user_id`, else its e-mail), when known.
    pub identity: Option<String>,
}

/// Why a platform call failed, in the classes the worker acts on.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying soon: a 5xx, a timeout, a connection reset.
    #[error("temporary platform error: {0}")]
    Transient(String),
    /// The platform asked us to slow down; `retry_after` when it said how long.
    #[error("rate limited by the platform")]
    RateLimited { retry_after: Option<Duration> },
    /// The platform is still preparing the meeting; ask again later.
    #[error("the platform is still preparing the meeting")]
    Pending,
    /// The access token was refused even after a refresh.
    #[error("the platform refused the access token")]
    Unauthorized,
    /// The provider revoked meetingd's access (or never connected); they must reconnect. Never
    /// retried on this platform: the booking falls back.
    #[error("access to the provider's account was revoked")]
    Revoked,
    /// The stored account cannot be used (its tokens do not decrypt: an operator's key or a
    /// tampered row, not the provider's doing). A new booking falls back; an existing meeting is
    /// retried, never given up as deleted.
    #[error("{0}")]
    AccountUnusable(String),
    /// The account an existing meeting lives in is gone (revoked, disconnected, replaced by
    /// another account, its provider deleted) and no credentials for it are left: the meeting is
    /// out of meetingd's reach and is reported as orphaned.
    #[error("{0}")]
    AccountGone(String),
    /// The meeting no longer exists at the platform (deleted there by someone else).
    #[error("the meeting no longer exists at the platform")]
    NotFound,
    /// Retrying cannot help; the message says what to fix.
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient(_)
                | ProviderError::RateLimited { .. }
                | ProviderError::Pending
                | ProviderError::Unauthorized
        )
    }

    /// How an error on an existing meeting is retried: an account whose tokens do not decrypt is
    /// an operator's problem to fix (a key, a tampered row), not a reason to give the meeting up.
    pub fn retried_on_existing(self) -> ProviderError {
        match self {
            ProviderError::AccountUnusable(m) => ProviderError::Transient(m),
            other => other,
        }
    }

    /// The provider's account on this platform cannot be used: use the fallback platform instead.
    pub fn needs_fallback(&self) -> bool {
        matches!(self, ProviderError::Revoked | ProviderError::AccountUnusable(_))
    }

    /// Bounded label for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            ProviderError::Transient(_) => "transient",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Pending => "pending",
            ProviderError::Unauthorized => "unauthorized",
            ProviderError::Revoked => "revoked",
            ProviderError::AccountUnusable(_) => "account_unusable",
            ProviderError::AccountGone(_) => "account_gone",
            ProviderError::NotFound => "not_found",
            ProviderError::Permanent(_) => "permanent",
        }
    }
}

/// One meeting platform. Implementations must make `create` safe to repeat for the same
/// `(booking_id, generation)`: after a crash the worker calls it again without knowing whether the
/// first call reached the platform.
#[async_trait::async_trait]
pub trait MeetingProvider: Send + Sync {
    fn platform(&self) -> Platform;
    /// The meeting options this platform applies to the meetings it makes (on create and on every
    /// move); the worker reports the others a service sets as ignored. Default: none.
    fn supported_options(&self) -> &'static [MeetingOption] {
        &[]
    }
    /// Of the options set in `options`, those this platform does not apply: the unsupported
    /// ones, and a supported one set to a value it cannot honour. Default: the unsupported ones.
    fn ignored_options(&self, options: &MeetingOptions) -> Vec<MeetingOption> {
        options.unsupported(self.supported_options())
    }
    async fn create(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError>;
    /// `create`, when an earlier attempt at the same `(booking_id, generation)` may already have
    /// made the meeting: the worker recorded its create intent ([`MeetingProvider::intent_id`])
    /// before this run, and no answer settled it. A platform that chooses its meeting ids (Zoom)
    /// looks for that meeting before making another; by default, `create` (whose client-chosen
    /// id makes it safe to repeat).
    async fn create_again(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        self.create(req).await
    }
    /// Moves an existing meeting to the request's times; the link should stay the same.
    async fn update(&self, existing: &Meeting, req: &MeetingRequest) -> Result<Meeting, ProviderError>;
    /// Removes the meeting; a meeting that is already gone counts as deleted.
    async fn delete(&self, existing: &Meeting, provider_user_id: Uuid) -> Result<(), ProviderError>;
    /// The platform-side id that `create` gives the meeting of `(booking_id, generation)`, for a
    /// platform that keeps state and lets the client choose the id. The worker records the intent
    /// before creating such a meeting, so that one whose create answer was lost (or whose daemon
    /// died mid-call) is adopted by the retry or deleted when the booking no longer wants it.
    /// `None` (the default): nothing exists at the platform until `create` answers.
    fn intent_id(&self, _booking_id: Uuid, _generation: i32) -> Option<String> {
        None
    }
    /// Whether the platform keeps the meetings it is asked to create (all but Jitsi, whose rooms
    /// exist nowhere until someone joins): the worker then confirms its claim before calling it.
    fn keeps_meetings(&self) -> bool {
        true
    }
    /// The meetings in `account` that have not ended yet, with the booking meetingd's mark on each
    /// names (see `reconcile.rs`). A platform that lists unmarked meetings too (Zoom, where the
    /// mark is in free text a provider can edit) lists them without a booking: present, never a
    /// stray. `None`: the platform cannot list them.
    async fn list_marked(&self, _account: &Account) -> Option<Result<Vec<Marked>, ProviderError>> {
        None
    }
}

/// A meeting found at its platform, and the booking meetingd's mark on it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub external_id: String,
    /// The booking the mark names; `None` for a meeting without a mark meetingd can read.
    pub booking_id: Option<Uuid>,
}

/// A `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default())
}

/// What providers that act on a provider's account need from the daemon.
pub struct ProviderDeps {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    /// Audit actor for token operations (`daemon:<instance>`).
    pub actor: String,
}

/// The platforms this daemon can use, by name.
#[derive(Clone, Default)]
pub struct Providers {
    map: HashMap<Platform, Arc<dyn MeetingProvider>>,
    /// The token store the real providers share (none for scripted ones).
    tokens: Option<Arc<TokenStore>>,
}

impl Providers {
    /// The platforms that need no account (Jitsi).
    pub fn from_config(config: &Config) -> Providers {
        Providers::default().with(Arc::new(jitsi::Jitsi::new(config.jitsi.base_url.clone())))
    }

    /// Every platform the configuration enables: Jitsi, and Google Meet, Zoom and Teams when their
    /// OAuth clients are set.
    pub fn real(config: &Config, deps: &ProviderDeps) -> Result<Providers, String> {
        let mut providers = Providers::from_config(config);
        let tokens = Arc::new(TokenStore::new(deps.pool.clone(), deps.keyring.clone(), deps.actor.clone()));
        if let Some(oauth) = zoom::oauth_client(&config.zoom)? {
            let marks = zoom::Marks::new(deps.keyring.clone());
            let quota = QuotaStore::new(deps.pool.clone(), Platform::Zoom, config.limits.zoom.daily_meeting_writes);
            providers =
                providers.with(Arc::new(zoom::Zoom::new(config.zoom.clone(), oauth, tokens.clone(), marks, quota)));
        } else {
            tracing::info!(
                "Zoom is not configured (zoom.client_id / client secret); services asking for it get the fallback"
            );
        }
        if let Some(oauth) = teams::oauth_client(&config.teams)? {
            let concurrency = config.limits.teams.integration_concurrency;
            providers =
                providers.with(Arc::new(teams::Teams::new(config.teams.clone(), oauth, tokens.clone(), concurrency)));
        } else {
            tracing::info!(
                "Microsoft Teams is not configured (teams.client_id / client secret); services asking for it get the fallback"
            );
        }
        if let Some(oauth) = google::oauth_client(&config.google)? {
            providers = providers.with(Arc::new(google::GoogleMeet::new(config.google.clone(), oauth, tokens.clone())));
        } else {
            tracing::info!(
                "Google Meet is not configured (google.client_id / client secret); services asking for it get the fallback"
            );
        }
        providers.tokens = Some(tokens);
        Ok(providers)
    }

    /// Hands the token store an integration row just read along with something else, so the
    /// next token read of that account needs no query of its own (see `TokenStore::prime`).
    pub fn prime(&self, row: crate::db::integrations::IntegrationRow) {
        if let Some(tokens) = &self.tokens {
            tokens.prime(row);
        }
    }

    /// Adds or replaces the provider for its platform (tests swap in scripted providers).
    pub fn with(mut self, provider: Arc<dyn MeetingProvider>) -> Providers {
        self.map.insert(provider.platform(), provider);
        self
    }

    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn MeetingProvider>> {
        self.map.get(&platform)
    }
}

/// The platform a booking's meeting goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub platform: Platform,
    /// The service asked for another platform (or none) and got the fallback.
    pub fallback: bool,
}

/// Picks the platform for a booking of an online service.
///
/// `requested` is `services.meeting_platform`; `connected` says whether the provider has an active
/// integration for it; `available` says whether this daemon has a provider for a platform. Errors are
/// sentences a provider can act on.
pub fn choose_platform(
    requested: Option<&str>,
    connected: bool,
    available: impl Fn(Platform) -> bool,
    fallback: Fallback,
) -> Result<Choice, String> {
    let requested = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(name.parse::<Platform>().map_err(|e| {
            format!("The service's meeting platform is not one meetingd knows ({e}); choose google_meet, zoom, teams or jitsi.")
        })?),
    };
    if let Some(p) = requested
        && (!p.needs_account() || connected)
        && available(p)
    {
        return Ok(Choice { platform: p, fallback: false });
    }
    match fallback {
        Fallback::Platform(p) if available(p) => Ok(Choice { platform: p, fallback: true }),
        _ => Err(match requested {
            Some(p) if p.needs_account() && !connected => format!(
                "The provider has not connected {}; connect it under Integrations or choose another meeting platform for the service.",
                p.display_name()
            ),
            Some(p) => format!(
                "{} meetings are not available on this server; choose another meeting platform for the service.",
                p.display_name()
            ),
            None => "The online service has no meeting platform; choose one for the service.".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JITSI: Fallback = Fallback::Platform(Platform::Jitsi);

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let soon = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(d > Duration::from_secs(80) && d <= Duration::from_secs(90), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn platform_names_round_trip() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        }
        assert!("skype".parse::<Platform>().is_err());
    }

    #[test]
    fn connected_platform_is_used() {
        let c = choose_platform(Some("google_meet"), true, |_| true, JITSI).unwrap();
        assert_eq!(c, Choice { platform: Platform::GoogleMeet, fallback: false });
        let c = choose_platform(Some("jitsi"), false, |_| true, Fallback::None).unwrap();
        assert_eq!(c, Choice { platform: Platform::Jitsi, fallback: false });
    }

    #[test]
    fn unconnected_or_unavailable_platform_falls_back() {
        let c = choose_platform(Some("zoom"), false, |_| true, JITSI).unwrap();
        assert_eq!(c, Choice { platform: Platform::Jitsi, fallback: true });
        let c = choose_platform(Some("teams"), true, |p| p == Platform::Jitsi, JITSI).unwrap();
        assert_eq!(c, Choice { platform: Platform::Jitsi, fallback: true });
        let c = choose_platform(None, false, |_| true, JITSI).unwrap();
        assert_eq!(c, Choice { platform: Platform::Jitsi, fallback: true });
    }

    #[test]
    fn no_fallback_gives_actionable_errors() {
        let e = choose_platform(Some("google_meet"), false, |_| true, Fallback::None).unwrap_err();
        assert!(e.contains("has not connected Google Meet"), "{e}");
        let e = choose_platform(Some("zoom"), true, |p| p == Platform::Jitsi, Fallback::None).unwrap_err();
        assert!(e.contains("not available on this server"), "{e}");
        let e = choose_platform(Some("skype"), true, |_| true, JITSI).unwrap_err();
        assert!(e.contains("\"skype\""), "{e}");
    }
}
