//! An in-process fake of the Microsoft identity platform's v2.0 token endpoint and Microsoft
//! Graph's online meetings.
//!
//! It answers with the documented JSON shapes and status codes: the token endpoint takes the
//! client secret in the form body and PKCE S256, rotates refresh tokens on every refresh (the old
//! one stays valid, as Microsoft's do), and answers errors as `{error, error_description:
//! "AADSTSnnnn: …", error_codes: [...]}`; `GET /me` tells a work account (a GUID id) from a
//! personal one (16 hex digits); `POST /me/onlineMeetings/createOrGet` answers 201 for a new
//! `externalId` and 200 with the same meeting for a known one (per user), without moving it;
//! `PATCH` answers 200 with the meeting, `DELETE` 204, a missing meeting 404; errors are
//! `{"error":{"code","message"}}`: 401 `InvalidAuthenticationToken`, 403, 429 and 503 with
//! `Retry-After`. Failures are scripted per test, including a create that is made but whose
//! answer is lost; answers can be slowed down, and the most requests ever in flight at once per
//! mailbox are counted. Random trouble for the soak ([`FakeGraph::chaos`],
//! [`FakeGraph::token_chaos`]) comes with a journal of every call and its answer. Everything stays
//! in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "00000000-aaaa-bbbb-cccc-teamsclient01";
pub const CLIENT_SECRET: &str = "teams-client-test-secret";
/// The tenant segment of the fake's endpoints.
pub const TENANT: &str = "organizations";
/// The work account every token belongs to unless issued for another.
pub const WORK_USER_ID: &str = "87d349ed-44d7-43e1-9a83-5f2406dee5bd";
pub const WORK_EMAIL: &str = "provider@contoso.example";
/// A personal Microsoft account (Outlook.com): Graph's id of it is 16 hex digits.
pub const PERSONAL_USER_ID: &str = "4d8e2c6f3b1a0e9d";

/// A scripted failure of the next Graph call.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: u16,
    pub code: String,
    pub retry_after: Option<String>,
    /// Do the work, then answer with the failure (a lost answer).
    pub after_work: bool,
}

impl Fail {
    pub fn new(status: u16, code: &str) -> Fail {
        Fail { status, code: code.to_string(), retry_after: None, after_work: false }
    }

    /// 429 (or 503) with `Retry-After` seconds.
    pub fn throttled(status: u16, retry_after: &str) -> Fail {
        Fail { retry_after: Some(retry_after.to_string()), ..Fail::new(status, "TooManyRequests") }
    }

    /// The call is carried out, but its answer never arrives (a gateway in between fails).
    pub fn lost_answer() -> Fail {
        Fail { after_work: true, ..Fail::new(504, "GatewayTimeout") }
    }
}

#[derive(Debug, Clone)]
pub struct StoredMeeting {
    /// The mailbox (Graph user id) it belongs to.
    pub owner: String,
    /// The meeting as Graph answers it.
    pub body: Value,
    pub deleted: bool,
}

#[derive(Default)]
pub struct Inner {
    /// access token -> (Graph user id, still valid)
    access: HashMap<String, (String, bool)>,
    /// refresh token -> (Graph user id, still valid)
    refresh: HashMap<String, (String, bool)>,
    pub refresh_calls: usize,
    /// The next refreshes answer `invalid_grant` with these AADSTS codes.
    refresh_errors: VecDeque<(String, i64)>,
    pub meetings: BTreeMap<u64, StoredMeeting>,
    pub calls: Vec<String>,
    script: VecDeque<Fail>,
    /// Authorization codes: code -> (PKCE challenge, redirect URI, Graph user id).
    codes: HashMap<String, (String, String, String)>,
    /// Each answer of a Graph call waits this long.
    pub delay: Duration,
    in_flight: HashMap<String, usize>,
    /// The most Graph calls in flight at once for one mailbox.
    pub most_in_flight: usize,
    counter: u64,
    /// Random trouble on Graph calls and token-endpoint failures (see [`FakeGraph::chaos`]).
    chaos: Vec<(f64, Trouble)>,
    token_chaos: Vec<(f64, Fail)>,
    /// Every call with its answer, as `journal()` gives it.
    journal: Vec<String>,
}

#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Inner>>,
}

