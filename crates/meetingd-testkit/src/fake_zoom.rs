//! An in-process fake of Zoom's OAuth token endpoint and Meetings API v2.
//!
//! It answers with Zoom's documented JSON shapes and status codes: the token endpoint with HTTP
//! Basic client authentication and rotating refresh tokens (the old one dies at once: a second use
//! answers 400 `invalid_grant` "Invalid Token!"), meetings create (201, with a `start_url`),
//! get, patch (204), delete (204) and list (`type=scheduled|upcoming`, `page_size`, `next_page_token`), and
//! Zoom's error JSON `{"code","message"}`: 401 code 124, 404 code 3001, 429 with or without
//! `Retry-After`, the daily-limit 429, 3002 and 5xx. Failures are scripted per test, including a
//! create that is made but whose answer is lost, and a refresh likewise; or random, for the soak
//! ([`FakeZoom::chaos`], [`FakeZoom::token_chaos`]), with a journal of every call and its answer.
//! Everything stays in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "zoomTestClientId";
pub const CLIENT_SECRET: &str = "zoom-client-test-secret";

/// The message Zoom answers its daily create/update limit with.
pub const DAILY_LIMIT_MESSAGE: &str = "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests permitted for this particular user. You may resume these requests at GMT 00:00:00.";

/// A scripted failure for the next Meetings API call.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub retry_after: Option<String>,
    /// Do the work, then answer with the failure (a lost answer).
    pub after_work: bool,
}

impl Fail {
    pub fn new(status: u16, code: i64, message: &str) -> Fail {
        Fail { status, code, message: message.to_string(), retry_after: None, after_work: false }
    }

    /// 401 code 124: the access token is invalid.
    pub fn invalid_token() -> Fail {
        Fail::new(401, 124, "Invalid access token.")
    }

    /// A per-second rate limit, with `Retry-After` when `retry_after` is set.
    pub fn rate_limited(retry_after: Option<&str>) -> Fail {
        Fail {
            retry_after: retry_after.map(str::to_string),
            ..Fail::new(429, 429, "You have reached the maximum per-second rate limit for this API. Try again later.")
        }
    }

    /// The daily limit of create/update requests (no `Retry-After`).
    pub fn daily_limit() -> Fail {
        Fail::new(429, 429, DAILY_LIMIT_MESSAGE)
    }

    /// The call is carried out, but its answer never arrives (a 502 from a proxy in between).
    pub fn lost_answer() -> Fail {
        Fail { after_work: true, ..Fail::new(502, 0, "Bad Gateway") }
    }
}

#[derive(Debug, Clone)]
pub struct StoredMeeting {
    /// The meeting as `GET /meetings/{id}` answers it: what the create posted (its `settings` and
    /// `password` among it), each patch merged in (`settings` key by key, as Zoom does).
    pub body: Value,
    pub deleted: bool,
}

#[derive(Default)]
pub struct Inner {
    /// access token -> still valid
    access: HashMap<String, bool>,
    /// refresh token -> still valid (a used one dies at once)
    refresh: HashMap<String, bool>,
    pub refresh_calls: usize,
    /// Refresh grants that did not authenticate with HTTP Basic.
    pub refresh_without_basic: usize,
    /// The next this many refreshes rotate the tokens, but their answers are lost (a 502).
    pub lost_refresh_answers: usize,
    pub meetings: BTreeMap<u64, StoredMeeting>,
    pub creates: usize,
    pub calls: Vec<String>,
    script: VecDeque<Fail>,
    /// Authorization codes granted at the consent screen: code -> (PKCE challenge, redirect URI).
    codes: HashMap<String, (String, String)>,
    /// Tokens posted to the revocation endpoint (with HTTP Basic client authentication).
    pub revoked: Vec<String>,
    /// The list answers at most this many meetings a page (default: `page_size`).
    pub page_limit: Option<usize>,
    counter: u64,
    next_id: u64,
    /// Random trouble on Meetings API calls and token-endpoint failures (see [`FakeZoom::chaos`]).
    chaos: Vec<(f64, Trouble)>,
    token_chaos: Vec<(f64, Fail)>,
    /// Every call with its answer, as `journal()` gives it.
    journal: Vec<String>,
}

