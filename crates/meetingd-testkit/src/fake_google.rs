//! An in-process fake of Google's OAuth token endpoint and Calendar events API.
//!
//! It answers with Google's documented JSON shapes and status codes: events.insert (with
//! client-chosen ids, 409 `duplicate`, `conferenceDataVersion=1` required for a conference, pending
//! conferences), events.get/patch/delete (404 `notFound`, 410 `deleted`), the usual error bodies
//! (401 `authError`, 403/429 rate limits with `Retry-After`, 5xx `backendError`), and the token
//! endpoint's `invalid_grant` / `invalid_client`. Failures are scripted per test (or random, for
//! the soak), and so are a consent that grants fewer scopes and a hostile Meet link. Its consent
//! screen (`/auth`, [`consent`]) approves at once and redirects back, as Google does, for a browser. It keeps everything in memory and talks to no real Google.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

mod consent;

pub const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "GOCSPX-test-secret";

/// The Google account tokens act for unless issued for another.
pub const DEFAULT_ACCOUNT: &str = "provider@example.com";

/// A scripted failure for the next Calendar call.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: u16,
    pub reason: &'static str,
    pub retry_after: Option<String>,
    /// Do the work, then answer with the failure (a lost response).
    pub after_work: bool,
    /// Answer only after this long (past meetingd's timeout, for timeout tests).
    pub delay: Option<Duration>,
}

impl Fail {
    pub fn status(status: u16, reason: &'static str) -> Fail {
        Fail { status, reason, retry_after: None, after_work: false, delay: None }
    }
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub body: Value,
    pub deleted: bool,
    /// The Google account whose calendar holds it: other accounts' tokens get 404 for it.
    pub owner: String,
    /// events.get calls left before a pending conference succeeds.
    pending_gets: u32,
}

#[derive(Default)]
pub struct Inner {
    /// access token -> still valid
    access: HashMap<String, bool>,
    /// access or refresh token -> the Google account it acts for
    accounts: HashMap<String, String>,
    /// refresh token -> revoked
    refresh: HashMap<String, bool>,
    pub refresh_calls: usize,
    pub events: HashMap<String, StoredEvent>,
    pub inserts: usize,
    pub calls: Vec<String>,
    /// Every Calendar call as it arrived: when, and the Google account its token acts for.
    pub timed_calls: Vec<(std::time::Instant, String)>,
    script: VecDeque<Fail>,
    /// Random failures: (probability, failure), checked on every Calendar call.
    chaos: Vec<(f64, Fail)>,
    /// New conferences stay pending for this many gets.
    pub pending_gets: u32,
    counter: u64,
    /// Makes every refresh slow, so concurrent refreshes overlap.
    pub refresh_delay: Option<Duration>,
    /// Authorization codes granted at the consent screen: code -> (PKCE challenge, redirect URI).
    codes: HashMap<String, (String, String)>,
    /// Tokens posted to the revocation endpoint.
    pub revoked: Vec<String>,
    /// Every Calendar call takes this long before it answers (a benchmark's slow platform).
    pub latency: Option<Duration>,
    /// The `scope` the authorization-code grant answers (default: the Calendar events scope);
    /// `Some(None)` leaves the field out.
    pub granted_scope: Option<Option<String>>,
    /// The Meet link new conferences get instead of a real-looking one (a hostile platform).
    pub meet_link: Option<String>,
}

impl Inner {
    fn link(&self, n: u64) -> String {
        self.meet_link.clone().unwrap_or_else(|| meet_link(n))
    }
}

#[derive(Clone)]
pub struct FakeGoogle {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Inner>>,
}

