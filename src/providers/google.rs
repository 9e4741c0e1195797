//! Google Meet, through Google Calendar events (`google-calendar3`).
//!
//! A meeting is a Calendar event on the provider's calendar with a Meet conference. Exactly once:
//! the event id derives from the booking id and the meeting generation, so a repeated insert
//! answers 409 `duplicate` and the existing event is adopted; the conference `requestId` derives
//! from the same pair. Google's wire format and error JSON stay in this module, and so do its
//! OAuth facts (`google/auth.rs`: [`OAUTH`], [`GoogleAuth`]: scopes, consent parameters,
//! endpoints, who the connected account is).

// google-calendar3's error type is large; it only passes through here on the way to `classify`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use google_calendar3::api::{
    ConferenceData, ConferenceSolutionKey, CreateConferenceRequest, Event, EventAttendee, EventDateTime,
    EventExtendedProperties, Events,
};
use google_calendar3::common::{self, GetToken};
use google_calendar3::hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use google_calendar3::hyper_util::client::legacy::connect::HttpConnector;
use google_calendar3::hyper_util::rt::TokioExecutor;
use google_calendar3::{CalendarHub, hyper_util};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::account::{Access, CallFailure, Who};
use super::{
    Account, Marked, Meeting, MeetingOption, MeetingProvider, MeetingRequest, Platform, ProviderError,
    parse_retry_after,
};
use crate::config::GoogleConfig;
use crate::oauth::OAuthClient;
use crate::tokens::TokenStore;

mod auth;

pub use auth::{GoogleAuth, OAUTH, oauth_client};

type Connector = HttpsConnector<HttpConnector>;

pub struct GoogleMeet {
    client: common::Client<Connector>,
    config: GoogleConfig,
    oauth: OAuthClient,
    tokens: Arc<TokenStore>,
}

/// The most Calendar calls one job can make on Google, counted from `worker/execute.rs` and this
/// module: delete a stray create intent (1); delete or move the recorded meeting (1); create:
/// insert (1), fetch the event an earlier attempt made (1), move it (1), ask again for a failed
/// conference (3), and one poll of a pending conference still in flight when
/// `google.conference_wait_ms` runs out (1). `meetingd check` compares `worker.lease_secs` with it.
pub const MOST_CALLS_PER_JOB: u64 = 9;

/// Requests one call can take: the call, and after a 401 a token refresh and the call again.
/// A job also refreshes once before its first call when the stored token is due.
pub const MOST_REQUESTS_PER_CALL: u64 = 3;

/// The access token handed to google-calendar3, kept as a secret until the request is built.
///
/// google-calendar3 takes the token as an owned `String` (`GetToken`) and formats it into the
/// `Authorization` header value itself; neither copy is ours after the hand-over, so neither can
/// be zeroised. Every copy meetingd keeps is a `SecretString`, zeroised on drop.
#[derive(Clone)]
struct Bearer(SecretString);

/// google-apis-common's (private) `GetTokenOutput`.
type TokenFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<String>, Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>,
>;

impl GetToken for Bearer {
    fn get_token<'a>(&'a self, _scopes: &'a [&str]) -> TokenFuture<'a> {
        Box::pin(async move { Ok(Some(self.0.expose_secret().to_string())) })
    }
}