#[derive(Clone)]
pub struct FakeZoom {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Inner>>,
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn zoom_error(status: u16, code: i64, message: &str) -> Response {
    reply(status, json!({"code": code, "message": message}))
}

fn failure(f: &Fail) -> Response {
    let mut response = zoom_error(f.status, f.code, &f.message);
    if let Some(ra) = &f.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(ra).unwrap());
    }
    response
}

impl FakeZoom {
    pub async fn start() -> FakeZoom {
        let state = Arc::new(Mutex::new(Inner { next_id: 81_234_567_890, ..Inner::default() }));
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/oauth/revoke", post(revoke))
            .route("/v2/users/me", get(me))
            .route("/v2/users/me/meetings", post(create).get(list))
            .route("/v2/meetings/{id}", get(get_meeting).patch(patch_meeting).delete(delete_meeting))
            .layer(axum::middleware::from_fn_with_state(state.clone(), chaos_layer))
            .with_state(state.clone());
        let addr = crate::serve_locally(app).await;
        FakeZoom { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration that points meetingd's Zoom provider here.
    pub fn configure(&self, config: &mut meetingd::config::Config) {
        config.zoom.client_id = CLIENT_ID.into();
        config.zoom.client_secret = secrecy::SecretString::from(CLIENT_SECRET);
        config.zoom.auth_url = format!("{}/oauth/authorize", self.base()).parse().unwrap();
        config.zoom.token_url = format!("{}/oauth/token", self.base()).parse().unwrap();
        config.zoom.revoke_url = format!("{}/oauth/revoke", self.base()).parse().unwrap();
        config.zoom.api_base_url = format!("{}/v2/", self.base()).parse().unwrap();
        config.zoom.request_timeout_ms = 1500;
    }

    /// Issues a token pair as Zoom would at consent; returns (access, refresh).
    pub fn issue(&self) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let (access, refresh) =
            (format!("zoom-access-{}-secret", s.counter), format!("zoom-refresh-{}-secret", s.counter));
        s.access.insert(access.clone(), true);
        s.refresh.insert(refresh.clone(), true);
        (access, refresh)
    }

    /// The provider approves the consent screen for this authorization URL: returns the code
    /// Zoom would append to the redirect.
    pub fn consent(&self, authorization_url: &url::Url) -> String {
        let q: HashMap<String, String> = authorization_url.query_pairs().into_owned().collect();
        assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"), "Zoom defaults to plain");
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let code = format!("zoom-code-{}-secret", s.counter);
        s.codes.insert(code.clone(), (q["code_challenge"].clone(), q["redirect_uri"].clone()));
        code
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }

    pub fn expire_access(&self, access: &str) {
        self.state.lock().unwrap().access.insert(access.to_string(), false);
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().access.keys().cloned().collect()
    }

    /// Every access and refresh token this fake ever issued.
    pub fn all_secrets(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.access.keys().chain(s.refresh.keys()).cloned().collect()
    }

    /// Every `start_url` (the host's key) this fake ever answered.
    pub fn start_urls(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.meetings.values().filter_map(|m| m.body["start_url"].as_str().map(str::to_string)).collect()
    }

    pub fn refresh_calls(&self) -> usize {
        self.state.lock().unwrap().refresh_calls
    }

    /// The next refresh rotates the tokens at Zoom, but its answer never reaches meetingd.
    pub fn lose_next_refresh_answer(&self) {
        self.state.lock().unwrap().lost_refresh_answers += 1;
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Fail>) {
        self.state.lock().unwrap().script.extend(failures);
    }

    /// The list answers at most `n` meetings a page, so a few meetings span several pages.
    pub fn page_limit(&self, n: usize) {
        self.state.lock().unwrap().page_limit = Some(n);
    }

    pub fn live_meetings(&self) -> Vec<StoredMeeting> {
        self.state.lock().unwrap().meetings.values().filter(|m| !m.deleted).cloned().collect()
    }

    pub fn meeting(&self, id: &str) -> Option<StoredMeeting> {
        let id: u64 = id.parse().ok()?;
        self.state.lock().unwrap().meetings.get(&id).cloned()
    }

    /// Creates a meeting in the account as if someone (or an earlier attempt) had; returns its id.
    pub fn plant(&self, topic: &str, agenda: &str, start_time: &str, duration: i64) -> String {
        let mut s = self.state.lock().unwrap();
        let body = json!({"topic": topic, "agenda": agenda, "start_time": start_time, "duration": duration, "type": 2});
        new_meeting(&mut s, body).to_string()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    // Zoom's webhook requests, signed as Zoom signs them.

    /// The app's webhook Secret Token the tests configure.
    pub const WEBHOOK_SECRET_TOKEN: &str = "zoom-webhook-test-secret-token";

    /// The headers Zoom sends with a webhook `body` at `timestamp` (Unix seconds, as Zoom sends
    /// it): `x-zm-request-timestamp` and `x-zm-signature` = `v0=` + hex HMAC-SHA256 of
    /// `v0:{timestamp}:{body}` under `secret`.
    pub fn webhook_headers(secret: &str, timestamp: i64, body: &str) -> axum::http::HeaderMap {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{timestamp}:{body}").as_bytes());
        let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-zm-request-timestamp", HeaderValue::from_str(&timestamp.to_string()).unwrap());
        headers.insert("x-zm-signature", HeaderValue::from_str(&signature).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
        headers
    }

    /// An `app_deauthorized` notification for the Zoom user `user_id`, as Zoom documents it.
    pub fn deauthorization_body(user_id: &str) -> String {
        json!({
            "event": "app_deauthorized",
            "event_ts": chrono::Utc::now().timestamp_millis(),
            "payload": {
                "account_id": "zoomAccount42",
                "user_id": user_id,
                "signature": "6ecd0c1d4d7bbd5c0f0e5b0c3b9b1e0d6b2a8c1e5f4d3c2b1a09f8e7d6c5b4a3",
                "deauthorization_time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "client_id": CLIENT_ID,
            }
        })
        .to_string()
    }

    /// An `endpoint.url_validation` request carrying `plain_token`.
    pub fn url_validation_body(plain_token: &str) -> String {
        json!({"event": "endpoint.url_validation", "event_ts": chrono::Utc::now().timestamp_millis(), "payload": {"plainToken": plain_token}})
            .to_string()
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

async fn token(State(state): Shared, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    s.refresh_calls += 1;
    match basic_client(&headers) {
        Some((id, secret)) if id == CLIENT_ID && secret == CLIENT_SECRET => {}
        Some(_) => {
            return reply(401, json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}));
        }
        None => {
            s.refresh_without_basic += 1;
            return reply(401, json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}));
        }
    }
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        let code = form.get("code").cloned().unwrap_or_default();
        let Some((challenge, redirect)) = s.codes.remove(&code) else {
            return reply(400, json!({"reason": "Invalid authorization code", "error": "invalid_grant"}));
        };
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), verifier.as_bytes())),
        );
        if computed != challenge || form.get("redirect_uri") != Some(&redirect) {
            return reply(400, json!({"reason": "Invalid request", "error": "invalid_request"}));
        }
        s.counter += 1;
        let (access, refresh) =
            (format!("zoom-access-granted-{}-secret", s.counter), format!("zoom-refresh-granted-{}-secret", s.counter));
        s.access.insert(access.clone(), true);
        s.refresh.insert(refresh.clone(), true);
        return reply(
            200,
            json!({"access_token": access, "token_type": "bearer", "refresh_token": refresh, "expires_in": 3599,
                   "scope": "meeting:write:meeting meeting:update:meeting meeting:delete:meeting meeting:read:meeting meeting:read:list_meetings user:read:user"}),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return reply(400, json!({"reason": "Unsupported grant type", "error": "unsupported_grant_type"}));
    }
    let refresh = form.get("refresh_token").cloned().unwrap_or_default();
    if s.refresh.get(&refresh) != Some(&true) {
        return reply(400, json!({"reason": "Invalid Token!", "error": "invalid_grant"}));
    }
    // Rotation: the refresh token just used is dead from now on.
    s.refresh.insert(refresh, false);
    s.counter += 1;
    let access = format!("zoom-access-refreshed-{}-secret", s.counter);
    let next = format!("zoom-refresh-rotated-{}-secret", s.counter);
    s.access.insert(access.clone(), true);
    s.refresh.insert(next.clone(), true);
    if s.lost_refresh_answers > 0 {
        s.lost_refresh_answers -= 1;
        return reply(502, json!({"error": "bad_gateway"}));
    }
    reply(
        200,
        json!({"access_token": access, "token_type": "bearer", "refresh_token": next, "expires_in": 3599,
               "scope": "meeting:write:meeting meeting:update:meeting meeting:delete:meeting meeting:read:meeting meeting:read:list_meetings user:read:user"}),
    )
}

