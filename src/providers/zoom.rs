//! Zoom meetings, through Zoom's Meetings API v2 (user-level OAuth).
//!
//! Owns Zoom's wire format and error JSON (`{"code","message"}`) and how they map to
//! [`ProviderError`]. A meeting is a scheduled meeting (type 2) in the provider's Zoom account;
//! its link is `join_url`, its id Zoom's numeric id as text. Zoom also answers a `start_url` (the
//! host's key): it is never parsed out of an answer, so it cannot be stored, logged or returned.
//!
//! Exactly once without an idempotency key: Zoom chooses the meeting id, so a create whose answer
//! is lost leaves a meeting meetingd cannot name. Every meeting carries a mark ([`Marks`]) in its
//! `agenda`: its booking and generation, sealed under meetingd's encryption key, so nobody can
//! forge one and the reconcile sweep can read which booking a meeting belongs to. The worker
//! records the create intent before the call ([`MeetingProvider::intent_id`] names the booking
//! and generation), and a create repeated for the same intent
//! ([`MeetingProvider::create_again`]) first lists the account's unexpired meetings for that mark
//! and adopts what it finds (deleting all but one). Deleting an intent's meeting by its mark
//! works the same way. Its OAuth facts are `zoom/auth.rs` ([`OAUTH`], [`ZoomAuth`]).
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
    Account, Marked, Meeting, MeetingOption, MeetingOptions, MeetingProvider, MeetingRequest, Platform, ProviderError,
    parse_retry_after,
};
use crate::config::ZoomConfig;
use crate::crypto::{Column, Keyring};
use crate::oauth::OAuthClient;
use crate::quota::QuotaStore;
use crate::tokens::TokenStore;

mod auth;

pub use auth::{OAUTH, ZoomAuth};

/// Zoom's limits on a meeting's `topic` and `agenda`, in characters.
pub const TOPIC_MAX: usize = 200;
pub const AGENDA_MAX: usize = 2000;

/// The most Meetings API calls one job can make on Zoom, counted from `worker/execute.rs` and
/// this module, with every list one page long (300 unexpired meetings; each further page adds
/// one): delete a stray create intent's meeting: list, delete (2); move the recorded meeting:
/// get, patch, get (3); create again: list, delete a second copy, move the adopted one: patch,
/// get (4). `meetingd check` compares `worker.lease_secs` with it.
pub const MOST_CALLS_PER_JOB: u64 = 9;

/// Requests one call can take: the call, and after a 401 (code 124) a token refresh and the
/// call again. A job also refreshes once before its first call when the stored token is due.
pub const MOST_REQUESTS_PER_CALL: u64 = 3;

/// What every mark starts with (see [`Marks`]).
const MARK_PREFIX: &str = "[meetingd ";

/// What stands for an intent's meeting before Zoom names it: `intent:<booking>:<generation>`
/// (see [`MeetingProvider::intent_id`]); never sent to Zoom.
const INTENT_PREFIX: &str = "intent:";

/// The most meetings one page of the list asks for (Zoom's maximum).
const PAGE_SIZE: &str = "300";

/// The marks meetingd puts in its meetings' agendas: `[meetingd <envelope>]`, where the envelope
/// is the booking id and generation sealed by the token cipher (`crypto.rs`,
/// [`Column::MeetingMark`]). A fresh nonce each time, so a mark is read, never recomputed and
/// compared: a mark sealed under a key since rotated into `encryption.old_keys` still reads.
/// Nobody without the key can make a meeting meetingd would adopt, and the booking id never
/// shows in Zoom.
#[derive(Clone)]
pub struct Marks {
    keyring: Arc<Keyring>,
}

impl Marks {
    pub fn new(keyring: Arc<Keyring>) -> Marks {
        Marks { keyring }
    }

    /// A mark for the `generation`th meeting of `booking`.
    pub fn seal(&self, booking: Uuid, generation: i32) -> String {
        let plain = SecretString::from(format!("{booking}:{generation}"));
        format!("{MARK_PREFIX}{}]", self.keyring.encrypt(&plain, Uuid::nil(), Column::MeetingMark))
    }

