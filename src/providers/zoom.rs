//! Zoom meetings, through Zoom's Meetings API v2 (user-level OAuth).
//!
//! Owns Zoom's wire format and error JSON (`{"code","message"}`) and how they map to
//! [`ProviderError`]. A meeting is a scheduled meeting (type 2) in the provider's Zoom account;
//! its link is `join_url`, its id Zoom's numeric id as text. Zoom also answers a `start_url` (the
//! host's key): it is never parsed out of an answer, so it cannot be stored, logged or returned.
//!
//! Exactly once without an idempotency key: Zoom chooses the meeting id, so a create whose answer
//! is lost leaves a meeting meetingd cannot name. Every meeting carries [`marker`] of its booking
//! and generation in its `agenda`; the worker records the create intent before the call
//! ([`MeetingProvider::intent_id`] answers the marker), and a create repeated for the same intent
//! ([`MeetingProvider::create_again`]) first lists the account's upcoming meetings for the
//! marker and adopts what it finds (deleting all but one). Deleting an intent's meeting by its
//! marker works the same way. Its OAuth facts are `zoom/auth.rs` ([`OAUTH`], [`ZoomAuth`]).
//!
//! Zoom allows each user 100 meeting creations and updates a day: every POST or PATCH of a
//! meeting first takes one from the account's daily count in the database (`QuotaStore`), shared
//! by all daemons, and is not sent when none is left. It never touches the database except
//! through the `TokenStore` and the `QuotaStore`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::account::{Access, CallFailure, Who};
use super::{
    Meeting, MeetingOption, MeetingOptions, MeetingProvider, MeetingRequest, Platform, ProviderError, parse_retry_after,
};
use crate::config::ZoomConfig;
use crate::oauth::OAuthClient;
use crate::quota::QuotaStore;
use crate::tokens::TokenStore;

mod auth;

pub use auth::{OAUTH, ZoomAuth};

/// Zoom's limits on a meeting's `topic` and `agenda`, in characters.
pub const TOPIC_MAX: usize = 200;
pub const AGENDA_MAX: usize = 2000;

/// What every marker starts with (see [`marker`]).
const MARKER_PREFIX: &str = "[meetingd ";

/// The most meetings one page of the list asks for (Zoom's maximum).
const PAGE_SIZE: &str = "300";

/// The marker a booking's `generation`th meeting carries in its `agenda`.
///
/// A hash of the booking id, the generation and a constant: unique per `(booking, generation)`,
/// fixed-length, and not something free text reproduces by accident. It needs no secret: a
/// marker only ever lets meetingd adopt or delete meetings in the provider's own Zoom account,
/// which only that provider (who can already edit or delete those meetings in Zoom) can write
/// to, and the booking id it is derived from never appears in it.
pub fn marker(booking: Uuid, generation: i32) -> String {
    let digest = Sha256::new()
        .chain_update(b"meetingd zoom meeting marker v1\0")
        .chain_update(booking.as_bytes())
        .chain_update(generation.to_be_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{MARKER_PREFIX}{hex}]")
}

/// The topic: the title template's text, cut to Zoom's limit.
fn topic(req: &MeetingRequest) -> String {
    req.title.chars().take(TOPIC_MAX).collect()
}

/// The agenda: the marker first (so a list that shortens agendas still shows it), then the
/// description template's text, cut so the whole fits Zoom's limit.
fn agenda(req: &MeetingRequest) -> String {
    let mark = marker(req.booking_id, req.generation);
    match req.description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => mark,
        Some(text) => {
            let room = AGENDA_MAX - mark.chars().count() - 2;
            format!("{mark}\n\n{}", text.chars().take(room).collect::<String>())
        }
    }
}

/// `start_time` as Zoom expects it: UTC, `yyyy-MM-ddTHH:mm:ssZ`.
fn start_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whole minutes, rounded up, at least one.
fn duration_minutes(req: &MeetingRequest) -> i64 {
    ((req.end - req.start).num_seconds().max(1) + 59) / 60
}