type Shared = State<Arc<Mutex<Inner>>>;

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    reply(status, json!({"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}}))
}

fn identity_error(error: &str, code: i64, description: &str) -> Response {
    reply(
        400,
        json!({"error": error, "error_description": format!("AADSTS{code}: {description}"), "error_codes": [code],
               "timestamp": "2026-12-06 12:00:00Z", "trace_id": "fake", "correlation_id": "fake"}),
    )
}

fn failure(f: &Fail) -> Response {
    let mut response = graph_error(f.status, &f.code, "Scripted failure.");
    if let Some(ra) = &f.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(ra).unwrap());
    }
    response
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let state = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/me", get(me))
            .route("/v1.0/me/onlineMeetings/createOrGet", post(create_or_get))
            .route("/v1.0/me/onlineMeetings/{id}", patch(patch_meeting).delete(delete_meeting).get(get_meeting))
            .layer(axum::middleware::from_fn_with_state(state.clone(), chaos_layer))
            .with_state(state.clone());
        let addr = crate::serve_locally(app).await;
        FakeGraph { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration that points meetingd's Teams provider here.
    pub fn configure(&self, config: &mut meetingd::config::Config) {
        config.teams.client_id = CLIENT_ID.into();
        config.teams.client_secret = secrecy::SecretString::from(CLIENT_SECRET);
        config.teams.auth_url = format!("{}/{TENANT}/oauth2/v2.0/authorize", self.base());
        config.teams.token_url = format!("{}/{TENANT}/oauth2/v2.0/token", self.base());
        config.teams.api_base_url = format!("{}/v1.0/", self.base()).parse().unwrap();
        config.teams.request_timeout_ms = 1500;
    }

    /// Issues a token pair for the work account, as at consent; returns (access, refresh).
    pub fn issue(&self) -> (String, String) {
        self.issue_for(WORK_USER_ID)
    }

    pub fn issue_for(&self, user: &str) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let (access, refresh) = (
            format!("eyJ0eXAi.teams-access-{}-secret", s.counter),
            format!("0.AAAA-teams-refresh-{}-secret", s.counter),
        );
        s.access.insert(access.clone(), (user.to_string(), true));
        s.refresh.insert(refresh.clone(), (user.to_string(), true));
        (access, refresh)
    }

    /// The user approves the consent screen for this authorization URL as `user` (a Graph user
    /// id): returns the code the redirect carries.
    pub fn consent_as(&self, authorization_url: &url::Url, user: &str) -> String {
        let q: HashMap<String, String> = authorization_url.query_pairs().into_owned().collect();
        assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
        let scopes: Vec<&str> = q.get("scope").map(|s| s.split(' ').collect()).unwrap_or_default();
        for needed in ["OnlineMeetings.ReadWrite", "offline_access", "User.Read"] {
            assert!(scopes.contains(&needed), "scope {needed} asked for: {scopes:?}");
        }
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let code = format!("0.AQ-teams-code-{}-secret", s.counter);
        s.codes.insert(code.clone(), (q["code_challenge"].clone(), q["redirect_uri"].clone(), user.to_string()));
        code
    }

    pub fn consent(&self, authorization_url: &url::Url) -> String {
        self.consent_as(authorization_url, WORK_USER_ID)
    }

    pub fn expire_access(&self, access: &str) {
        if let Some(t) = self.state.lock().unwrap().access.get_mut(access) {
            t.1 = false;
        }
    }

    /// Every access and refresh token this fake ever issued.
    pub fn all_secrets(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.access.keys().chain(s.refresh.keys()).cloned().collect()
    }

    pub fn refresh_calls(&self) -> usize {
        self.state.lock().unwrap().refresh_calls
    }

    /// The next refresh answers `invalid_grant` with AADSTS `code` (700082: idle 90 days, 50173:
    /// grant revoked, 65001: consent removed).
    pub fn fail_next_refresh(&self, error: &str, code: i64) {
        self.state.lock().unwrap().refresh_errors.push_back((error.to_string(), code));
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Fail>) {
        self.state.lock().unwrap().script.extend(failures);
    }

    pub fn slow_answers(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    pub fn live_meetings(&self) -> Vec<StoredMeeting> {
        self.state.lock().unwrap().meetings.values().filter(|m| !m.deleted).cloned().collect()
    }

    pub fn meeting(&self, id: &str) -> Option<StoredMeeting> {
        let s = self.state.lock().unwrap();
        s.meetings.values().find(|m| m.body["id"] == id).cloned()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

fn form_client(form: &HashMap<String, String>) -> bool {
    form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
}

fn tokens_for(s: &mut Inner, user: &str) -> Value {
    s.counter += 1;
    let access = format!("eyJ0eXAi.teams-access-{}-secret", s.counter);
    let refresh = format!("0.AAAA-teams-refresh-{}-secret", s.counter);
    s.access.insert(access.clone(), (user.to_string(), true));
    s.refresh.insert(refresh.clone(), (user.to_string(), true));
    json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
           "scope": "https://graph.microsoft.com/OnlineMeetings.ReadWrite https://graph.microsoft.com/User.Read",
           "access_token": access, "refresh_token": refresh})
}

async fn token(
    State(state): Shared,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    if tenant != TENANT {
        return identity_error("invalid_request", 90002, "Tenant not found.");
    }
    if !form_client(&form) {
        return reply(
            401,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]}),
        );
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some((challenge, redirect, user)) = s.codes.remove(&code) else {
                return identity_error(
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired.",
                );
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), verifier.as_bytes())),
            );
            if computed != challenge {
                return identity_error("invalid_grant", 501481, "The Code_Verifier does not match the code_challenge.");
            }
            if form.get("redirect_uri") != Some(&redirect) {
                return identity_error("invalid_grant", 50148, "The redirect URI does not match.");
            }
            let answer = tokens_for(&mut s, &user);
            reply(200, answer)
        }
        Some("refresh_token") => {
            s.refresh_calls += 1;
            if let Some((error, code)) = s.refresh_errors.pop_front() {
                return identity_error(&error, code, "The refresh token cannot be used.");
            }
            let refresh = form.get("refresh_token").cloned().unwrap_or_default();
            let Some((user, true)) = s.refresh.get(&refresh).cloned() else {
                return identity_error("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.");
            };
            // Rotation: a new refresh token each time; the old one stays valid.
            let answer = tokens_for(&mut s, &user);
            reply(200, answer)
        }
        _ => identity_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type."),
    }
}