    /// The booking and generation the first mark in `agenda` that this keyring opens names.
    pub fn read(&self, agenda: &str) -> Option<(Uuid, i32)> {
        agenda.match_indices(MARK_PREFIX).find_map(|(at, _)| {
            let rest = &agenda[at + MARK_PREFIX.len()..];
            let sealed = &rest[..rest.find(']')?];
            let plain = self.keyring.decrypt(sealed, Uuid::nil(), Column::MeetingMark).ok()?;
            let (booking, generation) = plain.expose_secret().split_once(':')?;
            Some((Uuid::parse_str(booking).ok()?, generation.parse().ok()?))
        })
    }

    /// Whether `agenda` marks the `generation`th meeting of `booking`: a sealed mark, or the
    /// unsealed one ([`unsealed_mark`]) of meetings made before marks were sealed.
    pub fn names(&self, agenda: &str, booking: Uuid, generation: i32) -> bool {
        self.read(agenda) == Some((booking, generation)) || agenda.contains(&unsealed_mark(booking, generation))
    }
}

/// The mark meetings made before marks were sealed carry: a hash of the booking id, the
/// generation and a constant. Still recognised (adopted, deleted), never written.
pub fn unsealed_mark(booking: Uuid, generation: i32) -> String {
    let digest = Sha256::new()
        .chain_update(b"meetingd zoom meeting marker v1\0")
        .chain_update(booking.as_bytes())
        .chain_update(generation.to_be_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{MARK_PREFIX}{hex}]")
}

/// `intent:<booking>:<generation>`, what [`MeetingProvider::intent_id`] answers (and what an
/// orphaned meeting of an unanswered create is reported as).
pub fn intent_of(booking: Uuid, generation: i32) -> String {
    format!("{INTENT_PREFIX}{booking}:{generation}")
}

/// The booking and generation an intent id names.
fn parse_intent(id: &str) -> Option<(Uuid, i32)> {
    let (booking, generation) = id.strip_prefix(INTENT_PREFIX)?.split_once(':')?;
    Some((Uuid::parse_str(booking).ok()?, generation.parse().ok()?))
}

/// The topic: the title template's text, cut to Zoom's limit.
fn topic(req: &MeetingRequest) -> String {
    req.title.chars().take(TOPIC_MAX).collect()
}

/// The agenda: the mark first (so a list that shortens agendas still shows it), then the
/// description template's text, cut so the whole fits Zoom's limit.
fn agenda(req: &MeetingRequest, mark: String) -> String {
    let rest = agenda_after_mark(req, mark.chars().count());
    format!("{mark}{rest}")
}