fn google_error(status: u16, reason: &str, message: &str) -> Value {
    json!({"error": {"errors": [{"domain": "global", "reason": reason, "message": message}], "code": status, "message": message}})
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn failure(f: &Fail) -> Response {
    let message = match f.reason {
        "rateLimitExceeded" | "userRateLimitExceeded" => "Rate Limit Exceeded",
        "quotaExceeded" => "Calendar usage limits exceeded.",
        "forbiddenForNonOrganizer" => "Shared properties can only be changed by the organizer of the event.",
        "backendError" => "Backend Error",
        _ => "Bad Request",
    };
    let mut response = reply(f.status, google_error(f.status, f.reason, message));
    if let Some(ra) = &f.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(ra).unwrap());
    }
    response
}

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/auth", get(consent::authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/calendar/v3/calendars/{cal}", get(calendar))
            .route("/calendar/v3/calendars/{cal}/events", post(insert).get(list_events))
            .route("/calendar/v3/calendars/{cal}/events/{id}", get(get_event).patch(patch_event).delete(delete_event))
            .with_state(state.clone());
        let addr = crate::serve_locally(app).await;
        FakeGoogle { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration that points meetingd's Google provider here.
    pub fn configure(&self, config: &mut meetingd::config::Config) {
        config.google.client_id = CLIENT_ID.into();
        config.google.client_secret = secrecy::SecretString::from(CLIENT_SECRET);
        config.google.token_url = format!("{}/token", self.base()).parse().unwrap();
        config.google.auth_url = format!("{}/auth", self.base()).parse().unwrap();
        config.google.revoke_url = format!("{}/revoke", self.base()).parse().unwrap();
        config.google.api_base_url = format!("{}/calendar/v3/", self.base()).parse().unwrap();
        config.google.request_timeout_ms = 1500;
        config.google.conference_wait_ms = 1000;
    }

    /// Issues a token pair as Google would at consent; returns (access, refresh).
    pub fn issue(&self) -> (String, String) {
        self.issue_for(DEFAULT_ACCOUNT)
    }

    /// Issues a token pair of the Google account `account` (its own calendar).
    pub fn issue_for(&self, account: &str) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let (access, refresh) =
            (format!("ya29.a0-access-{}-secret", s.counter), format!("1//0g-refresh-{}-secret", s.counter));
        s.access.insert(access.clone(), true);
        s.refresh.insert(refresh.clone(), false);
        s.accounts.insert(access.clone(), account.to_string());
        s.accounts.insert(refresh.clone(), account.to_string());
        (access, refresh)
    }

    /// The provider approves the consent screen for this authorization URL: returns the code
    /// Google would append to the redirect.
    pub fn consent(&self, authorization_url: &url::Url) -> String {
        let q: HashMap<String, String> = authorization_url.query_pairs().into_owned().collect();
        consent::grant(&mut self.state.lock().unwrap(), &q).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The provider unticks scopes on the consent screen: the code grant answers `scope` with
    /// this (space-separated) list, or without the field when `None`.
    pub fn grant_scope(&self, scope: Option<&str>) {
        self.state.lock().unwrap().granted_scope = Some(scope.map(str::to_string));
    }

    /// Conferences made from now on answer `link` as their Meet link (entry point and
    /// `hangoutLink`), whatever it holds.
    pub fn answer_link(&self, link: &str) {
        self.state.lock().unwrap().meet_link = Some(link.to_string());
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }

    pub fn revoke_refresh(&self, refresh: &str) {
        self.state.lock().unwrap().refresh.insert(refresh.to_string(), true);
    }

    pub fn expire_access(&self, access: &str) {
        self.state.lock().unwrap().access.insert(access.to_string(), false);
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Fail>) {
        self.state.lock().unwrap().script.extend(failures);
    }

    pub fn chaos(&self, rules: Vec<(f64, Fail)>) {
        self.state.lock().unwrap().chaos = rules;
    }

    pub fn set_pending_gets(&self, n: u32) {
        self.state.lock().unwrap().pending_gets = n;
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().access.keys().cloned().collect()
    }

    /// Every access and refresh token this fake ever issued.
    pub fn all_secrets(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.access.keys().chain(s.refresh.keys()).cloned().collect()
    }

    pub fn refresh_calls(&self) -> usize {
        self.state.lock().unwrap().refresh_calls
    }

    pub fn live_events(&self) -> Vec<StoredEvent> {
        self.state.lock().unwrap().events.values().filter(|e| !e.deleted).cloned().collect()
    }

    /// Puts an event into the default account's calendar as if someone else had made it.
    pub fn plant(&self, body: Value) {
        let id = body["id"].as_str().unwrap_or_default().to_string();
        let event = StoredEvent { body, deleted: false, owner: DEFAULT_ACCOUNT.to_string(), pending_gets: 0 };
        self.state.lock().unwrap().events.insert(id, event);
    }

    pub fn event(&self, id: &str) -> Option<StoredEvent> {
        self.state.lock().unwrap().events.get(id).cloned()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// When each Calendar call for the Google account `account` arrived, in order.
    pub fn call_times(&self, account: &str) -> Vec<std::time::Instant> {
        let s = self.state.lock().unwrap();
        s.timed_calls.iter().filter(|(_, a)| a == account).map(|(at, _)| *at).collect()
    }
}

impl StoredEvent {
    pub fn booking_id(&self) -> Option<String> {
        self.body["extendedProperties"]["private"]["booking_id"].as_str().map(str::to_string)
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

async fn token(State(state): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    let delay = state.lock().unwrap().refresh_delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut s = state.lock().unwrap();
    s.refresh_calls += 1;
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return reply(401, json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}));
    }
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        let code = form.get("code").cloned().unwrap_or_default();
        let Some((challenge, redirect)) = s.codes.remove(&code) else {
            return reply(400, json!({"error": "invalid_grant", "error_description": "Malformed auth code."}));
        };
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), verifier.as_bytes())),
        );
        if computed != challenge {
            return reply(400, json!({"error": "invalid_grant", "error_description": "Invalid code verifier."}));
        }
        if form.get("redirect_uri") != Some(&redirect) {
            return reply(400, json!({"error": "redirect_uri_mismatch", "error_description": "Bad Request"}));
        }
        s.counter += 1;
        let (access, refresh) =
            (format!("ya29.a0-granted-{}-secret", s.counter), format!("1//0g-granted-{}-secret", s.counter));
        s.access.insert(access.clone(), true);
        s.refresh.insert(refresh.clone(), false);
        let mut body = json!({"access_token": access, "expires_in": 3599, "refresh_token": refresh,
                   "scope": "https://www.googleapis.com/auth/calendar.events", "token_type": "Bearer"});
        match &s.granted_scope {
            None => {}
            Some(Some(scope)) => body["scope"] = json!(scope),
            Some(None) => {
                body.as_object_mut().unwrap().remove("scope");
            }
        }
        return reply(200, body);
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return reply(400, json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}));
    }
    let refresh = form.get("refresh_token").cloned().unwrap_or_default();
    match s.refresh.get(&refresh) {
        Some(false) => {}
        _ => {
            return reply(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            );
        }
    }
    s.counter += 1;
    let access = format!("ya29.a0-refreshed-{}-secret", s.counter);
    s.access.insert(access.clone(), true);
    let account = s.accounts.get(&refresh).cloned().unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
    s.accounts.insert(access.clone(), account);
    reply(
        200,
        json!({"access_token": access, "expires_in": 3599, "scope": "https://www.googleapis.com/auth/calendar.events", "token_type": "Bearer"}),
    )
}