/// The body of a create or a move: the booking's title, description and times, and the meeting
/// options the service set (a move re-applies them, so a change of the service's options reaches
/// the meeting with its next move). A create with `passcode: true` carries a passcode meetingd
/// generates ([`passcode`]); a move leaves it as it is (the link carries it).
fn meeting_body(req: &MeetingRequest, create: bool) -> serde_json::Value {
    let mut body = serde_json::json!({
        "topic": topic(req),
        "agenda": agenda(req),
        "start_time": start_time(req.start),
        "duration": duration_minutes(req),
        "timezone": "UTC",
    });
    if create {
        body["type"] = 2.into();
        if req.options.passcode == Some(true) {
            body["password"] = passcode().into();
        }
    }
    if let Some(settings) = settings(&req.options) {
        body["settings"] = settings;
    }
    body
}

/// The options Zoom honours: every one.
const SUPPORTED: [MeetingOption; 4] =
    [MeetingOption::WaitingRoom, MeetingOption::Recording, MeetingOption::Passcode, MeetingOption::MuteOnEntry];

/// The options set, as Zoom's meeting `settings`; `None` when none is (each setting then stays
/// the account's default). `passcode` is not a setting: it is the create body's `password`.
fn settings(options: &MeetingOptions) -> Option<serde_json::Value> {
    let mut settings = serde_json::Map::new();
    if let Some(on) = options.waiting_room {
        settings.insert("waiting_room".into(), on.into());
        if on {
            // Otherwise participants who join before the host skip the waiting room.
            settings.insert("join_before_host".into(), false.into());
        }
    }
    if let Some(recording) = options.recording {
        settings.insert("auto_recording".into(), recording.as_str().into());
    }
    if let Some(muted) = options.mute_on_entry {
        settings.insert("mute_upon_entry".into(), muted.into());
    }
    (!settings.is_empty()).then_some(serde_json::Value::Object(settings))
}

/// Zoom's longest passcode.
pub const PASSCODE_LEN: usize = 10;

/// A meeting passcode: [`PASSCODE_LEN`] letters and digits (Zoom allows at most 10 of
/// `[A-Za-z0-9@-_*]`) from rand's OS-seeded, cryptographically secure generator. Never logged:
/// only the create body carries it, and that body is never logged or quoted.
fn passcode() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(Alphanumeric).take(PASSCODE_LEN).map(char::from).collect()
}