/// What follows a mark of `mark_chars` characters in the agenda: nothing, or a blank line and
/// the description, cut so the whole fits Zoom's limit.
fn agenda_after_mark(req: &MeetingRequest, mark_chars: usize) -> String {
    match req.description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => String::new(),
        Some(text) => {
            let room = AGENDA_MAX.saturating_sub(mark_chars + 2);
            format!("\n\n{}", text.chars().take(room).collect::<String>())
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

/// The body of a create or a move: the booking's title, description (after `mark`) and times, and the meeting
/// options the service set (a move re-applies them, so a change of the service's options reaches
/// the meeting with its next move). A create with `passcode: true` asks Zoom for a passcode
/// (`default_password`); a move leaves it as it is (the link carries it).
fn meeting_body(req: &MeetingRequest, mark: String, create: bool) -> serde_json::Value {
    let mut body = serde_json::json!({
        "topic": topic(req),
        "agenda": agenda(req, mark),
        "start_time": start_time(req.start),
        "duration": duration_minutes(req),
        "timezone": "UTC",
    });
    if create {
        body["type"] = 2.into();
        if req.options.passcode == Some(true) {
            // Zoom makes the passcode by the account's own passcode rules (length, digits only,
            // a special character…), which a passcode of meetingd's could break.
            body["default_password"] = true.into();
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
/// the account's default). `passcode` is not a setting: it is the create body's `default_password`.
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

/// A meeting as Zoom answers it. Fields not named here (`start_url` among them) are dropped while
/// parsing.
#[derive(Debug, Deserialize)]
struct ZoomMeeting {
    id: u64,
    #[serde(default)]
    join_url: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    agenda: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    duration: Option<i64>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

impl ZoomMeeting {
    /// Whether it is at `req`'s times (Zoom keeps whole seconds and minutes).
    fn at_times_of(&self, req: &MeetingRequest) -> bool {
        let start = chrono::SubsecRound::trunc_subsecs(req.start, 0);
        self.start_time.as_deref().and_then(|t| t.parse::<DateTime<Utc>>().ok()) == Some(start)
            && self.duration == Some(duration_minutes(req))
    }
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

/// A meeting Zoom just answered that it then says does not exist: tried again later.
fn just_listed(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::NotFound => ProviderError::Transient("Zoom did not find a meeting it had just listed".into()),
        other => other,
    }
}

fn into_provider(e: CallError) -> ProviderError {
    match e {
        CallError::Unauthorized => ProviderError::Unauthorized,
        CallError::NotFound => ProviderError::NotFound,
        CallError::DailyLimit(wait) => ProviderError::RateLimited { retry_after: Some(wait) },
        CallError::Other(p) => p,
    }
}

/// A Zoom meeting id in a URL path: digits only (an intent or anything else is not an id).
fn numeric(id: &str) -> Option<&str> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

pub struct Zoom {
    http: reqwest::Client,
    config: ZoomConfig,
    oauth: OAuthClient,
    tokens: Arc<TokenStore>,
    marks: Marks,
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
    pub fn new(
        config: ZoomConfig,
        oauth: OAuthClient,
        tokens: Arc<TokenStore>,
        marks: Marks,
        quota: QuotaStore,
    ) -> Zoom {
        let http = reqwest::Client::builder()
            // Zoom's API does not redirect; following one could send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .expect("a reqwest client with rustls builds");
        Zoom { http, config, oauth, tokens, marks, quota }
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
        // `scheduled`: every meeting that has not expired, including one whose start has passed
        // (a booking that began a few minutes ago); `upcoming` would leave that one out.
        let mut query = vec![("type", "scheduled"), ("page_size", PAGE_SIZE)];
        if let Some(page) = page.as_deref() {
            query.push(("next_page_token", page));
        }
        let answer = self.send(&token, reqwest::Method::GET, "users/me/meetings", &query, None).await?;
        Self::parse(&answer)
    }

    /// Every unexpired meeting in `who`'s account (all pages).
    async fn list_all(&self, who: &Who) -> Result<Vec<ZoomMeeting>, ProviderError> {
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let list =
                self.access().authorized(who, |t| self.list_page(t, page.clone())).await.map_err(into_provider)?;
            found.extend(list.meetings);
            match list.next_page_token {
                Some(next) if !next.is_empty() => page = Some(next),
                _ => return Ok(found),
            }
        }
    }

    /// Every unexpired meeting in `who`'s account marked as the `generation`th of `booking`.
    async fn find_marked(&self, who: &Who, booking: Uuid, generation: i32) -> Result<Vec<ZoomMeeting>, ProviderError> {
        let all = self.list_all(who).await?;
        Ok(all
            .into_iter()
            .filter(|m| m.agenda.as_deref().is_some_and(|a| self.marks.names(a, booking, generation)))
            .collect())
    }

    /// The meeting an earlier attempt at `req` made, if any: adopted (moved, if the booking moved
    /// since), and any second one carrying the same mark deleted.
    async fn adopt(&self, who: &Who, req: &MeetingRequest) -> Result<Option<Meeting>, ProviderError> {
        let mut found = self.find_marked(who, req.booking_id, req.generation).await?;
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
        let same_time = keep.at_times_of(req);
        match keep.join_url {
            Some(link) if same_time => Ok(Some(Meeting { external_id: id, join_url: link, account: who.account() })),
            // Listed a moment ago: a 404 now is Zoom catching up, not a meeting gone for good.
            _ => self.moved(who, &id, req).await.map(Some).map_err(just_listed),
        }
    }

    /// Moves meeting `id` to `req`'s title and times, then reads its (fresh) link: a PATCH
    /// answers 204 without a body.
    async fn moved(&self, who: &Who, id: &str, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let body = self.body(req, false);
        self.counted(who, |t| self.patch(t, id, body.clone())).await?;
        let fresh = self.access().authorized(who, |t| self.get(t, id)).await.map_err(into_provider)?;
        meeting_of(fresh, who)
    }

    /// Whether `m` is already what a move to `req` would make it: its times, topic, marked agenda
    /// and the options the service set (the passcode, set once on create, aside).
    fn in_step(&self, m: &ZoomMeeting, req: &MeetingRequest) -> bool {
        let agenda = m.agenda.as_deref().unwrap_or_default();
        // The text after the mark, as `agenda` writes it.
        let rest = agenda
            .strip_prefix(MARK_PREFIX)
            .and_then(|after| after.find(']').map(|end| &after[end + 1..]))
            .unwrap_or(agenda);
        let settings_match = settings(&req.options).is_none_or(|want| {
            want.as_object()
                .into_iter()
                .flatten()
                .all(|(key, value)| m.settings.as_ref().and_then(|s| s.get(key)) == Some(value))
        });
        m.at_times_of(req)
            && m.topic.as_deref() == Some(topic(req).as_str())
            && self.marks.names(agenda, req.booking_id, req.generation)
            && rest == agenda_after_mark(req, agenda.chars().count() - rest.chars().count())
            && settings_match
    }

    /// The body of a create or a move of `req`'s meeting, with a fresh mark.
    fn body(&self, req: &MeetingRequest, create: bool) -> serde_json::Value {
        meeting_body(req, self.marks.seal(req.booking_id, req.generation), create)
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
        let who = Who::creating(req);
        let body = self.body(req, true);
        let created = self.counted(&who, |t| self.post(t, body.clone())).await?;
        meeting_of(created, &who)
    }

    /// An earlier attempt may have made the meeting (its answer lost): look for its mark first.
    async fn create_again(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::creating(req);
        if let Some(adopted) = self.adopt(&who, req).await? {
            return Ok(adopted);
        }
        let body = self.body(req, true);
        let created = self.counted(&who, |t| self.post(t, body.clone())).await?;
        meeting_of(created, &who)
    }

    /// Moves the meeting when it is not as the booking wants it. The meeting is read first (a
    /// read is free; a PATCH takes one of the account's 100 daily writes), so a booking re-armed
    /// without a change costs nothing of the quota.
    async fn update(&self, existing: &Meeting, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::of(existing, req.provider_user_id);
        let Some(id) = numeric(&existing.external_id) else {
            return Err(ProviderError::NotFound);
        };
        let current = self.access().authorized(&who, |t| self.get(t, id)).await.map_err(into_provider)?;
        if self.in_step(&current, req) {
            return meeting_of(current, &who);
        }
        self.moved(&who, id, req).await
    }

    /// Deletes by id; given an intent (a create intent's meeting, see
    /// [`MeetingProvider::intent_id`]), deletes every meeting marked as that booking's
    /// generation. A meeting already gone counts as deleted.
    async fn delete(&self, existing: &Meeting, provider: Uuid) -> Result<(), ProviderError> {
        let who = Who::of(existing, provider);
        let ids: Vec<String> = match (numeric(&existing.external_id), parse_intent(&existing.external_id)) {
            (Some(id), _) => vec![id.to_string()],
            (None, Some((booking, generation))) => {
                self.find_marked(&who, booking, generation).await?.iter().map(|m| m.id.to_string()).collect()
            }
            (None, None) => return Ok(()),
        };
        for id in ids {
            match self.access().authorized(&who, |t| self.remove(t, &id)).await {
                Ok(()) | Err(CallError::NotFound) => {}
                Err(e) => return Err(into_provider(e)),
            }
        }
        Ok(())
    }

    /// Zoom chooses meeting ids, so what stands for the meeting before Zoom answers is the
    /// booking and generation its mark names.
    fn intent_id(&self, booking_id: Uuid, generation: i32) -> Option<String> {
        Some(intent_of(booking_id, generation))
    }

    /// Every unexpired meeting in the account (Zoom keeps a meeting 30 days past its start), with
    /// the booking its mark names; one without a mark this keyring reads (made by hand, or before
    /// marks were sealed) is listed with no booking, so the sweep counts it as present but never
    /// deletes it.
    async fn list_marked(&self, account: &Account) -> Option<Result<Vec<Marked>, ProviderError>> {
        let who = Who::of(
            &Meeting { external_id: String::new(), join_url: String::new(), account: Some(account.clone()) },
            account.user_id,
        );
        let listed = match self.list_all(&who).await {
            Ok(listed) => listed,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(listed
            .into_iter()
            .map(|m| Marked {
                external_id: m.id.to_string(),
                booking_id: m.agenda.as_deref().and_then(|a| self.marks.read(a)).map(|(booking, _)| booking),
            })
            .collect()))
    }
}

#[cfg(test)]
mod tests;
