//! Zoom's webhook (`POST /api/webhooks/zoom`) over HTTP against real PostgreSQL and the fake
//! Zoom: signature and timestamp checks, URL validation, and App Deauthorized wiping the account's
//! tokens, telling the provider and moving its Zoom bookings to the fallback.

use std::sync::Arc;

use hmac::Mac;
use meetingd::config::Config;
use meetingd::providers::Platform;
use meetingd::worker::Worker;
use meetingd_testkit::db::{Seeded, TestDb};
use meetingd_testkit::fake_zoom::FakeZoom;
use meetingd_testkit::market::{self, Market, job, meeting};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

use crate::google::worker_for;

const SECRET: &str = FakeZoom::WEBHOOK_SECRET_TOKEN;
const ZOOM_USER: &str = "hostAbc123";

struct W {
    _db: TestDb,
    c: tokio_postgres::Client,
    m: Market,
    zoom: FakeZoom,
    config: Config,
    worker: Worker,
    service: Uuid,
    url: String,
    http: reqwest::Client,
}

/// Stores a Zoom connection of `user` to the Zoom user `zoom_user`, as meetingd's connect flow
/// would (tokens encrypted).
async fn connect_zoom(config: &Config, zoom: &FakeZoom, user: Uuid, zoom_user: &str) {
    let (access, refresh) = zoom.issue();
    let email = format!("{zoom_user}@example.com");
    let new = market::connection(Platform::Zoom, user, &access, &refresh, 3600, Some(zoom_user), &email);
    market::store_connection(config, new).await;
}

/// The API's router alone, served on 127.0.0.1 for the test (the worker is driven by hand).
async fn serve_api(config: &Config) -> String {
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    let keyring = Arc::new(config.encryption.keyring().unwrap());
    let state = meetingd::http::AppState::new(pool, keyring, config).unwrap();
    let addr = meetingd_testkit::serve_locally(meetingd::http::router(state)).await;
    format!("http://{addr}")
}

async fn setup_with(adjust: impl FnOnce(&mut Config)) -> W {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let zoom = FakeZoom::start().await;
    zoom.configure(&mut config);
    config.zoom.webhook_secret_token = SecretString::from(SECRET);
    config.http.jwt_secret = SecretString::from("app-signing-secret-for-tests-0123456789");
    adjust(&mut config);
    let service = market::service(&c, m.provider, true, Some("zoom")).await;
    connect_zoom(&config, &zoom, m.provider, ZOOM_USER).await;
    let worker = worker_for(&config);
    let base = serve_api(&config).await;
    W {
        _db: db,
        c,
        m,
        zoom,
        config,
        worker,
        service,
        url: format!("{base}/api/webhooks/zoom"),
        http: reqwest::Client::new(),
    }
}