/// A meeting as Zoom answers it. Fields not named here (`start_url` among them) are dropped while
/// parsing.
#[derive(Debug, Deserialize)]
struct ZoomMeeting {
    id: u64,
    #[serde(default)]
    join_url: Option<String>,
    #[serde(default)]
    agenda: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    duration: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct MeetingList {
    #[serde(default)]
    meetings: Vec<ZoomMeeting>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// Zoom's error JSON.
#[derive(Debug, Default, Deserialize)]
struct ZoomError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// A failed Zoom call, classified.
#[derive(Debug)]
enum CallError {
    Unauthorized,
    NotFound,
    /// The daily limit of meeting creations and updates (a 429 that says so): no more until the
    /// given wait is over (00:00 UTC, unless Zoom said otherwise).
    DailyLimit(Duration),
    Other(ProviderError),
}

impl CallFailure for CallError {
    fn is_unauthorized(&self) -> bool {
        matches!(self, CallError::Unauthorized)
    }

    fn from_provider(error: ProviderError) -> Self {
        CallError::Other(error)
    }
}

/// Maps Zoom's answer to what the worker does, by HTTP status and Zoom's `code`.
fn classify(status: u16, body: &[u8], retry_after: Option<Duration>, now: DateTime<Utc>) -> CallError {
    let error: ZoomError = serde_json::from_slice(body).unwrap_or_default();
    let code = error.code.unwrap_or(0);
    // Zoom's messages are short sentences; a long one is cut rather than quoted whole.
    let message: String = error.message.unwrap_or_default().chars().take(300).collect();
    match (status, code) {
        // 124: invalid or expired access token.
        (_, 124) | (401, _) => CallError::Unauthorized,
        // 3001: the meeting does not exist (or is already deleted).
        (_, 3001) | (404, _) => CallError::NotFound,
        (_, 3002) => {
            CallError::Other(ProviderError::Transient("Zoom cannot change the meeting while it is in progress".into()))
        }
        (429, _) => {
            // The daily limit of create/update requests often comes without `Retry-After`: it
            // resets at 00:00 GMT.
            if message.to_ascii_lowercase().contains("daily") {
                CallError::DailyLimit(retry_after.unwrap_or_else(|| until_midnight(now)))
            } else {
                CallError::Other(ProviderError::RateLimited { retry_after })
            }
        }
        (s, _) if s >= 500 => CallError::Other(ProviderError::Transient(format!("Zoom answered HTTP {s}"))),
        (s, c) => CallError::Other(ProviderError::Permanent(format!(
            "Zoom rejected the request (HTTP {s}, code {c}): {}",
            if message.is_empty() { "no message" } else { &message }
        ))),
    }
}

/// From `now` to the next 00:00 UTC (GMT), when Zoom's daily limits reset.
fn until_midnight(now: DateTime<Utc>) -> Duration {
    let tomorrow = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    (tomorrow - now).to_std().unwrap_or_default()
}

fn into_provider(e: CallError) -> ProviderError {
    match e {
        CallError::Unauthorized => ProviderError::Unauthorized,
        CallError::NotFound => ProviderError::NotFound,
        CallError::DailyLimit(wait) => ProviderError::RateLimited { retry_after: Some(wait) },
        CallError::Other(p) => p,
    }
}

/// A Zoom meeting id in a URL path: digits only (a marker or anything else is not an id).
fn numeric(id: &str) -> Option<&str> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

pub struct Zoom {
    http: reqwest::Client,
    config: ZoomConfig,
    oauth: OAuthClient,
    tokens: Arc<TokenStore>,
    /// Each account's daily allowance of meeting creations and updates.
    quota: QuotaStore,
}

/// meetingd's OAuth client at Zoom's token endpoint (HTTP Basic client authentication, which
/// Zoom requires); `None` when `zoom.client_id` or the client secret is not set.
pub fn oauth_client(config: &ZoomConfig) -> Result<Option<OAuthClient>, String> {
    Ok(match config.client_secret()? {
        Some(secret) if !config.client_id.trim().is_empty() => Some(
            OAuthClient::new(
                &config.client_id,
                secret,
                config.token_url.clone(),
                Duration::from_millis(config.request_timeout_ms),
            )
            .with_basic_auth(),
        ),
        _ => None,
    })
}

impl Zoom {
    pub fn new(config: ZoomConfig, oauth: OAuthClient, tokens: Arc<TokenStore>, quota: QuotaStore) -> Zoom {
        let http = reqwest::Client::builder()
            // Zoom's API does not redirect; following one could send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .expect("a reqwest client with rustls builds");
        Zoom { http, config, oauth, tokens, quota }
    }

    /// The way into connected Zoom accounts.
    fn access(&self) -> Access<'_> {
        Access { tokens: &self.tokens, oauth: &self.oauth, platform: Platform::Zoom, vendor: "Zoom", section: "zoom" }
    }

    /// One request to Zoom's API; the answer's body on a 2xx.
    async fn send(
        &self,
        token: &SecretString,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, CallError> {
        let url = self
            .config
            .api_base_url
            .join(path)
            .map_err(|e| CallError::Other(ProviderError::Permanent(format!("bad Zoom API path {path:?}: {e}"))))?;
        let mut request = self.http.request(method, url).bearer_auth(token.expose_secret());
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transient = |what: &str, e: reqwest::Error| {
            let why =
                if e.is_timeout() { "Zoom did not answer in time".to_string() } else { e.without_url().to_string() };
            CallError::Other(ProviderError::Transient(format!("{what}: {why}")))
        };
        let response = request.send().await.map_err(|e| transient("connection to Zoom failed", e))?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = response.bytes().await.map_err(|e| transient("reading Zoom's answer failed", e))?;
        if (200..300).contains(&status) {
            Ok(body.to_vec())
        } else {
            Err(classify(status, &body, retry_after, Utc::now()))
        }
    }

    /// A meeting creation or update (`call`: a POST or a PATCH), which Zoom's daily limit counts:
    /// one is taken from the account's daily allowance first, and with none left Zoom is not
    /// called (`RateLimited` until 00:00 UTC). Zoom's own daily-limit answer marks the account's
    /// day used up. The account is the one `who` acts in (learnt from its token when not pinned
    /// yet); reads and deletes are not counted.
    async fn counted<T, F, Fut>(&self, who: &Who, call: F) -> Result<T, ProviderError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        if self.quota.counts() {
            if who.account().is_none() {
                self.access().token(who, None).await?;
            }
            let Some(account) = who.account() else {
                return Err(ProviderError::Transient(
                    "the Zoom account to count the request against is unknown".into(),
                ));
            };
            match self.quota.take(account.integration_id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        integration_id = %account.integration_id,
                        "Zoom's daily limit of meeting creations and updates is used up for this account; not calling Zoom until 00:00 UTC"
                    );
                    return Err(ProviderError::RateLimited { retry_after: Some(until_midnight(Utc::now())) });
                }
                Err(e) => {
                    return Err(ProviderError::Transient(format!(
                        "could not count the request against Zoom's daily limit: {e}"
                    )));
                }
            }
        }
        match self.access().authorized(who, call).await {
            Err(CallError::DailyLimit(wait)) => {
                if let Some(account) = who.account()
                    && let Err(e) = self.quota.exhaust(account.integration_id).await
                {
                    tracing::warn!(error = %e, "could not record that Zoom's daily limit is used up");
                }
                Err(ProviderError::RateLimited { retry_after: Some(wait) })
            }
            other => other.map_err(into_provider),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
        // The body is not quoted: a meeting's answer holds its start_url.
        serde_json::from_slice(body).map_err(|e| {
            CallError::Other(ProviderError::Transient(format!(
                "Zoom's answer could not be read (at line {}, column {})",
                e.line(),
                e.column()
            )))
        })
    }