/// `token` in the query (as Zoom documents it) or the form body; the client authenticates with
/// HTTP Basic.
async fn revoke(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if basic_client(&headers) != Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string())) {
        return reply(401, json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}));
    }
    let mut guard = state.lock().unwrap();
    let s = &mut *guard;
    let token = query.get("token").or_else(|| form.get("token")).cloned().unwrap_or_default();
    s.revoked.push(token.clone());
    for map in [&mut s.access, &mut s.refresh] {
        if let Some(valid) = map.get_mut(&token) {
            *valid = false;
        }
    }
    reply(200, json!({"status": "success"}))
}

/// Authorization and scripted failures shared by the Meetings endpoints. `Ok(Some(f))`: do the
/// work, then answer with `f`.
// The `Err` is the answer itself, returned once per request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn gate(s: &mut Inner, headers: &HeaderMap, call: String) -> Result<Option<Fail>, Response> {
    s.calls.push(call);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_none_or(|t| s.access.get(t) != Some(&true)) {
        return Err(zoom_error(401, 124, "Invalid access token."));
    }
    match s.script.pop_front() {
        None => Ok(None),
        Some(f) if f.after_work => Ok(Some(f)),
        Some(f) => Err(failure(&f)),
    }
}

async fn me(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers, "me".into()) {
        return r;
    }
    reply(200, json!({"id": "hostAbc123", "email": "provider@example.com", "first_name": "Test", "type": 1}))
}