/// Captures the status and `Retry-After` of a failed call (google-calendar3 keeps only the body).
#[derive(Default)]
struct Capture {
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl common::Delegate for Capture {
    fn http_failure(&mut self, response: &common::Response, _body: Option<&serde_json::Value>) -> common::Retry {
        self.status = Some(response.status().as_u16());
        self.retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        common::Retry::Abort
    }
}

/// A failed Calendar call, classified.
#[derive(Debug)]
enum CallError {
    Unauthorized,
    NotFound,
    Duplicate,
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

/// The event id for a booking's nth meeting: Google allows `[a-v0-9]{5,1024}`; a deleted id stays
/// reserved forever, hence the generation.
pub fn event_id(booking: Uuid, generation: i32) -> String {
    format!("meetingd{}g{generation}", booking.simple())
}

fn request_id(booking: Uuid, generation: i32, round: u32) -> String {
    format!("{}-{generation}-{round}", booking.simple())
}

fn http_client() -> common::Client<Connector> {
    let connector = HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// The connected account's e-mail address: the id of its primary calendar (needs no scope beyond
/// `calendar.events`).
pub async fn account_email(config: &GoogleConfig, token: &SecretString) -> Result<String, ProviderError> {
    let mut hub = CalendarHub::new(http_client(), Bearer(token.clone()));
    hub.base_url(config.api_base_url.to_string());
    let mut capture = Capture::default();
    let call = hub.calendars().get("primary").delegate(&mut capture).doit();
    let result = tokio::time::timeout(Duration::from_millis(config.request_timeout_ms), call).await;
    let calendar = finish(result, capture).map_err(into_provider)?;
    calendar.id.ok_or_else(|| ProviderError::Transient("Google returned a calendar without an id".into()))
}

impl GoogleMeet {
    pub fn new(config: GoogleConfig, oauth: OAuthClient, tokens: Arc<TokenStore>) -> GoogleMeet {
        GoogleMeet { client: http_client(), config, oauth, tokens }
    }

    fn hub(&self, token: &SecretString) -> CalendarHub<Connector> {
        let mut hub = CalendarHub::new(self.client.clone(), Bearer(token.clone()));
        hub.base_url(self.config.api_base_url.to_string());
        hub
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// The way into connected Google accounts.
    fn access(&self) -> Access<'_> {
        Access {
            tokens: &self.tokens,
            oauth: &self.oauth,
            platform: Platform::GoogleMeet,
            vendor: "Google",
            section: "google",
        }
    }

    async fn insert(&self, token: SecretString, event: Event) -> Result<Event, CallError> {
        let hub = self.hub(&token);
        let mut capture = Capture::default();
        let call = hub
            .events()
            .insert(event, &self.config.calendar_id)
            .conference_data_version(1)
            .send_updates(&self.config.send_updates)
            .delegate(&mut capture)
            .doit();
        let result = tokio::time::timeout(self.timeout(), call).await;
        finish(result, capture)
    }

    /// One page of the calendar's events that have not ended yet.
    async fn list_page(&self, token: SecretString, page: Option<String>) -> Result<Events, CallError> {
        let hub = self.hub(&token);
        let mut capture = Capture::default();
        let mut call = hub
            .events()
            .list(&self.config.calendar_id)
            .time_min(chrono::Utc::now())
            .show_deleted(false)
            .single_events(true)
            .max_results(250);
        if let Some(page) = &page {
            call = call.page_token(page);
        }
        let result = tokio::time::timeout(self.timeout(), call.delegate(&mut capture).doit()).await;
        finish(result, capture)
    }

    async fn get(&self, token: SecretString, id: &str) -> Result<Event, CallError> {
        let hub = self.hub(&token);
        let mut capture = Capture::default();
        let call = hub.events().get(&self.config.calendar_id, id).delegate(&mut capture).doit();
        let result = tokio::time::timeout(self.timeout(), call).await;
        finish(result, capture)
    }

    async fn patch(&self, token: SecretString, id: &str, event: Event) -> Result<Event, CallError> {
        let hub = self.hub(&token);
        let mut capture = Capture::default();
        let call = hub
            .events()
            .patch(event, &self.config.calendar_id, id)
            .conference_data_version(1)
            .send_updates(&self.config.send_updates)
            .delegate(&mut capture)
            .doit();
        let result = tokio::time::timeout(self.timeout(), call).await;
        finish(result, capture)
    }

    async fn remove(&self, token: SecretString, id: &str) -> Result<(), CallError> {
        let hub = self.hub(&token);
        let mut capture = Capture::default();
        let call = hub
            .events()
            .delete(&self.config.calendar_id, id)
            .send_updates(&self.config.send_updates)
            .delegate(&mut capture)
            .doit();
        let result = tokio::time::timeout(self.timeout(), call).await;
        finish(result.map(|r| r.map(|response| (response, ()))), capture)
    }

    fn new_event(&self, req: &MeetingRequest) -> Event {
        let id = event_id(req.booking_id, req.generation);
        Event {
            id: Some(id),
            summary: Some(req.title.clone()),
            description: req.description.clone(),
            start: Some(utc(req.start)),
            end: Some(utc(req.end)),
            attendees: match (&req.customer_email, self.config.invite_customer) {
                (Some(email), true) => Some(vec![EventAttendee { email: Some(email.clone()), ..Default::default() }]),
                _ => None,
            },
            extended_properties: Some(EventExtendedProperties {
                private: Some([("booking_id".to_string(), req.booking_id.to_string())].into()),
                shared: None,
            }),
            conference_data: Some(conference_request(req.booking_id, req.generation, 0)),
            ..Default::default()
        }
    }

    /// Waits (within `google.conference_wait_ms`) for the Meet conference of `event`.
    async fn ready_link(&self, who: &Who, req: &MeetingRequest, mut event: Event) -> Result<Meeting, ProviderError> {
        let id = event.id.clone().unwrap_or_else(|| event_id(req.booking_id, req.generation));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.conference_wait_ms);
        let mut pause = Duration::from_millis(100);
        let mut round = 0;
        loop {
            match conference_state(&event) {
                Conference::Ready(link) => {
                    return Ok(Meeting { external_id: id, join_url: link, account: who.account() });
                }
                Conference::Failed if round < 3 => {
                    // Google could not make the conference: ask again with a new requestId.
                    round += 1;
                    let patch = Event {
                        conference_data: Some(conference_request(req.booking_id, req.generation, round)),
                        ..Default::default()
                    };
                    event = self
                        .access()
                        .authorized(who, |t| self.patch(t, &id, patch.clone()))
                        .await
                        .map_err(into_provider)?;
                    continue;
                }
                Conference::Failed => {
                    return Err(ProviderError::Transient("Google could not create the Meet conference".into()));
                }
                Conference::Pending => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ProviderError::Pending);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            event = self.access().authorized(who, |t| self.get(t, &id)).await.map_err(into_provider)?;
        }
    }
}

/// An event time in UTC, as Google expects it.
/// The fields a booking change moves: title, description and times.
fn schedule(req: &MeetingRequest) -> Event {
    Event {
        summary: Some(req.title.clone()),
        description: req.description.clone(),
        start: Some(utc(req.start)),
        end: Some(utc(req.end)),
        ..Default::default()
    }
}

fn utc(at: chrono::DateTime<chrono::Utc>) -> EventDateTime {
    EventDateTime { date_time: Some(at), time_zone: Some("UTC".into()), ..Default::default() }
}

fn conference_request(booking: Uuid, generation: i32, round: u32) -> ConferenceData {
    ConferenceData {
        create_request: Some(CreateConferenceRequest {
            request_id: Some(request_id(booking, generation, round)),
            conference_solution_key: Some(ConferenceSolutionKey { type_: Some("hangoutsMeet".into()) }),
            status: None,
        }),
        ..Default::default()
    }
}

enum Conference {
    Ready(String),
    Pending,
    Failed,
}

fn conference_state(event: &Event) -> Conference {
    let data = event.conference_data.as_ref();
    let video = data
        .and_then(|d| d.entry_points.as_ref())
        .and_then(|eps| eps.iter().find(|e| e.entry_point_type.as_deref() == Some("video")))
        .and_then(|e| e.uri.clone());
    if let Some(link) = video.or_else(|| event.hangout_link.clone()) {
        return Conference::Ready(link);
    }
    let status = data
        .and_then(|d| d.create_request.as_ref())
        .and_then(|r| r.status.as_ref())
        .and_then(|s| s.status_code.as_deref());
    match status {
        Some("failure") => Conference::Failed,
        _ => Conference::Pending,
    }
}

fn finish<T>(
    result: Result<common::Result<(common::Response, T)>, tokio::time::error::Elapsed>,
    capture: Capture,
) -> Result<T, CallError> {
    match result {
        Err(_) => Err(CallError::Other(ProviderError::Transient("Google did not answer in time".into()))),
        Ok(Ok((_, value))) => Ok(value),
        Ok(Err(e)) => Err(classify(&e, &capture)),
    }
}

/// Maps Google's answer to what the worker does, by `error.code` and `error.errors[].reason`.
fn classify(error: &google_calendar3::Error, capture: &Capture) -> CallError {
    use google_calendar3::Error as E;
    let (status, body) = match error {
        E::BadRequest(body) => (capture.status.or_else(|| code_of(body)), Some(body)),
        E::Failure(response) => (Some(response.status().as_u16()), None),
        E::HttpError(e) => {
            return CallError::Other(ProviderError::Transient(format!("connection to Google failed: {e}")));
        }
        E::Io(e) => return CallError::Other(ProviderError::Transient(format!("reading Google's answer failed: {e}"))),
        E::JsonDecodeError(_, e) => {
            return CallError::Other(ProviderError::Transient(format!("Google's answer could not be read: {e}")));
        }
        other => return CallError::Other(ProviderError::Permanent(format!("Google Calendar call failed: {other}"))),
    };
    let reasons: Vec<&str> = body
        .and_then(|b| b["error"]["errors"].as_array())
        .map(|errors| errors.iter().filter_map(|e| e["reason"].as_str()).collect())
        .unwrap_or_default();
    let message = body.and_then(|b| b["error"]["message"].as_str()).unwrap_or("").to_string();
    let has = |r: &str| reasons.contains(&r);
    match status.unwrap_or(0) {
        401 => CallError::Unauthorized,
        404 | 410 => CallError::NotFound,
        409 if has("duplicate") || reasons.is_empty() => CallError::Duplicate,
        429 => CallError::Other(ProviderError::RateLimited { retry_after: capture.retry_after }),
        403 if has("rateLimitExceeded") || has("userRateLimitExceeded") => {
            CallError::Other(ProviderError::RateLimited { retry_after: capture.retry_after })
        }
        // The daily quota is spent: come back much later.
        403 if has("quotaExceeded") || has("dailyLimitExceeded") => CallError::Other(ProviderError::RateLimited {
            retry_after: Some(capture.retry_after.unwrap_or(Duration::from_secs(3600))),
        }),
        403 if has("forbiddenForNonOrganizer") => CallError::Other(ProviderError::Permanent(format!(
            "Google refused to change the event because the provider's account is not its organizer ({message})"
        ))),
        403 => CallError::Other(ProviderError::Permanent(format!(
            "Google refused the request ({}): the provider may need to reconnect Google and grant calendar access",
            if message.is_empty() { "403" } else { &message }
        ))),
        400 => CallError::Other(ProviderError::Permanent(format!("Google rejected the event as invalid: {message}"))),
        s if s >= 500 => CallError::Other(ProviderError::Transient(format!("Google answered HTTP {s}"))),
        s => CallError::Other(ProviderError::Permanent(format!("Google answered HTTP {s}: {message}"))),
    }
}

fn code_of(body: &serde_json::Value) -> Option<u16> {
    body["error"]["code"].as_u64().and_then(|c| u16::try_from(c).ok())
}

fn into_provider(e: CallError) -> ProviderError {
    match e {
        CallError::Unauthorized => ProviderError::Unauthorized,
        CallError::NotFound => ProviderError::NotFound,
        CallError::Duplicate => ProviderError::Transient("Google reported a conflicting event".into()),
        CallError::Other(p) => p,
    }
}

#[async_trait::async_trait]
impl MeetingProvider for GoogleMeet {
    fn platform(&self) -> Platform {
        Platform::GoogleMeet
    }

