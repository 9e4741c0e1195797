//! Microsoft Teams meetings, through Microsoft Graph's online meetings (delegated permissions).
//!
//! Owns Graph's wire format and error JSON (`{"error":{"code","message"}}`) and how they map to
//! [`ProviderError`]. A meeting is an online meeting of the provider's (`/me/onlineMeetings`); its
//! link is `joinWebUrl`, its id Graph's meeting id.
//!
//! Exactly once: a create is `POST /me/onlineMeetings/createOrGet` with an `externalId` made of
//! the booking and its generation ([`external_id`]); Graph keeps one meeting per user and
//! `externalId`, so a create whose answer was lost, repeated, answers the same meeting. The
//! worker records the create intent before the call ([`MeetingProvider::intent_id`] is that
//! `externalId`), so a meeting whose answer never arrived is found again, by the same call, to be
//! deleted when the booking no longer wants it. `createOrGet` never moves an existing meeting:
//! when the meeting it answers is not at the booking's times (the booking moved meanwhile), it is
//! moved with a PATCH. An `externalId` is never used again after its meeting is deleted: a new
//! meeting of the same booking has a new generation.
//!
//! Graph serves at most 4 concurrent requests per mailbox: each account's requests wait for one
//! of `limits.teams.integration_concurrency` slots. 429 and 503 are retried after their
//! `Retry-After`. Its OAuth facts are `teams/auth.rs` ([`OAUTH`], [`TeamsAuth`]). It never touches
//! the database except through the `TokenStore`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::account::{Access, CallFailure, Who};
use super::{
    Meeting, MeetingOption, MeetingOptions, MeetingProvider, MeetingRequest, Platform, ProviderError, Recording,
    parse_retry_after,
};
use crate::config::TeamsConfig;
use crate::oauth::OAuthClient;
use crate::tokens::TokenStore;

mod auth;

pub use auth::{OAUTH, PERSONAL_ACCOUNT, TeamsAuth};

/// The most Graph calls one job can make on Teams, counted from `worker/execute.rs` and this
/// module: delete a stray create intent's meeting: createOrGet, DELETE (2); move the recorded
/// meeting: PATCH (1); create: createOrGet, and a PATCH to move it or apply the options (2).
/// `meetingd check` compares `worker.lease_secs` with it.
pub const MOST_CALLS_PER_JOB: u64 = 5;

/// Requests one call can take: the call, and after a 401 a token refresh and the call again.
/// A job also refreshes once before its first call when the stored token is due.
pub const MOST_REQUESTS_PER_CALL: u64 = 3;

/// What every `externalId` of meetingd's starts with.
const EXTERNAL_ID_PREFIX: &str = "meetingd-";

/// The longest subject meetingd sends (Graph documents none; Teams shows about this much).
pub const SUBJECT_MAX: usize = 255;

/// The `externalId` of the `generation`th meeting of `booking`: `meetingd-<booking>-g<n>`.
pub fn external_id(booking: Uuid, generation: i32) -> String {
    format!("{EXTERNAL_ID_PREFIX}{}-g{generation}", booking.simple())
}

/// `startDateTime` / `endDateTime` as Graph takes them: ISO 8601 in UTC.
fn graph_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn subject(req: &MeetingRequest) -> String {
    req.title.chars().take(SUBJECT_MAX).collect()
}

/// The body of a `createOrGet`: the identity of the meeting, its times and subject.
fn create_body(req: &MeetingRequest) -> serde_json::Value {
    serde_json::json!({
        "externalId": external_id(req.booking_id, req.generation),
        "startDateTime": graph_time(req.start),
        "endDateTime": graph_time(req.end),
        "subject": subject(req),
    })
}

/// The body of a move: both times together (Graph wants them as a pair), the subject, and the
/// meeting options the service set (`createOrGet` takes none, so they are applied this way, on
/// create and on every move).
fn move_body(req: &MeetingRequest) -> serde_json::Value {
    let mut body = serde_json::json!({
        "startDateTime": graph_time(req.start),
        "endDateTime": graph_time(req.end),
        "subject": subject(req),
    });
    apply_options(&req.options, &mut body);
    body
}