    async fn post(&self, token: SecretString, body: serde_json::Value) -> Result<ZoomMeeting, CallError> {
        let answer = self.send(&token, reqwest::Method::POST, "users/me/meetings", &[], Some(&body)).await?;
        Self::parse(&answer)
    }

    async fn get(&self, token: SecretString, id: &str) -> Result<ZoomMeeting, CallError> {
        let answer = self.send(&token, reqwest::Method::GET, &format!("meetings/{id}"), &[], None).await?;
        Self::parse(&answer)
    }

    async fn patch(&self, token: SecretString, id: &str, body: serde_json::Value) -> Result<(), CallError> {
        self.send(&token, reqwest::Method::PATCH, &format!("meetings/{id}"), &[], Some(&body)).await.map(|_| ())
    }

    async fn remove(&self, token: SecretString, id: &str) -> Result<(), CallError> {
        self.send(&token, reqwest::Method::DELETE, &format!("meetings/{id}"), &[], None).await.map(|_| ())
    }

    async fn list_page(&self, token: SecretString, page: Option<String>) -> Result<MeetingList, CallError> {
        let mut query = vec![("type", "upcoming"), ("page_size", PAGE_SIZE)];
        if let Some(page) = page.as_deref() {
            query.push(("next_page_token", page));
        }
        let answer = self.send(&token, reqwest::Method::GET, "users/me/meetings", &query, None).await?;
        Self::parse(&answer)
    }