/// The caller's mailbox from its bearer token, and a scripted failure to answer with (after the
/// work when `Ok(Some(f))` has `after_work`).
#[allow(clippy::result_large_err)]
fn gate(s: &mut Inner, headers: &HeaderMap, call: String) -> Result<(String, Option<Fail>), Response> {
    s.calls.push(call);
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let user = match token.and_then(|t| s.access.get(t)) {
        Some((user, true)) => user.clone(),
        _ => {
            return Err(graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ));
        }
    };
    match s.script.pop_front() {
        Some(f) if f.after_work => Ok((user, Some(f))),
        Some(f) => Err(failure(&f)),
        None => Ok((user, None)),
    }
}

/// Counts the call in flight for `user` while the answer waits out the configured delay.
async fn in_flight(state: &Arc<Mutex<Inner>>, user: &str) {
    let delay = {
        let mut s = state.lock().unwrap();
        let n = s.in_flight.entry(user.to_string()).or_default();
        *n += 1;
        let now = *n;
        s.most_in_flight = s.most_in_flight.max(now);
        s.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    *state.lock().unwrap().in_flight.entry(user.to_string()).or_default() -= 1;
}

async fn me(State(state): Shared, headers: HeaderMap) -> Response {
    let user = {
        let mut s = state.lock().unwrap();
        match gate(&mut s, &headers, "me".into()) {
            Ok((user, _)) => user,
            Err(r) => return r,
        }
    };
    if user == PERSONAL_USER_ID {
        return reply(
            200,
            json!({"id": user, "displayName": "Pat", "mail": null, "userPrincipalName": "pat@outlook.com"}),
        );
    }
    reply(200, json!({"id": user, "displayName": "Test Provider", "mail": WORK_EMAIL, "userPrincipalName": WORK_EMAIL}))
}

/// `startDateTime` / `endDateTime` as Graph answers them: seven fraction digits, UTC.
fn graph_time(value: &Value) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(value.as_str()?).ok()?;
    let nine = t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S%.9f").to_string();
    Some(format!("{}Z", &nine[..nine.len() - 2]))
}