    /// The Calendar API makes a Meet conference with the organizer's defaults: it has no field for
    /// a waiting room, recording, passcode or muting (those are the Meet REST API's, which
    /// meetingd does not use).
    fn supported_options(&self) -> &'static [MeetingOption] {
        &[]
    }

    async fn create(&self, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::creating(req);
        let event = self.new_event(req);
        let id = event.id.clone().unwrap_or_default();
        let created = match self.access().authorized(&who, |t| self.insert(t, event.clone())).await {
            Ok(created) => created,
            // Created by an earlier attempt whose answer was lost: adopt it.
            Err(CallError::Duplicate) => {
                let existing = self.access().authorized(&who, |t| self.get(t, &id)).await.map_err(into_provider)?;
                if existing.status.as_deref() == Some("cancelled") {
                    return Err(ProviderError::Permanent(format!(
                        "the Google Calendar event {id} was deleted in Google Calendar; meetingd will not reuse its id"
                    )));
                }
                tracing::info!(booking_id = %req.booking_id, event_id = %id, "adopted the Google Calendar event an earlier attempt created");
                // That attempt may have been made before the booking moved.
                let at = |t: &Option<EventDateTime>| t.as_ref().and_then(|t| t.date_time);
                if at(&existing.start) == Some(req.start) && at(&existing.end) == Some(req.end) {
                    existing
                } else {
                    self.access()
                        .authorized(&who, |t| self.patch(t, &id, schedule(req)))
                        .await
                        .map_err(into_provider)?
                }
            }
            Err(e) => return Err(into_provider(e)),
        };
        self.ready_link(&who, req, created).await
    }