fn new_meeting(s: &mut Inner, mut body: Value) -> u64 {
    s.next_id += 7;
    s.counter += 1;
    let id = s.next_id;
    body["id"] = json!(id);
    body["uuid"] = json!(format!("uuid{}==", s.counter));
    body["host_id"] = json!("hostAbc123");
    // Asked for a passcode by the account's rules: Zoom makes one.
    if body.get("default_password") == Some(&json!(true)) && body.get("password").is_none() {
        body["password"] = json!(format!("Zd{}x7", s.counter));
    }
    body["timezone"] = body.get("timezone").cloned().unwrap_or(json!("UTC"));
    body["join_url"] = json!(format!("https://us05web.zoom.us/j/{id}?pwd=fakePwd{}", s.counter));
    body["start_url"] = json!(format!("https://us05web.zoom.us/s/{id}?zak=host-key-{}-secret", s.counter));
    body["created_at"] = json!("2026-12-06T12:00:00Z");
    s.meetings.insert(id, StoredMeeting { body, deleted: false });
    id
}

fn meeting_shape_problem(body: &Value, create: bool) -> Option<String> {
    if create && body["type"] != json!(2) {
        return Some("type must be 2 (scheduled)".into());
    }
    if let Some(t) = body.get("start_time") {
        let t = t.as_str().unwrap_or_default();
        if !(t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok()) {
            return Some(format!("start_time {t:?} is not yyyy-MM-ddTHH:mm:ssZ"));
        }
    }
    if body.get("topic").and_then(Value::as_str).is_some_and(|t| t.chars().count() > 200) {
        return Some("topic is longer than 200 characters".into());
    }
    if body.get("agenda").and_then(Value::as_str).is_some_and(|a| a.chars().count() > 2000) {
        return Some("agenda is longer than 2000 characters".into());
    }
    // Zoom's passcode rule: at most 10 characters of [A-Za-z0-9@-_*].
    if let Some(p) = body.get("password") {
        let ok = |p: &str| p.len() <= 10 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"@-_*".contains(&b));
        if !p.as_str().is_some_and(ok) {
            return Some("Invalid parameter: password.".into());
        }
    }
    None
}