async fn create_or_get(State(state): Shared, headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> Response {
    let external = body["externalId"].as_str().unwrap_or_default().to_string();
    let (user, fail) = {
        let mut s = state.lock().unwrap();
        match gate(&mut s, &headers, format!("createOrGet {external}")) {
            Ok(found) => found,
            Err(r) => return r,
        }
    };
    in_flight(&state, &user).await;
    if user == PERSONAL_USER_ID {
        return graph_error(403, "Forbidden", "Online meetings are not supported for personal Microsoft accounts.");
    }
    if external.is_empty() {
        return graph_error(400, "BadRequest", "externalId is required.");
    }
    let mut s = state.lock().unwrap();
    let existing = s
        .meetings
        .values()
        .find(|m| !m.deleted && m.owner == user && m.body["externalId"] == external.as_str())
        .map(|m| m.body.clone());
    let (status, meeting) = match existing {
        Some(meeting) => (200, meeting),
        None => {
            s.counter += 1;
            let n = s.counter;
            let now = chrono::Utc::now();
            let start = body
                .get("startDateTime")
                .and_then(graph_time)
                .unwrap_or_else(|| graph_time(&json!(now.to_rfc3339())).unwrap());
            let end = body
                .get("endDateTime")
                .and_then(graph_time)
                .unwrap_or_else(|| graph_time(&json!((now + chrono::Duration::hours(1)).to_rfc3339())).unwrap());
            let meeting = json!({
                "id": format!("MSpkYzE3Njc0Yy04MWQ5LTRhZGItYmZiMi1mYWY3NjFlYTIwZjYqMCoqMTk6bWVldGluZ19{n}"),
                "externalId": external,
                "subject": body["subject"],
                "startDateTime": start,
                "endDateTime": end,
                "joinWebUrl": format!("https://teams.microsoft.com/l/meetup-join/19%3ameeting_{n}%40thread.v2/0?context=%7b%22Tid%22%3a%22fake%22%7d"),
                "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": false},
                "recordAutomatically": false,
                "joinMeetingIdSettings": {"isPasscodeRequired": false, "joinMeetingId": format!("{}", 3_000_000_000u64 + n)},
            });
            s.meetings.insert(n, StoredMeeting { owner: user.clone(), body: meeting.clone(), deleted: false });
            (201, meeting)
        }
    };
    match fail {
        Some(f) => failure(&f),
        None => reply(status, meeting),
    }
}

/// The meeting `id` of `user`'s, if it exists.
fn find(s: &Inner, user: &str, id: &str) -> Option<u64> {
    s.meetings.iter().find(|(_, m)| !m.deleted && m.owner == user && m.body["id"] == id).map(|(k, _)| *k)
}

fn not_found() -> Response {
    graph_error(404, "NotFound", "The requested resource does not exist.")
}

async fn get_meeting(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    let user = match gate(&mut s, &headers, format!("get {id}")) {
        Ok((user, _)) => user,
        Err(r) => return r,
    };
    match find(&s, &user, &id) {
        Some(k) => reply(200, s.meetings[&k].body.clone()),
        None => not_found(),
    }
}

async fn patch_meeting(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let (user, fail) = {
        let mut s = state.lock().unwrap();
        match gate(&mut s, &headers, format!("patch {id}")) {
            Ok(found) => found,
            Err(r) => return r,
        }
    };
    in_flight(&state, &user).await;
    // Graph wants both times together.
    if body.get("startDateTime").is_some() != body.get("endDateTime").is_some() {
        return graph_error(400, "BadRequest", "startDateTime and endDateTime must be updated together.");
    }
    let mut s = state.lock().unwrap();
    let Some(k) = find(&s, &user, &id) else { return not_found() };
    let meeting = s.meetings.get_mut(&k).unwrap();
    for (key, value) in body.as_object().into_iter().flatten() {
        let value = match key.as_str() {
            "startDateTime" | "endDateTime" => match graph_time(value) {
                Some(t) => json!(t),
                None => return graph_error(400, "BadRequest", "Invalid date."),
            },
            "externalId" | "id" | "joinWebUrl" => return graph_error(400, "BadRequest", "Property is read-only."),
            _ => value.clone(),
        };
        meeting.body[key] = value;
    }
    let answer = meeting.body.clone();
    match fail {
        Some(f) => failure(&f),
        None => reply(200, answer),
    }
}