    async fn update(&self, existing: &Meeting, req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let who = Who::of(existing, req.provider_user_id);
        let patch = schedule(req);
        let updated = self
            .access()
            .authorized(&who, |t| self.patch(t, &existing.external_id, patch.clone()))
            .await
            .map_err(into_provider)?;
        match conference_state(&updated) {
            Conference::Ready(link) => {
                Ok(Meeting { external_id: existing.external_id.clone(), join_url: link, account: who.account() })
            }
            _ => Ok(Meeting { account: who.account(), ..existing.clone() }),
        }
    }

    async fn delete(&self, existing: &Meeting, provider: Uuid) -> Result<(), ProviderError> {
        let who = Who::of(existing, provider);
        match self.access().authorized(&who, |t| self.remove(t, &existing.external_id)).await {
            Ok(()) | Err(CallError::NotFound) => Ok(()),
            Err(e) => Err(into_provider(e)),
        }
    }

    fn intent_id(&self, booking_id: Uuid, generation: i32) -> Option<String> {
        Some(event_id(booking_id, generation))
    }

    /// Every page of the calendar's events that have not ended, keeping those meetingd made: an
    /// id of [`event_id`]'s shape whose `extendedProperties.private.booking_id` names the same
    /// booking.
    async fn list_marked(&self, account: &Account) -> Option<Result<Vec<Marked>, ProviderError>> {
        let who = Who::of(
            &Meeting { external_id: String::new(), join_url: String::new(), account: Some(account.clone()) },
            account.user_id,
        );
        let mut marked = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let events = match self.access().authorized(&who, |t| self.list_page(t, page.clone())).await {
                Ok(events) => events,
                Err(e) => return Some(Err(into_provider(e))),
            };
            for event in events.items.unwrap_or_default() {
                if let Some(m) = marked_by_meetingd(&event) {
                    marked.push(m);
                }
            }
            match events.next_page_token {
                Some(next) if !next.is_empty() => page = Some(next),
                _ => return Some(Ok(marked)),
            }
        }
    }
}

/// The booking an event of meetingd's names, when both its id and its private property say so.
fn marked_by_meetingd(event: &Event) -> Option<Marked> {
    let id = event.id.as_deref()?;
    let rest = id.strip_prefix("meetingd")?;
    let (hex, generation) = rest.rsplit_once('g')?;
    generation.parse::<u32>().ok()?;
    let booking = Uuid::parse_str(hex).ok()?;
    let named = event.extended_properties.as_ref()?.private.as_ref()?.get("booking_id")?;
    (Uuid::parse_str(named).ok()? == booking).then(|| Marked { external_id: id.to_string(), booking_id: Some(booking) })
}

#[cfg(test)]
mod tests;