async fn revoke(State(state): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    let token = form.get("token").cloned().unwrap_or_default();
    let known = s.refresh.contains_key(&token) || s.access.contains_key(&token);
    if let Some(revoked) = s.refresh.get_mut(&token) {
        *revoked = true;
    }
    if let Some(valid) = s.access.get_mut(&token) {
        *valid = false;
    }
    s.revoked.push(token);
    if known { StatusCode::OK.into_response() } else { reply(400, json!({"error": "invalid_token"})) }
}

async fn calendar(State(state): Shared, Path(cal): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = gate(&state, &headers, format!("calendar {cal}")).await {
        return r;
    }
    reply(
        200,
        json!({"kind": "calendar#calendar", "id": "provider@example.com", "summary": "provider@example.com", "timeZone": "UTC"}),
    )
}

/// Authorization and scripted failures shared by the Calendar endpoints. `Ok(Some(f))`: do the
/// work, then answer with `f`.
async fn gate(state: &Arc<Mutex<Inner>>, headers: &HeaderMap, call: String) -> Result<Option<Fail>, Response> {
    gate_as(state, headers, call).await.map(|(after, _)| after)
}

/// [`gate`], also saying which Google account the caller's token acts for.
async fn gate_as(
    state: &Arc<Mutex<Inner>>,
    headers: &HeaderMap,
    call: String,
) -> Result<(Option<Fail>, String), Response> {
    let scripted = {
        let mut s = state.lock().unwrap();
        s.calls.push(call);
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let caller = bearer.and_then(|t| s.accounts.get(t)).cloned().unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
        s.timed_calls.push((std::time::Instant::now(), caller));
        if bearer.is_none_or(|t| s.access.get(t) != Some(&true)) {
            let mut body = google_error(401, "authError", "Invalid Credentials");
            body["error"]["message"] = json!(
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."
            );
            return Err(reply(401, body));
        }
        let mut next = s.script.pop_front();
        if next.is_none() {
            let roll: f64 = rand::random();
            let mut acc = 0.0;
            for (p, f) in &s.chaos {
                acc += p;
                if roll < acc {
                    next = Some(f.clone());
                    break;
                }
            }
        }
        let account = bearer.and_then(|t| s.accounts.get(t)).cloned().unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
        (next, s.latency, account)
    };
    let (scripted, latency, account) = scripted;
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    match scripted {
        None => Ok((None, account)),
        Some(f) => {
            if let Some(d) = f.delay {
                tokio::time::sleep(d).await;
            }
            if f.after_work { Ok((Some(f), account)) } else { Err(failure(&f)) }
        }
    }
}