async fn create(State(state): Shared, headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    let after = match gate(&mut s, &headers, "create".into()) {
        Ok(after) => after,
        Err(r) => return r,
    };
    if let Some(problem) = meeting_shape_problem(&body, true) {
        return zoom_error(400, 300, &problem);
    }
    s.creates += 1;
    let id = new_meeting(&mut s, body);
    if let Some(f) = after {
        return failure(&f);
    }
    reply(201, s.meetings[&id].body.clone())
}

async fn list(State(state): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers, format!("list {}", q.get("next_page_token").cloned().unwrap_or_default())) {
        return r;
    }
    // `scheduled`: every unexpired meeting, past ones included (a scheduled meeting expires 30
    // days after its start); `upcoming`: only those whose start is still ahead.
    let now = chrono::Utc::now();
    let listed: fn(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) -> bool =
        match q.get("type").map(String::as_str) {
            Some("scheduled") => |start, now| start + chrono::Duration::days(30) > now,
            Some("upcoming") => |start, now| start > now,
            _ => return zoom_error(400, 300, "Invalid field: type"),
        };
    let size: usize = q.get("page_size").and_then(|p| p.parse().ok()).unwrap_or(30).min(300);
    let size = s.page_limit.map_or(size, |l| l.min(size));
    let after: u64 =
        q.get("next_page_token").and_then(|t| t.strip_prefix("after-")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let start_of =
        |m: &StoredMeeting| m.body["start_time"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
    let live: Vec<(&u64, &StoredMeeting)> = s
        .meetings
        .range(after + 1..)
        .filter(|(_, m)| !m.deleted && start_of(m).is_some_and(|start| listed(start, now)))
        .collect();
    let page: Vec<Value> = live
        .iter()
        .take(size)
        .map(|(_, m)| {
            let mut item = m.body.clone();
            // The list leaves out the host's key.
            item.as_object_mut().unwrap().remove("start_url");
            item
        })
        .collect();
    let next = if live.len() > size { format!("after-{}", live[size - 1].0) } else { String::new() };
    reply(200, json!({"page_size": size, "total_records": live.len(), "next_page_token": next, "meetings": page}))
}

// The `Err` is the answer itself, returned once per request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn find(s: &Inner, id: &str) -> Result<u64, Response> {
    match id.parse::<u64>() {
        Ok(n) if s.meetings.get(&n).is_some_and(|m| !m.deleted) => Ok(n),
        _ => Err(zoom_error(404, 3001, &format!("Meeting does not exist: {id}."))),
    }
}

async fn get_meeting(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers, format!("get {id}")) {
        return r;
    }
    match find(&s, &id) {
        Ok(n) => reply(200, s.meetings[&n].body.clone()),
        Err(r) => r,
    }
}