async fn delete_meeting(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (user, fail) = {
        let mut s = state.lock().unwrap();
        match gate(&mut s, &headers, format!("delete {id}")) {
            Ok(found) => found,
            Err(r) => return r,
        }
    };
    in_flight(&state, &user).await;
    let mut s = state.lock().unwrap();
    let Some(k) = find(&s, &user, &id) else { return not_found() };
    s.meetings.get_mut(&k).unwrap().deleted = true;
    match fail {
        Some(f) => failure(&f),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

// Random trouble for the soak: one middleware in front of every route draws it, so the handlers
// above stay as Microsoft answers when nothing goes wrong.

/// Random trouble for one Graph call (see `chaos.rs`). A 401 `InvalidAuthenticationToken` also
/// expires the access token it was given.
pub type Trouble = crate::chaos::Trouble<Fail>;

impl FakeGraph {
    /// Random trouble on every Graph call from now on: one draw per call over the
    /// `(probability, trouble)` rules; a call that meets none goes on as usual (scripted failures
    /// included). An empty list stops it.
    pub fn chaos(&self, rules: Vec<(f64, Trouble)>) {
        self.state.lock().unwrap().chaos = rules;
    }

    /// Random failures of the token endpoint, answered as `temporarily_unavailable` (AADSTS50196)
    /// with the failure's status: before doing anything, or after rotating the refresh token when
    /// `after_work` (harmless here: Microsoft's old refresh token stays valid).
    pub fn token_chaos(&self, rules: Vec<(f64, Fail)>) {
        self.state.lock().unwrap().token_chaos = rules;
    }

    /// Every call so far: time, method, path, the `externalId` its body carries, the status
    /// answered and the trouble it met. No token or body is quoted.
    pub fn journal(&self) -> Vec<String> {
        self.state.lock().unwrap().journal.clone()
    }
}

/// The token endpoint's failure: `temporarily_unavailable`, as the identity platform answers it.
fn token_failure(f: &Fail) -> Response {
    let mut response = reply(
        f.status,
        json!({"error": "temporarily_unavailable", "error_codes": [50196],
               "error_description": "AADSTS50196: The server is temporarily unavailable.", "trace_id": "fake"}),
    );
    if let Some(ra) = &f.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(ra).unwrap());
    }
    response
}

/// In front of every route: draws the call's trouble (the one place chaos is drawn), acts it out
/// around the handler, and journals the call with its answer.
async fn chaos_layer(State(state): Shared, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let token_call = path.ends_with("/oauth2/v2.0/token");
    // Only a JSON body's `externalId` is quoted (the token endpoint's form holds secrets).
    let external = (!token_call)
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten()
        .and_then(|b| b["externalId"].as_str().map(str::to_string));
    let call = match external {
        Some(external) => format!("{} {path} {external}", parts.method),
        None => format!("{} {path}", parts.method),
    };
    let trouble = {
        let mut s = state.lock().unwrap();
        let trouble = if token_call {
            crate::chaos::draw(&s.token_chaos).map(Trouble::Fail)
        } else if path.starts_with("/v1.0/") {
            crate::chaos::draw(&s.chaos)
        } else {
            None
        };
        if let Some(Trouble::Fail(f)) = &trouble
            && f.status == 401
            && let Some(bearer) = parts.headers.get("authorization").and_then(|v| v.to_str().ok())
            && let Some(token) = bearer.strip_prefix("Bearer ")
            && let Some(t) = s.access.get_mut(token)
        {
            t.1 = false;
        }
        trouble
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let note = |status: StatusCode, what: &str| {
        let at = chrono::Utc::now().format("%H:%M:%S%.3f");
        state.lock().unwrap().journal.push(format!("{at} {call} -> {}{what}", status.as_u16()));
    };
    let answer_of = |f: &Fail| if token_call { token_failure(f) } else { failure(f) };
    crate::chaos::act_out(trouble, request, next, |f| f.after_work, answer_of, note).await
}