    /// Every upcoming meeting in `who`'s account whose agenda carries `mark` (all pages).
    async fn find_marked(&self, who: &Who, mark: &str) -> Result<Vec<ZoomMeeting>, ProviderError> {
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let list =
                self.access().authorized(who, |t| self.list_page(t, page.clone())).await.map_err(into_provider)?;
            found.extend(list.meetings.into_iter().filter(|m| m.agenda.as_deref().is_some_and(|a| a.contains(mark))));
            match list.next_page_token {
                Some(next) if !next.is_empty() => page = Some(next),
                _ => return Ok(found),
            }
        }
    }

    /// The meeting an earlier attempt at `req` made, if any: adopted (moved, if the booking moved
    /// since), and any second one carrying the same marker deleted.
    async fn adopt(&self, who: &Who, req: &MeetingRequest) -> Result<Option<Meeting>, ProviderError> {
        let mark = marker(req.booking_id, req.generation);
        let mut found = self.find_marked(who, &mark).await?;
        if found.is_empty() {
            return Ok(None);
        }
        found.sort_by_key(|m| m.id);
        let keep = found.remove(0);
        for extra in found {
            let id = extra.id.to_string();
            match self.access().authorized(who, |t| self.remove(t, &id)).await {
                Ok(()) | Err(CallError::NotFound) => {
                    tracing::info!(booking_id = %req.booking_id, meeting_id = %id, "deleted a second Zoom meeting an earlier attempt created");
                }
                Err(e) => return Err(into_provider(e)),
            }
        }
        let id = keep.id.to_string();
        tracing::info!(booking_id = %req.booking_id, meeting_id = %id, "adopted the Zoom meeting an earlier attempt created");
        // Zoom keeps whole seconds.
        let start = chrono::SubsecRound::trunc_subsecs(req.start, 0);
        let same_time = keep.start_time.as_deref().and_then(|t| t.parse::<DateTime<Utc>>().ok()) == Some(start)
            && keep.duration == Some(duration_minutes(req));
        match keep.join_url {
            Some(link) if same_time => Ok(Some(Meeting { external_id: id, join_url: link, account: who.account() })),
            _ => self.moved(who, &id, req).await.map(Some),
        }
    }

    /// Moves meeting `id` to `req`'s title and times, then reads its (fresh) link: a PATCH
    /// answers 204 without a body.
    async fn moved(&self, who: &Who, id: &str, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let body = meeting_body(req, false);
        self.counted(who, |t| self.patch(t, id, body.clone())).await?;
        let fresh = self.access().authorized(who, |t| self.get(t, id)).await.map_err(into_provider)?;
        meeting_of(fresh, who)
    }
}

fn meeting_of(m: ZoomMeeting, who: &Who) -> Result<Meeting, ProviderError> {
    let join_url = m
        .join_url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ProviderError::Transient(format!("Zoom answered meeting {} without a join_url", m.id)))?;
    Ok(Meeting { external_id: m.id.to_string(), join_url, account: who.account() })
}

#[async_trait::async_trait]
impl MeetingProvider for Zoom {
    fn platform(&self) -> Platform {
        Platform::Zoom
    }

    fn supported_options(&self) -> &'static [MeetingOption] {
        &SUPPORTED
    }

    async fn create(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::provider(req.provider_user_id);
        let body = meeting_body(req, true);
        let created = self.counted(&who, |t| self.post(t, body.clone())).await?;
        meeting_of(created, &who)
    }

    /// An earlier attempt may have made the meeting (its answer lost): look for its marker first.
    async fn create_again(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::provider(req.provider_user_id);
        if let Some(adopted) = self.adopt(&who, req).await? {
            return Ok(adopted);
        }
        let body = meeting_body(req, true);
        let created = self.counted(&who, |t| self.post(t, body.clone())).await?;
        meeting_of(created, &who)
    }

    async fn update(&self, existing: &Meeting, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::of(existing, req.provider_user_id);
        let Some(id) = numeric(&existing.external_id) else {
            return Err(ProviderError::NotFound);
        };
        self.moved(&who, id, req).await
    }

    /// Deletes by id; given a marker (a create intent's meeting, see [`MeetingProvider::intent_id`]),
    /// deletes every meeting that carries it. A meeting already gone counts as deleted.
    async fn delete(&self, existing: &Meeting, provider: Uuid) -> Result<(), ProviderError> {
        let who = Who::of(existing, provider);
        let ids: Vec<String> = match numeric(&existing.external_id) {
            Some(id) => vec![id.to_string()],
            None if existing.external_id.starts_with(MARKER_PREFIX) => {
                self.find_marked(&who, &existing.external_id).await?.iter().map(|m| m.id.to_string()).collect()
            }
            None => return Ok(()),
        };
        for id in ids {
            match self.access().authorized(&who, |t| self.remove(t, &id)).await {
                Ok(()) | Err(CallError::NotFound) => {}
                Err(e) => return Err(into_provider(e)),
            }
        }
        Ok(())
    }

    /// Zoom chooses meeting ids, so what stands for the meeting before Zoom answers is its marker.
    fn intent_id(&self, booking_id: Uuid, generation: i32) -> Option<String> {
        Some(marker(booking_id, generation))
    }
}

#[cfg(test)]
mod tests;