fn valid_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.chars().all(|c| matches!(c, 'a'..='v' | '0'..='9'))
}

async fn insert(
    State(state): Shared,
    Path(cal): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(mut event): axum::Json<Value>,
) -> Response {
    let (after, account) = match gate_as(&state, &headers, format!("insert {cal}")).await {
        Ok(gated) => gated,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let id = match event["id"].as_str() {
        Some(id) if valid_id(id) => id.to_string(),
        Some(_) => return reply(400, google_error(400, "invalid", "Invalid resource id value.")),
        None => {
            s.counter += 1;
            format!("generated{}", s.counter)
        }
    };
    if s.events.contains_key(&id) {
        return reply(409, google_error(409, "duplicate", "The requested identifier already exists."));
    }
    s.counter += 1;
    let n = s.counter;
    let pending = s.pending_gets;
    event["kind"] = json!("calendar#event");
    event["status"] = json!("confirmed");
    event["htmlLink"] = json!(format!("https://www.google.com/calendar/event?eid={id}"));
    event["organizer"] = json!({"email": "provider@example.com", "self": true});
    // Without conferenceDataVersion=1 Google silently ignores the create request.
    let wants_conference = query.get("conferenceDataVersion").map(String::as_str) == Some("1")
        && event["conferenceData"]["createRequest"].is_object();
    if wants_conference {
        let request_id = event["conferenceData"]["createRequest"]["requestId"].clone();
        let link = s.link(n);
        event["conferenceData"] = if pending > 0 {
            json!({"createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "pending"}}})
        } else {
            conference(n, &link, request_id)
        };
        if pending == 0 {
            event["hangoutLink"] = json!(link);
        }
    } else {
        event.as_object_mut().unwrap().remove("conferenceData");
    }
    s.inserts += 1;
    s.events
        .insert(id.clone(), StoredEvent { body: event.clone(), deleted: false, owner: account, pending_gets: pending });
    match after {
        Some(f) => failure(&f),
        None => reply(200, event),
    }
}

/// events.list: the caller's account's events that end after `timeMin`, not deleted, in pages
/// of `maxResults` (the page token is the offset, as opaque to the client as Google's).
async fn list_events(
    State(state): Shared,
    Path(cal): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let account = match gate_as(&state, &headers, format!("list {cal}")).await {
        Ok((_, account)) => account,
        Err(r) => return r,
    };
    let s = state.lock().unwrap();
    let after = query.get("timeMin").and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
    let mut mine: Vec<&StoredEvent> = s
        .events
        .values()
        .filter(|e| e.owner == account && !e.deleted)
        .filter(|e| {
            let end = e.body["end"]["dateTime"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
            after.is_none_or(|a| end.is_none_or(|end| end > a))
        })
        .collect();
    mine.sort_by(|a, b| a.body["id"].as_str().cmp(&b.body["id"].as_str()));
    let size = query.get("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(250).clamp(1, 2500);
    let from = query.get("pageToken").and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
    let items: Vec<Value> = mine.iter().skip(from).take(size).map(|e| e.body.clone()).collect();
    let mut body = json!({"kind": "calendar#events", "items": items});
    if from + size < mine.len() {
        body["nextPageToken"] = json!((from + size).to_string());
    }
    reply(200, body)
}

fn meet_link(n: u64) -> String {
    format!("https://meet.google.com/abc-{:04}-xyz", n % 10_000)
}

fn conference(n: u64, link: &str, request_id: Value) -> Value {
    json!({
        "createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "success"}},
        "entryPoints": [
            {"entryPointType": "video", "uri": link, "label": "meet.google.com/abc"},
            {"entryPointType": "phone", "uri": "tel:+1-555-0100", "label": "+1 555-0100", "pin": "123456"}
        ],
        "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
        "conferenceId": format!("abc-{n}")
    })
}

async fn get_event(State(state): Shared, Path((cal, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let account = match gate_as(&state, &headers, format!("get {cal} {id}")).await {
        Ok((_, account)) => account,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    s.counter += 1;
    let n = s.counter;
    let link = s.link(n);
    let Some(stored) = s.events.get_mut(&id).filter(|e| e.owner == account) else {
        return reply(404, google_error(404, "notFound", "Not Found"));
    };
    if stored.deleted {
        let mut body = stored.body.clone();
        body["status"] = json!("cancelled");
        return reply(200, body);
    }
    if stored.pending_gets > 0 {
        stored.pending_gets -= 1;
        if stored.pending_gets == 0 {
            let request_id = stored.body["conferenceData"]["createRequest"]["requestId"].clone();
            stored.body["conferenceData"] = conference(n, &link, request_id);
            stored.body["hangoutLink"] = json!(link);
        }
    }
    reply(200, stored.body.clone())
}

/// The account's event `id` that is not deleted, or Google's answer for one that is not there
/// (404) or was deleted (410), as `events.patch` and `events.delete` give them.
// The answer is the handler's response, returned at once: not worth boxing.
#[allow(clippy::result_large_err)]
fn live_event<'a>(
    events: &'a mut HashMap<String, StoredEvent>,
    id: &str,
    account: &str,
) -> Result<&'a mut StoredEvent, Response> {
    match events.get_mut(id).filter(|e| e.owner == account) {
        None => Err(reply(404, google_error(404, "notFound", "Not Found"))),
        Some(stored) if stored.deleted => Err(reply(410, google_error(410, "deleted", "Resource has been deleted"))),
        Some(stored) => Ok(stored),
    }
}

async fn patch_event(
    State(state): Shared,
    Path((cal, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    let (after, account) = match gate_as(&state, &headers, format!("patch {cal} {id}")).await {
        Ok(gated) => gated,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let stored = match live_event(&mut s.events, &id, &account) {
        Ok(stored) => stored,
        Err(r) => return r,
    };
    for key in ["summary", "description", "start", "end"] {
        if !patch[key].is_null() {
            stored.body[key] = patch[key].clone();
        }
    }
    let body = stored.body.clone();
    match after {
        Some(f) => failure(&f),
        None => reply(200, body),
    }
}

async fn delete_event(State(state): Shared, Path((cal, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let (after, account) = match gate_as(&state, &headers, format!("delete {cal} {id}")).await {
        Ok(gated) => gated,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let stored = match live_event(&mut s.events, &id, &account) {
        Ok(stored) => stored,
        Err(r) => return r,
    };
    stored.deleted = true;
    match after {
        Some(f) => failure(&f),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