/// The options Teams honours. `mute_on_entry` has no online-meeting property.
const SUPPORTED: [MeetingOption; 3] = [MeetingOption::WaitingRoom, MeetingOption::Recording, MeetingOption::Passcode];

/// The options set, as online-meeting properties; an unset one stays the organiser's default.
/// Teams records to the cloud only: `recording: "local"` records nothing automatically.
fn apply_options(options: &MeetingOptions, body: &mut serde_json::Value) {
    if let Some(on) = options.waiting_room {
        // Everyone but the organiser waits in the lobby, or no one does.
        body["lobbyBypassSettings"] = serde_json::json!({ "scope": if on { "organizer" } else { "everyone" } });
    }
    if let Some(recording) = options.recording {
        body["recordAutomatically"] = matches!(recording, Recording::Cloud).into();
    }
    if let Some(required) = options.passcode {
        body["joinMeetingIdSettings"] = serde_json::json!({ "isPasscodeRequired": required });
    }
}

/// An online meeting as Graph answers it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnlineMeeting {
    id: String,
    #[serde(default)]
    join_web_url: Option<String>,
    #[serde(default)]
    start_date_time: Option<String>,
    #[serde(default)]
    end_date_time: Option<String>,
}

impl OnlineMeeting {
    /// Whether it is at `req`'s times (to the second: Graph keeps fractions of its own).
    fn at_times_of(&self, req: &MeetingRequest) -> bool {
        let parse = |t: &Option<String>| t.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let second = |t: DateTime<Utc>| t.timestamp();
        parse(&self.start_date_time).map(|t| t.timestamp()) == Some(second(req.start))
            && parse(&self.end_date_time).map(|t| t.timestamp()) == Some(second(req.end))
    }
}

/// Graph's error JSON.
#[derive(Debug, Default, Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    error: GraphError,
}

#[derive(Debug, Default, Deserialize)]
struct GraphError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A failed Graph call, classified.
#[derive(Debug)]
enum CallError {
    Unauthorized,
    NotFound,
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

/// Maps Graph's answer to what the worker does, by HTTP status and `error.code` (never by the
/// message).
fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> CallError {
    let error = serde_json::from_slice::<GraphErrorBody>(body).unwrap_or_default().error;
    let code = error.code.unwrap_or_default();
    // Graph's messages are short sentences; a long one is cut rather than quoted whole.
    let message: String = error.message.unwrap_or_default().chars().take(300).collect();
    match (status, code.as_str()) {
        (401, _) | (_, "InvalidAuthenticationToken") => CallError::Unauthorized,
        (404, _) => CallError::NotFound,
        (429 | 503, _) => CallError::Other(ProviderError::RateLimited { retry_after }),
        (s, _) if s >= 500 => {
            CallError::Other(ProviderError::Transient(format!("Microsoft Graph answered HTTP {s} ({code})")))
        }
        (403, _) | (_, "Authorization_RequestDenied" | "ErrorAccessDenied") => {
            CallError::Other(ProviderError::Permanent(format!(
                "Microsoft refused to make the Teams meeting ({}): the account needs a Microsoft 365 work or school licence with Teams, and an administrator may have to allow meetingd ({})",
                if code.is_empty() { "HTTP 403" } else { &code },
                if message.is_empty() { "no message" } else { &message }
            )))
        }
        (s, c) => CallError::Other(ProviderError::Permanent(format!(
            "Microsoft Graph rejected the request (HTTP {s}, {}): {}",
            if c.is_empty() { "no code" } else { c },
            if message.is_empty() { "no message" } else { &message }
        ))),
    }
}

fn into_provider(e: CallError) -> ProviderError {
    match e {
        CallError::Unauthorized => ProviderError::Unauthorized,
        CallError::NotFound => ProviderError::NotFound,
        CallError::Other(p) => p,
    }
}

/// meetingd's OAuth client at the tenant's token endpoint (the client secret in the form body);
/// `None` when `teams.client_id` or the client secret is not set.
pub fn oauth_client(config: &TeamsConfig) -> Result<Option<OAuthClient>, String> {
    Ok(match config.client_secret()? {
        Some(secret) if !config.client_id.trim().is_empty() => Some(OAuthClient::new(
            &config.client_id,
            secret,
            config.token_url()?,
            Duration::from_millis(config.request_timeout_ms),
        )),
        _ => None,
    })
}

pub struct Teams {
    http: reqwest::Client,
    config: TeamsConfig,
    oauth: OAuthClient,
    tokens: Arc<TokenStore>,
    /// Requests in flight per account (0: no limit).
    concurrency: u32,
    slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl Teams {
    pub fn new(config: TeamsConfig, oauth: OAuthClient, tokens: Arc<TokenStore>, concurrency: u32) -> Teams {
        let http = reqwest::Client::builder()
            // Graph does not redirect these calls; following one could send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .expect("a reqwest client with rustls builds");
        Teams { http, config, oauth, tokens, concurrency, slots: Mutex::new(HashMap::new()) }
    }

    /// The way into connected Microsoft accounts.
    fn access(&self) -> Access<'_> {
        Access {
            tokens: &self.tokens,
            oauth: &self.oauth,
            platform: Platform::Teams,
            vendor: "Microsoft",
            section: "teams",
        }
    }