async fn patch_meeting(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    let after = match gate(&mut s, &headers, format!("patch {id}")) {
        Ok(after) => after,
        Err(r) => return r,
    };
    let n = match find(&s, &id) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Some(problem) = meeting_shape_problem(&patch, false) {
        return zoom_error(400, 300, &problem);
    }
    let meeting = s.meetings.get_mut(&n).unwrap();
    for (k, v) in patch.as_object().into_iter().flatten() {
        match (k.as_str(), v.as_object(), meeting.body.get_mut(k).and_then(Value::as_object_mut)) {
            ("settings", Some(given), Some(kept)) => kept.extend(given.clone()),
            _ => meeting.body[k] = v.clone(),
        }
    }
    if let Some(f) = after {
        return failure(&f);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_meeting(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    let after = match gate(&mut s, &headers, format!("delete {id}")) {
        Ok(after) => after,
        Err(r) => return r,
    };
    let n = match find(&s, &id) {
        Ok(n) => n,
        Err(r) => return r,
    };
    s.meetings.get_mut(&n).unwrap().deleted = true;
    if let Some(f) = after {
        return failure(&f);
    }
    StatusCode::NO_CONTENT.into_response()
}

// Random trouble for the soak: one middleware in front of every route draws it, so the handlers
// above stay as Zoom answers when nothing goes wrong.

/// Random trouble for one Meetings API call (see `chaos.rs`). A code 124 also expires the access
/// token it was given, as Zoom's "invalid access token" means.
pub type Trouble = crate::chaos::Trouble<Fail>;

impl FakeZoom {
    /// Random trouble on every Meetings API call from now on: one draw per call over the
    /// `(probability, trouble)` rules; a call that meets none goes on as usual (scripted failures
    /// included). An empty list stops it.
    pub fn chaos(&self, rules: Vec<(f64, Trouble)>) {
        self.state.lock().unwrap().chaos = rules;
    }

    /// Random failures of the token endpoint, answered before it does anything. A failure after
    /// the work would lose a rotated refresh token, which leaves the provider to reconnect: that
    /// is scripted where a test wants it (`lose_next_refresh_answer`), never random.
    pub fn token_chaos(&self, rules: Vec<(f64, Fail)>) {
        assert!(rules.iter().all(|(_, f)| !f.after_work), "the token endpoint's random failures do nothing first");
        self.state.lock().unwrap().token_chaos = rules;
    }

    /// Every call so far: time, method, path, the meeting marker its body carries, the status
    /// answered and the trouble it met. No token or body is quoted.
    pub fn journal(&self) -> Vec<String> {
        self.state.lock().unwrap().journal.clone()
    }
}

/// The first meeting marker (`[meetingd …]`) in `text` (an agenda, a request body), if any.
pub fn marker_in(text: &str) -> Option<&str> {
    let start = text.find("[meetingd ")?;
    let end = start + text[start..].find(']')?;
    Some(&text[start..=end])
}

/// In front of every route: draws the call's trouble (the one place chaos is drawn), acts it out
/// around the handler, and journals the call with its answer.
async fn chaos_layer(State(state): Shared, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let call = match std::str::from_utf8(&bytes).ok().and_then(marker_in) {
        Some(mark) => format!("{} {path} {mark}", parts.method),
        None => format!("{} {path}", parts.method),
    };
    let trouble = {
        let mut s = state.lock().unwrap();
        let trouble = if path == "/oauth/token" {
            crate::chaos::draw(&s.token_chaos).map(Trouble::Fail)
        } else if path.starts_with("/v2/") {
            crate::chaos::draw(&s.chaos)
        } else {
            None
        };
        if let Some(Trouble::Fail(f)) = &trouble
            && f.code == 124
            && let Some(bearer) = parts.headers.get("authorization").and_then(|v| v.to_str().ok())
            && let Some(token) = bearer.strip_prefix("Bearer ")
        {
            s.access.insert(token.to_string(), false);
        }
        trouble
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let note = |status: StatusCode, what: &str| {
        let at = chrono::Utc::now().format("%H:%M:%S%.3f");
        state.lock().unwrap().journal.push(format!("{at} {call} -> {}{what}", status.as_u16()));
    };
    crate::chaos::act_out(trouble, request, next, |f| f.after_work, failure, note).await
}