async fn setup() -> W {
    setup_with(|_| {}).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What a provider's Zoom integration holds: (active, access ciphertext, refresh ciphertext,
/// expiry set).
type Stored = (bool, String, Option<String>, bool);

impl W {
    /// Sends `body` with the headers Zoom would send at `timestamp`, signed with `secret`.
    async fn send_signed(&self, secret: &str, timestamp: i64, body: &str) -> reqwest::Response {
        self.send(FakeZoom::webhook_headers(secret, timestamp, body), body).await
    }

    async fn send(&self, headers: reqwest::header::HeaderMap, body: &str) -> reqwest::Response {
        self.http.post(&self.url).headers(headers).body(body.to_string()).send().await.unwrap()
    }

    async fn deauthorize(&self, zoom_user: &str) -> reqwest::Response {
        self.send_signed(SECRET, now(), &FakeZoom::deauthorization_body(zoom_user)).await
    }

    async fn stored(&self, user: Uuid) -> Stored {
        let r = self
            .c
            .query_one(
                "SELECT is_active, access_token, refresh_token, expires_at IS NOT NULL
                   FROM user_meeting_integrations WHERE user_id = $1 AND platform = 'zoom'",
                &[&user],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }

    async fn reconnect_events(&self) -> i64 {
        market::count(&self.c, "SELECT count(*) FROM meetingd.events WHERE kind = 'integration_needs_reconnect'").await
    }

    async fn deauthorize_audits(&self) -> i64 {
        market::count(
            &self.c,
            "SELECT count(*) FROM meetingd.audit_log WHERE action = 'integration.deauthorize' AND actor = 'zoom-webhook'",
        )
        .await
    }
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn url_validation_is_answered_with_the_hmac_of_the_plain_token() {
    let w = setup().await;
    let body = FakeZoom::url_validation_body("qgg8vlvZRS6UYooatFL8Aw");
    let response = w.send_signed(SECRET, now(), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(answer["encryptedToken"], hmac_hex(SECRET, "qgg8vlvZRS6UYooatFL8Aw"));

    // Zoom signs the validation request too: one it did not sign gets no answer.
    let response = w.send_signed("not-the-secret", now(), &body).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unsigned_missigned_or_stale_requests_are_refused_and_change_nothing() {
    let w = setup().await;
    let before = w.stored(w.m.provider).await;
    assert!(before.0 && !before.1.is_empty() && before.2.is_some(), "connected");
    let body = FakeZoom::deauthorization_body(ZOOM_USER);
    let signed = FakeZoom::webhook_headers(SECRET, now(), &body);

    let mut cases: Vec<(&str, reqwest::header::HeaderMap, String)> = Vec::new();
    cases.push(("another secret", FakeZoom::webhook_headers("not-the-secret", now(), &body), body.clone()));
    cases.push(("another body", signed.clone(), FakeZoom::deauthorization_body("someoneElse")));
    let mut no_signature = signed.clone();
    no_signature.remove("x-zm-signature");
    cases.push(("no signature", no_signature, body.clone()));
    let mut no_timestamp = signed.clone();
    no_timestamp.remove("x-zm-request-timestamp");
    cases.push(("no timestamp", no_timestamp, body.clone()));
    cases.push(("six minutes old", FakeZoom::webhook_headers(SECRET, now() - 360, &body), body.clone()));
    cases.push(("six minutes ahead", FakeZoom::webhook_headers(SECRET, now() + 360, &body), body.clone()));
    for (what, headers, body) in cases {
        let response = w.send(headers, &body).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(response).await, "unauthenticated", "{what}");
    }
    assert_eq!(w.stored(w.m.provider).await, before, "the integration keeps its tokens");
    assert_eq!(w.reconnect_events().await, 0);
    assert_eq!(w.deauthorize_audits().await, 0);

    // A fresh, correctly signed request with a millisecond timestamp is Zoom's too.
    let ms = chrono::Utc::now().timestamp_millis();
    let body = FakeZoom::url_validation_body("abc");
    assert_eq!(w.send_signed(SECRET, ms, &body).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn app_deauthorized_wipes_the_account_tells_the_provider_and_moves_its_bookings_to_the_fallback() {
    let w = setup().await;
    // Another provider with another Zoom account, which must stay as it is.
    let other = market::user(&w.c, "provider").await;
    connect_zoom(&w.config, &w.zoom, other, "hostOther999").await;
    let other_before = w.stored(other).await;

    let b = market::book(&w.c, w.service, w.m.customer, "confirmed").await;
    let past = market::book(&w.c, w.service, w.m.customer, "confirmed").await;
    w.worker.run_once().await.unwrap();
    let state = meeting(&w.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("zoom")), "{state:?}");
    // One booking already took place: it is left as it is.
    w.c.execute(
        "UPDATE bookings SET start_time = now() - interval '2 hours', end_time = now() - interval '1 hour' WHERE id = $1",
        &[&past],
    )
    .await
    .unwrap();
    w.worker.run_once().await.unwrap();
    let past_job = job(&w.c, past).await.unwrap();
    let done = job(&w.c, b).await.unwrap();
    assert_eq!(done.state, "done");

    let response = w.deauthorize(ZOOM_USER).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (active, access, refresh, expires) = w.stored(w.m.provider).await;
    assert!(!active, "the integration is inactive");
    assert_eq!((access.as_str(), refresh, expires), ("", None, false), "the tokens are wiped");
    assert_eq!(w.stored(other).await, other_before, "another Zoom account is untouched");
    let told: Vec<(Uuid, String, String)> = w
        .c
        .query("SELECT user_id, platform, message FROM meetingd.events WHERE kind = 'integration_needs_reconnect'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0].0, told[0].1.as_str()), (w.m.provider, "zoom"));
    assert!(told[0].2.contains("Reconnect Zoom"), "{}", told[0].2);
    assert_eq!(w.deauthorize_audits().await, 1);
    let rearmed = job(&w.c, b).await.unwrap();
    assert_eq!(rearmed.state, "pending", "the upcoming Zoom booking is re-armed");
    assert!(rearmed.version > done.version, "a run that read the booking before is fenced off");
    assert_eq!(job(&w.c, past).await.unwrap(), past_job, "a past booking is left alone");

    w.worker.run_once().await.unwrap();
    let state = meeting(&w.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("jitsi")), "{state:?}");
    assert_eq!(job(&w.c, b).await.unwrap().state, "done");
    let orphaned = market::count(&w.c, "SELECT count(*) FROM meetingd.orphaned_meetings WHERE platform = 'zoom'").await;
    assert_eq!(orphaned, 1, "the Zoom meeting is out of reach, and reported");

    // Zoom delivers again (it retries): nothing more happens.
    let after_first = (w.stored(w.m.provider).await, job(&w.c, b).await.unwrap());
    let response = w.deauthorize(ZOOM_USER).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((w.stored(w.m.provider).await, job(&w.c, b).await.unwrap()), after_first);
    assert_eq!(w.reconnect_events().await, 1, "no second event");
    assert_eq!(w.deauthorize_audits().await, 1);
}

#[tokio::test]
async fn app_deauthorized_also_wipes_the_kept_copy_of_a_former_account() {
    let w = setup().await;
    // The provider moved to another Zoom account: meetingd kept the first one's credentials.
    w.c.execute("UPDATE user_meeting_integrations SET platform_user_id = 'hostNew456' WHERE platform = 'zoom'", &[])
        .await
        .unwrap();
    let current = w.stored(w.m.provider).await;
    let kept = "SELECT count(*) FROM meetingd.retired_integrations
                 WHERE platform_user_id = 'hostAbc123' AND is_active AND access_token <> '' AND refresh_token IS NOT NULL";
    assert_eq!(market::count(&w.c, kept).await, 1);

    assert_eq!(w.deauthorize(ZOOM_USER).await.status(), StatusCode::OK);
    let wiped = "SELECT count(*) FROM meetingd.retired_integrations
                  WHERE platform_user_id = 'hostAbc123' AND NOT is_active AND access_token = ''
                    AND refresh_token IS NULL AND expires_at IS NULL";
    assert_eq!(market::count(&w.c, wiped).await, 1, "the former account's tokens are gone");
    assert_eq!(w.stored(w.m.provider).await, current, "the account connected now is another one");
    assert_eq!(w.reconnect_events().await, 0, "nothing to reconnect");
    assert_eq!(w.deauthorize_audits().await, 1);
}

#[tokio::test]
async fn a_late_deauthorization_leaves_a_connection_made_after_it() {
    let w = setup().await;
    // The provider removed the app ten minutes ago and has connected again since; Zoom's
    // delivery of the removal arrives only now.
    let mut body: serde_json::Value = serde_json::from_str(&FakeZoom::deauthorization_body(ZOOM_USER)).unwrap();
    let then = chrono::Utc::now() - chrono::Duration::minutes(10);
    body["payload"]["deauthorization_time"] = then.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into();
    let before = w.stored(w.m.provider).await;
    assert_eq!(w.send_signed(SECRET, now(), &body.to_string()).await.status(), StatusCode::OK);
    assert_eq!(w.stored(w.m.provider).await, before, "the new connection stays");
    assert_eq!(w.reconnect_events().await, 0);
    // Delivered on time (the removal after the connection): wiped.
    body["payload"]["deauthorization_time"] =
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into();
    assert_eq!(w.send_signed(SECRET, now(), &body.to_string()).await.status(), StatusCode::OK);
    assert!(!w.stored(w.m.provider).await.0);
    assert_eq!(w.reconnect_events().await, 1);
}

#[tokio::test]
async fn unknown_accounts_other_events_and_junk_are_answered_without_changes() {
    let w = setup().await;
    let before = w.stored(w.m.provider).await;

    assert_eq!(w.deauthorize("nobodyWeKnow").await.status(), StatusCode::OK);
    let other_event = r#"{"event":"meeting.started","event_ts":1,"payload":{"account_id":"a","object":{"id":"1"}}}"#;
    assert_eq!(w.send_signed(SECRET, now(), other_event).await.status(), StatusCode::OK);
    for junk in
        ["not json", "{}", r#"{"event":"app_deauthorized","payload":{}}"#, r#"{"event":"endpoint.url_validation"}"#]
    {
        let response = w.send_signed(SECRET, now(), junk).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{junk}");
        assert_eq!(error_code(response).await, "invalid_json", "{junk}");
    }
    assert_eq!(w.stored(w.m.provider).await, before);
    assert_eq!(w.reconnect_events().await, 0);
    assert_eq!(w.deauthorize_audits().await, 0);
}

#[tokio::test]
async fn without_a_webhook_secret_token_or_a_zoom_client_the_endpoint_does_not_exist() {
    for (what, adjust) in [
        (
            "no secret token",
            Box::new(|c: &mut Config| c.zoom.webhook_secret_token = SecretString::from(""))
                as Box<dyn FnOnce(&mut Config)>,
        ),
        ("no Zoom client", Box::new(|c: &mut Config| c.zoom.client_id = String::new())),
    ] {
        let w = setup_with(adjust).await;
        let response = w.deauthorize(ZOOM_USER).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}");
        assert_eq!(error_code(response).await, "not_found", "{what}");
        assert!(w.stored(w.m.provider).await.0, "{what}");
    }
}

#[tokio::test]
async fn the_endpoint_is_in_the_openapi_document_without_a_bearer_token() {
    let w = setup().await;
    let base = w.url.trim_end_matches("/api/webhooks/zoom");
    let doc: Value = w.http.get(format!("{base}/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let post = &doc["paths"]["/api/webhooks/zoom"]["post"];
    assert_eq!(post["tags"][0], "webhooks", "{post}");
    assert!(post.get("security").is_none(), "Zoom sends no bearer token: {post}");
    for status in ["200", "400", "401", "404"] {
        assert!(post["responses"][status]["description"].is_string(), "{status} described: {post}");
    }
    assert!(doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == "webhooks"));
}

#[tokio::test]
async fn neither_the_secret_token_nor_a_body_reaches_the_log() {
    let (captured, _guard) = meetingd_testkit::logs::capture_trace();
    let w = setup().await;
    let validation = FakeZoom::url_validation_body("plainTokenValue123");
    let deauthorization = FakeZoom::deauthorization_body(ZOOM_USER);
    assert_eq!(w.send_signed(SECRET, now(), &validation).await.status(), StatusCode::OK);
    assert_eq!(w.send_signed("wrong", now(), &deauthorization).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.send_signed(SECRET, now() - 900, &deauthorization).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.send_signed(SECRET, now(), "not json at all").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(w.deauthorize(ZOOM_USER).await.status(), StatusCode::OK);
    assert!(!w.stored(w.m.provider).await.0);

    let text = captured.text();
    assert!(text.contains("Zoom webhook request refused"), "the capture works: {text}");
    assert!(text.contains("Zoom app deauthorized"), "{text}");
    for secret in [SECRET, validation.as_str(), deauthorization.as_str(), "plainTokenValue123", "not json at all"] {
        assert!(!text.contains(secret), "a log line contains {secret}: {text}");
    }
    assert!(!text.contains(&hmac_hex(SECRET, "plainTokenValue123")));
}