    /// The slots of `user`'s mailbox.
    fn slots_of(&self, user: Uuid) -> Option<Arc<Semaphore>> {
        (self.concurrency > 0).then(|| {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(user).or_insert_with(|| Arc::new(Semaphore::new(self.concurrency as usize))).clone()
        })
    }

    /// One request to Graph in `who`'s mailbox; the answer's body on a 2xx.
    async fn send(
        &self,
        who: &Who,
        token: &SecretString,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, CallError> {
        let url = self.config.api_base_url.join(path).map_err(|e| {
            CallError::Other(ProviderError::Permanent(format!("bad Microsoft Graph path {path:?}: {e}")))
        })?;
        let slots = self.slots_of(who.user());
        let _slot = match &slots {
            Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
            None => None,
        };
        let mut request = self.http.request(method, url).bearer_auth(token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let transient = |what: &str, e: reqwest::Error| {
            let why = if e.is_timeout() {
                "Microsoft Graph did not answer in time".to_string()
            } else {
                e.without_url().to_string()
            };
            CallError::Other(ProviderError::Transient(format!("{what}: {why}")))
        };
        let response = request.send().await.map_err(|e| transient("connection to Microsoft Graph failed", e))?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = response.bytes().await.map_err(|e| transient("reading Microsoft Graph's answer failed", e))?;
        if (200..300).contains(&status) { Ok(body.to_vec()) } else { Err(classify(status, &body, retry_after)) }
    }

    fn parse(body: &[u8]) -> Result<OnlineMeeting, CallError> {
        serde_json::from_slice(body).map_err(|e| {
            CallError::Other(ProviderError::Transient(format!(
                "Microsoft Graph's answer could not be read (at line {}, column {})",
                e.line(),
                e.column()
            )))
        })
    }

    /// `createOrGet`: the meeting of this `externalId`, made now or earlier.
    async fn create_or_get(&self, who: &Who, body: &serde_json::Value) -> Result<OnlineMeeting, ProviderError> {
        self.access()
            .authorized(who, |t| async move {
                let answer =
                    self.send(who, &t, reqwest::Method::POST, "me/onlineMeetings/createOrGet", Some(body)).await?;
                Self::parse(&answer)
            })
            .await
            .map_err(into_provider)
    }

    /// Moves meeting `id` to `req`'s times and subject; Graph answers the meeting.
    async fn moved(&self, who: &Who, id: &str, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let body = move_body(req);
        let path = format!("me/onlineMeetings/{id}");
        let answer = self
            .access()
            .authorized(who, |t| {
                let (body, path) = (&body, &path);
                async move {
                    let answer = self.send(who, &t, reqwest::Method::PATCH, path, Some(body)).await?;
                    Self::parse(&answer)
                }
            })
            .await
            .map_err(into_provider)?;
        meeting_of(answer, who)
    }

    async fn remove(&self, who: &Who, id: &str) -> Result<(), ProviderError> {
        let path = format!("me/onlineMeetings/{id}");
        let result = self
            .access()
            .authorized(who, |t| {
                let path = &path;
                async move { self.send(who, &t, reqwest::Method::DELETE, path, None).await.map(|_| ()) }
            })
            .await;
        match result {
            Ok(()) | Err(CallError::NotFound) => Ok(()),
            Err(e) => Err(into_provider(e)),
        }
    }
}

fn meeting_of(m: OnlineMeeting, who: &Who) -> Result<Meeting, ProviderError> {
    let join_url = m.join_web_url.filter(|u| !u.is_empty()).ok_or_else(|| {
        ProviderError::Transient("Microsoft Graph answered an online meeting without a joinWebUrl".into())
    })?;
    Ok(Meeting { external_id: m.id, join_url, account: who.account() })
}

#[async_trait::async_trait]
impl MeetingProvider for Teams {
    fn platform(&self) -> Platform {
        Platform::Teams
    }

    fn supported_options(&self) -> &'static [MeetingOption] {
        &SUPPORTED
    }

    /// Teams records to the cloud only: `recording: "local"` is not applied either.
    fn ignored_options(&self, options: &MeetingOptions) -> Vec<MeetingOption> {
        let mut ignored = options.unsupported(&SUPPORTED);
        if options.recording == Some(Recording::Local) {
            ignored.push(MeetingOption::Recording);
        }
        ignored.sort();
        ignored
    }

    /// `createOrGet`, safe to repeat: a meeting an earlier attempt made is answered again, and
    /// moved if the booking moved since.
    async fn create(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::creating(req);
        let made = self.create_or_get(&who, &create_body(req)).await?;
        let options = !req.options.set().is_empty();
        if made.at_times_of(req) && !options {
            return meeting_of(made, &who);
        }
        if !made.at_times_of(req) {
            tracing::info!(booking_id = %req.booking_id, "moving the Teams meeting an earlier attempt made to the booking's times");
        }
        // Graph answered this meeting a moment ago: a 404 now is Graph catching up, not a
        // meeting gone for good.
        self.moved(&who, &made.id, req).await.map_err(|e| match e {
            ProviderError::NotFound => {
                ProviderError::Transient("Microsoft Graph did not find the meeting it had just answered".into())
            }
            other => other,
        })
    }

    async fn update(&self, existing: &Meeting, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::of(existing, req.provider_user_id);
        if existing.external_id.is_empty() {
            return Err(ProviderError::NotFound);
        }
        self.moved(&who, &existing.external_id, req).await
    }

    /// Deletes by id; given an intent's `externalId` (a create whose answer never came), finds
    /// that meeting with the same `createOrGet` first. A meeting already gone counts as deleted.
    async fn delete(&self, existing: &Meeting, provider: Uuid) -> Result<(), ProviderError> {
        let who = Who::of(existing, provider);
        let id = if existing.external_id.starts_with(EXTERNAL_ID_PREFIX) {
            let body = serde_json::json!({ "externalId": existing.external_id, "subject": "meetingd" });
            self.create_or_get(&who, &body).await?.id
        } else if existing.external_id.is_empty() {
            return Ok(());
        } else {
            existing.external_id.clone()
        };
        self.remove(&who, &id).await
    }

    /// The `externalId` `create` uses: Graph answers the same meeting for it until it is deleted.
    fn intent_id(&self, booking_id: Uuid, generation: i32) -> Option<String> {
        Some(external_id(booking_id, generation))
    }
}

#[cfg(test)]
mod tests;
