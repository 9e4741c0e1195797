//! The HTTP API against the real server on 127.0.0.1:0, real PostgreSQL and the fake Google, Zoom
//! and Microsoft Graph.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meetingd::RunError;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::fake_graph::{self, FakeGraph};
use meetingd_testkit::fake_zoom::FakeZoom;
use meetingd_testkit::market::{self, meeting};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod hardening;
mod openapi_examples;
mod service_rules;

const JWT_SECRET: &str = "app-signing-secret-for-tests-0123456789";
const APP_URL: &str = "https://app.example.com";

struct Api {
    _db: TestDb,
    c: tokio_postgres::Client,
    google: FakeGoogle,
    zoom: FakeZoom,
    graph: FakeGraph,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
    provider: Uuid,
    other_provider: Uuid,
    customer: Uuid,
    other_customer: Uuid,
    service: Uuid,
}

fn jwt(user: Uuid, exp_in_secs: i64, secret: &str) -> String {
    let claims = json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + exp_in_secs, "iat": chrono::Utc::now().timestamp()});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unsigned_jwt(user: Uuid) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + 600}).to_string());
    format!("{header}.{claims}.")
}

impl Api {
    async fn start() -> Api {
        Api::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut meetingd::config::Config)) -> Api {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        let google = FakeGoogle::start().await;
        let zoom = FakeZoom::start().await;
        let graph = FakeGraph::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = db.config();
        google.configure(&mut config);
        zoom.configure(&mut config);
        graph.configure(&mut config);
        config.http.jwt_secret = SecretString::from(JWT_SECRET);
        config.http.app_url = APP_URL.parse().unwrap();
        config.http.public_url = base.parse().unwrap();
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let options = meetingd::RunOptions { providers: None, http_listener: Some(listener), ops_listener: None };
        let task = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));
        let provider = market::user(&c, "provider").await;
        let other_provider = market::user(&c, "provider").await;
        let customer = market::user(&c, "customer").await;
        let other_customer = market::user(&c, "customer").await;
        let service = market::service(&c, provider, true, Some("google_meet")).await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let api = Api {
            _db: db,
            c,
            google,
            zoom,
            graph,
            base,
            http,
            shutdown,
            task,
            provider,
            other_provider,
            customer,
            other_customer,
            service,
        };
        eventually("the API to answer", Duration::from_secs(20), || async {
            api.http.get(format!("{}/api/openapi.json", api.base)).send().await.ok().map(|_| ())
        })
        .await;
        api
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn as_user(&self, user: Uuid) -> String {
        format!("Bearer {}", jwt(user, 600, JWT_SECRET))
    }

    async fn call(&self, method: &str, path: &str, auth: Option<String>, body: Option<Value>) -> reqwest::Response {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// connect → consent at the fake Google → callback; returns the redirect's Location.
    async fn connect_google(&self, user: Uuid) -> String {
        self.connect(user, "google-meet", |url| self.google.consent(url)).await
    }

    /// connect at `/api/auth/{segment}/connect` → `consent` at the platform → callback with the
    /// state cookie; returns the redirect's Location.
    async fn connect(&self, user: Uuid, segment: &str, consent: impl FnOnce(&url::Url) -> String) -> String {
        let response = self.call("POST", &format!("/api/auth/{segment}/connect"), Some(self.as_user(user)), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = response.headers().get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
        let body: Value = response.json().await.unwrap();
        let auth_url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
        let params: HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
        let code = consent(&auth_url);
        let state_value = cookie.split(';').next().unwrap().to_string();
        let callback =
            format!("/api/auth/{segment}/callback?code={}&state={}", urlencode(&code), urlencode(&params["state"]));
        let back = self.http.get(self.url(&callback)).header(COOKIE, state_value).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER);
        back.headers().get(LOCATION).unwrap().to_str().unwrap().to_string()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_consent_callback_stores_encrypted_tokens_and_bookings_get_meet_links() {
    let api = Api::start().await;
    // A booking that failed while Google was not connected (fallback none would fail it).
    let response = api.call("POST", "/api/auth/google-meet/connect", Some(api.as_user(api.provider)), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers().get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
    for attribute in ["__Host-meetingd_oauth_state=", "HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let body: Value = response.json().await.unwrap();
    let auth_url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
    let q: HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["scope"], "https://www.googleapis.com/auth/calendar.events");
    assert_eq!((q["access_type"].as_str(), q["prompt"].as_str()), ("offline", "consent"));
    assert_eq!(q["redirect_uri"], format!("{}/api/auth/google-meet/callback", api.base));
    assert_eq!(cookie.split(';').next().unwrap(), format!("__Host-meetingd_oauth_state={}", q["state"]));
    let stored: i64 = market::count(&api.c, "SELECT count(*) FROM meetingd.oauth_states").await;
    assert_eq!(stored, 1);
    let raw_state_stored = market::count(
        &api.c,
        &format!(
            "SELECT count(*) FROM meetingd.oauth_states WHERE state_hash = '{}' OR pkce_verifier LIKE '%{}%'",
            q["state"], q["state"]
        ),
    )
    .await;
    assert_eq!(raw_state_stored, 0, "only the state's hash is stored");

    let location = api.connect_google(api.provider).await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?connected=google_meet"));
    let row = api
        .c
        .query_one("SELECT access_token, refresh_token, platform_user_email, is_active FROM user_meeting_integrations WHERE user_id = $1", &[&api.provider])
        .await
        .unwrap();
    let (access, refresh): (String, String) = (row.get(0), row.get(1));
    assert!(!access.contains("ya29") && !refresh.contains("1//"), "tokens stored encrypted");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("provider@example.com"));
    assert!(row.get::<_, bool>(3));

    let listed: Value =
        api.call("GET", "/api/integrations", Some(api.as_user(api.provider)), None).await.json().await.unwrap();
    assert_eq!(listed[0]["platform"], "google_meet");
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["account_email"], "provider@example.com");
    assert!(!listed.to_string().contains("secret"), "no token in the listing: {listed}");

    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    eventually("Meet link", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready")).then_some(m)
    })
    .await;
    let m = meeting(&api.c, b).await;
    assert_eq!(m.platform.as_deref(), Some("google_meet"));
    assert!(m.link.unwrap().starts_with("https://meet.google.com/"));

    // Disconnect: revoked at Google, wiped here.
    let gone = api.call("DELETE", "/api/integrations/google_meet", Some(api.as_user(api.provider)), None).await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.google.revoked().len(), 1);
    assert!(api.google.revoked()[0].starts_with("1//0g-granted"), "the refresh token was revoked");
    let r = api.c.query_one("SELECT is_active, access_token FROM user_meeting_integrations", &[]).await.unwrap();
    assert_eq!((r.get::<_, bool>(0), r.get::<_, String>(1)), (false, String::new()));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_zoom_through_the_api_gets_zoom_links_and_disconnect_revokes_at_zoom() {
    let api = Api::start().await;
    let response = api.call("POST", "/api/auth/zoom/connect", Some(api.as_user(api.provider)), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let auth_url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
    assert!(auth_url.as_str().starts_with(&format!("{}/oauth/authorize?", api.zoom.base())), "{auth_url}");
    let q: HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], format!("{}/api/auth/zoom/callback", api.base));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], meetingd::providers::zoom::OAUTH.scopes.join(" "));

    // Zoom does not say who the account is: nothing is stored, the provider tries again.
    let location = api
        .connect(api.provider, "zoom", |url| {
            api.zoom.fail_next([meetingd_testkit::fake_zoom::Fail::new(503, 0, "Service unavailable")]);
            api.zoom.consent(url)
        })
        .await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?error=account_unknown"));
    assert_eq!(
        market::count(&api.c, "SELECT count(*) FROM user_meeting_integrations WHERE platform = 'zoom'").await,
        0
    );

    let location = api.connect(api.provider, "zoom", |url| api.zoom.consent(url)).await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?connected=zoom"));
    let row = api
        .c
        .query_one(
            "SELECT access_token, refresh_token, platform_user_id, platform_user_email, is_active
               FROM user_meeting_integrations WHERE user_id = $1 AND platform = 'zoom'",
            &[&api.provider],
        )
        .await
        .unwrap();
    let (access, refresh): (String, String) = (row.get(0), row.get(1));
    for secret in api.zoom.all_secrets() {
        assert!(!access.contains(&secret) && !refresh.contains(&secret), "tokens stored encrypted");
    }
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("hostAbc123"), "the account, from GET /v2/users/me");
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("provider@example.com"));
    assert!(row.get::<_, bool>(4));
    let listed: Value =
        api.call("GET", "/api/integrations", Some(api.as_user(api.provider)), None).await.json().await.unwrap();
    let zoom = listed.as_array().unwrap().iter().find(|i| i["platform"] == "zoom").expect("zoom is listed");
    assert_eq!(zoom["status"], "active");

    // A booking of the provider's Zoom service gets the meeting's join_url.
    let service = market::service(&api.c, api.provider, true, Some("zoom")).await;
    let b = market::book(&api.c, service, api.customer, "confirmed").await;
    let m = eventually("Zoom link", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready")).then_some(m)
    })
    .await;
    assert_eq!(m.platform.as_deref(), Some("zoom"));
    let live = api.zoom.live_meetings();
    assert_eq!(live.len(), 1);
    assert_eq!(m.link.as_deref(), live[0].body["join_url"].as_str());

    // Disconnect: the refresh token is revoked at Zoom, the row wiped.
    let gone = api.call("DELETE", "/api/integrations/zoom", Some(api.as_user(api.provider)), None).await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let revoked = api.zoom.revoked();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].starts_with("zoom-refresh-"), "the refresh token was revoked: {revoked:?}");
    let r = api
        .c
        .query_one("SELECT is_active, access_token FROM user_meeting_integrations WHERE platform = 'zoom'", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, bool>(0), r.get::<_, String>(1)), (false, String::new()));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_teams_refuses_a_personal_account_and_gets_teams_links_for_a_work_account() {
    let api = Api::start().await;
    let response = api.call("POST", "/api/auth/teams/connect", Some(api.as_user(api.provider)), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let auth_url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
    let tenant_authorize = format!("{}/{}/oauth2/v2.0/authorize?", api.graph.base(), fake_graph::TENANT);
    assert!(auth_url.as_str().starts_with(&tenant_authorize), "{auth_url}");
    let q: HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["scope"], "OnlineMeetings.ReadWrite offline_access User.Read");
    assert_eq!(
        (q["code_challenge_method"].as_str(), q["redirect_uri"].as_str()),
        ("S256", format!("{}/api/auth/teams/callback", api.base).as_str())
    );

    // A personal Microsoft account cannot hold online meetings: refused, nothing stored.
    let location =
        api.connect(api.provider, "teams", |url| api.graph.consent_as(url, fake_graph::PERSONAL_USER_ID)).await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?error=personal_account_unsupported"));
    let stored = market::count(&api.c, "SELECT count(*) FROM user_meeting_integrations WHERE platform = 'teams'").await;
    assert_eq!(stored, 0);

    // A work account: connected, the account from GET /me, tokens encrypted.
    let location = api.connect(api.provider, "teams", |url| api.graph.consent(url)).await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?connected=teams"));
    let row = api
        .c
        .query_one(
            "SELECT access_token, refresh_token, platform_user_id, platform_user_email, is_active
               FROM user_meeting_integrations WHERE user_id = $1 AND platform = 'teams'",
            &[&api.provider],
        )
        .await
        .unwrap();
    let (access, refresh): (String, String) = (row.get(0), row.get(1));
    for secret in api.graph.all_secrets() {
        assert!(!access.contains(&secret) && !refresh.contains(&secret), "tokens stored encrypted");
    }
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(fake_graph::WORK_USER_ID));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some(fake_graph::WORK_EMAIL));
    assert!(row.get::<_, bool>(4));

    let service = market::service(&api.c, api.provider, true, Some("teams")).await;
    let b = market::book(&api.c, service, api.customer, "confirmed").await;
    let m = eventually("Teams link", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready")).then_some(m)
    })
    .await;
    assert_eq!(m.platform.as_deref(), Some("teams"));
    assert_eq!(m.link.as_deref(), api.graph.live_meetings()[0].body["joinWebUrl"].as_str());

    // Disconnect: Microsoft has no revocation endpoint for a client; the tokens are wiped.
    let gone = api.call("DELETE", "/api/integrations/teams", Some(api.as_user(api.provider)), None).await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let r = api
        .c
        .query_one("SELECT is_active, access_token FROM user_meeting_integrations WHERE platform = 'teams'", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, bool>(0), r.get::<_, String>(1)), (false, String::new()));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platforms_lists_what_this_deployment_offers_with_the_callers_connections() {
    let api = Api::start().await;
    let platforms = |user| {
        let api = &api;
        async move {
            let r = api.call("GET", "/api/platforms", Some(api.as_user(user)), None).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap().as_array().unwrap().clone()
        }
    };
    let by_name = |list: &[Value], name: &str| list.iter().find(|p| p["platform"] == name).cloned().unwrap();
    let before = platforms(api.provider).await;
    let names: Vec<&str> = before.iter().map(|p| p["platform"].as_str().unwrap()).collect();
    assert_eq!(names, ["google_meet", "zoom", "teams", "jitsi"]);
    let zoom = by_name(&before, "zoom");
    assert_eq!((zoom["display_name"].as_str(), zoom["needs_account"].as_bool()), (Some("Zoom"), Some(true)));
    assert_eq!((zoom["connected"].as_bool(), &zoom["status"]), (Some(false), &Value::Null));
    assert_eq!(zoom["connect_path"], "/api/auth/zoom/connect");
    assert_eq!(zoom["options"], json!(["waiting_room", "recording", "passcode", "mute_on_entry"]));
    assert_eq!(by_name(&before, "teams")["options"], json!(["waiting_room", "recording", "passcode"]));
    assert_eq!(by_name(&before, "google_meet")["connect_path"], "/api/auth/google-meet/connect");
    assert_eq!(by_name(&before, "google_meet")["options"], json!([]));
    let jitsi = by_name(&before, "jitsi");
    assert_eq!((jitsi["connected"].as_bool(), jitsi["fallback"].as_bool()), (Some(true), Some(true)));
    assert_eq!(jitsi["connect_path"], Value::Null);

    // Connected, then refused by the platform: the caller's state follows.
    api.connect_google(api.provider).await;
    let google = by_name(&platforms(api.provider).await, "google_meet");
    assert_eq!((google["connected"].as_bool(), google["status"].as_str()), (Some(true), Some("active")));
    api.c.execute("UPDATE user_meeting_integrations SET is_active = false", &[]).await.unwrap();
    let google = by_name(&platforms(api.provider).await, "google_meet");
    assert_eq!((google["connected"].as_bool(), google["status"].as_str()), (Some(false), Some("needs_reconnect")));
    // Disconnected by the provider: simply not connected.
    let gone = api.call("DELETE", "/api/integrations/google_meet", Some(api.as_user(api.provider)), None).await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let google = by_name(&platforms(api.provider).await, "google_meet");
    assert_eq!((google["connected"].as_bool(), &google["status"]), (Some(false), &Value::Null));
    // Another caller sees their own (none); without a token, 401.
    let theirs = by_name(&platforms(api.customer).await, "google_meet");
    assert_eq!((theirs["connected"].as_bool(), &theirs["status"]), (Some(false), &Value::Null));
    assert_eq!(api.call("GET", "/api/platforms", None, None).await.status(), StatusCode::UNAUTHORIZED);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_platform_is_set_by_its_provider_by_the_rules_and_its_bookings_follow() {
    let api = Api::start().await;
    let path = format!("/api/services/{}/meeting", api.service);
    let put = |user, body: Value| {
        let (api, path) = (&api, &path);
        async move {
            let r = api.call("PUT", path, Some(api.as_user(user)), Some(body)).await;
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let shown: Value = api.call("GET", &path, Some(api.as_user(api.provider)), None).await.json().await.unwrap();
    assert_eq!((shown["platform"].as_str(), shown["is_online"].as_bool()), (Some("google_meet"), Some(true)));
    // Only the service's provider.
    assert_eq!(
        api.call("GET", &path, Some(api.as_user(api.other_provider)), None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.call("GET", &path, Some(api.as_user(api.customer)), None).await.status(), StatusCode::FORBIDDEN);
    let (status, _) = put(api.other_provider, json!({"platform": "jitsi"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The rules.
    let (status, e) = put(api.provider, json!({"platform": null})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("platform_required")));
    let (status, e) = put(api.provider, json!({"platform": "skype"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_platform")));
    let (status, e) = put(api.provider, json!({"platform": "zoom", "settings": {"lobby": true}})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_settings")));
    assert!(e["error"]["message"].as_str().unwrap().contains("lobby"), "{e}");
    let (status, e) = put(api.provider, json!({"platform": "teams", "settings": {"mute_on_entry": true}})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unsupported_option")));
    assert!(e["error"]["message"].as_str().unwrap().contains("mute_on_entry"), "{e}");
    let (status, e) = put(api.provider, json!({"platform": "zoom", "settings": {"waiting_room": true}})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("platform_not_connected")));
    assert_eq!(e["error"]["location"], format!("{APP_URL}/dashboard/integrations"));
    let unchanged: Value = api.call("GET", &path, Some(api.as_user(api.provider)), None).await.json().await.unwrap();
    assert_eq!(unchanged["platform"], "google_meet", "a refused change changes nothing");

    // Allowed: saved, and the upcoming booking follows.
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    eventually("the Jitsi fallback link", Duration::from_secs(20), || async {
        (meeting(&api.c, b).await.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    api.connect(api.provider, "zoom", |url| api.zoom.consent(url)).await;
    let settings = json!({"waiting_room": true, "recording": "cloud", "title": "{service} with {customer}"});
    let (status, saved) = put(api.provider, json!({"platform": "zoom", "settings": settings})).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!((saved["platform"].as_str(), saved["rearmed"].as_i64()), (Some("zoom"), Some(1)));
    let row = api
        .c
        .query_one("SELECT meeting_platform, meeting_settings FROM services WHERE id = $1", &[&api.service])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "zoom");
    assert_eq!(row.get::<_, Value>(1), settings);
    let m = eventually("the booking moves to Zoom", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.platform.as_deref() == Some("zoom") && m.status.as_deref() == Some("ready")).then_some(m)
    })
    .await;
    let live = api.zoom.live_meetings();
    assert_eq!(live.len(), 1);
    assert_eq!(m.link.as_deref(), live[0].body["join_url"].as_str());
    assert_eq!(live[0].body["settings"]["waiting_room"], true);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bookings_are_requeued_when_the_provider_connects() {
    let api = Api::start().await;
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    // Simulate a booking that failed for want of a connection.
    eventually("first reconcile", Duration::from_secs(20), || async {
        (market::job(&api.c, b).await.is_some_and(|j| j.state == "done")).then_some(())
    })
    .await;
    api.c.execute("UPDATE meetingd.jobs SET state = 'failed'", &[]).await.unwrap();
    api.c
        .execute("UPDATE bookings SET meeting_status = 'failed', meeting_link = NULL WHERE id = $1", &[&b])
        .await
        .unwrap();
    api.c.execute("DELETE FROM meetingd.meetings", &[]).await.unwrap();
    api.connect_google(api.provider).await;
    eventually("re-queued booking linked on Google", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.platform.as_deref() == Some("google_meet") && m.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refuses_replayed_foreign_missing_and_denied_states() {
    let api = Api::start().await;
    let start = |user| {
        let api = &api;
        async move {
            let r = api.call("POST", "/api/auth/google-meet/connect", Some(api.as_user(user)), None).await;
            let cookie = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap().split(';').next().unwrap().to_string();
            let body: Value = r.json().await.unwrap();
            let url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
            let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
            (cookie, state, url)
        }
    };
    let back = |query: String, cookie: Option<String>| {
        let api = &api;
        async move {
            let mut req = api.http.get(api.url(&format!("/api/auth/google-meet/callback?{query}")));
            if let Some(c) = cookie {
                req = req.header(COOKIE, c);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            r.headers().get(LOCATION).unwrap().to_str().unwrap().to_string()
        }
    };
    let error = |code: &str| format!("{APP_URL}/dashboard/integrations?error={code}");

    // Denied consent.
    let (cookie, state, _) = start(api.provider).await;
    assert_eq!(
        back(format!("error=access_denied&state={}", urlencode(&state)), Some(cookie)).await,
        error("access_denied")
    );

    // A state works once; replaying it fails.
    let (cookie, state, url) = start(api.provider).await;
    let code = api.google.consent(&url);
    let query = format!("code={}&state={}", urlencode(&code), urlencode(&state));
    assert_eq!(
        back(query.clone(), Some(cookie.clone())).await,
        format!("{APP_URL}/dashboard/integrations?connected=google_meet")
    );
    assert_eq!(
        back(query.clone(), Some(cookie.clone())).await,
        error("invalid_state"),
        "a state dies with its first use"
    );

    // Without the cookie the state is refused, and left for the browser that has it.
    let (cookie, state, url) = start(api.provider).await;
    let code = api.google.consent(&url);
    let query = format!("code={}&state={}", urlencode(&code), urlencode(&state));
    assert_eq!(back(query.clone(), None).await, error("invalid_state"));
    assert_eq!(
        back(query.clone(), Some(cookie.clone())).await,
        format!("{APP_URL}/dashboard/integrations?connected=google_meet")
    );
    assert_eq!(back(query, Some(cookie)).await, error("invalid_state"), "then burnt");

    // Another user's state with this browser's cookie.
    let (my_cookie, _, _) = start(api.provider).await;
    let (_, their_state, their_url) = start(api.other_provider).await;
    let code = api.google.consent(&their_url);
    let query = format!("code={}&state={}", urlencode(&code), urlencode(&their_state));
    assert_eq!(back(query, Some(my_cookie)).await, error("invalid_state"));

    // Open-redirect attempts: extra parameters never change where the callback sends the browser.
    let (cookie, state, url) = start(api.provider).await;
    let code = api.google.consent(&url);
    let location = back(
        format!(
            "code={}&state={}&redirect_uri=https://evil.example&next=//evil.example",
            urlencode(&code),
            urlencode(&state)
        ),
        Some(cookie),
    )
    .await;
    assert_eq!(location, format!("{APP_URL}/dashboard/integrations?connected=google_meet"));
    let location =
        back("error=%2F%2Fevil.example%2F&state=x".into(), Some("__Host-meetingd_oauth_state=x".into())).await;
    assert!(location.starts_with(&format!("{APP_URL}/dashboard/integrations?error=")), "{location}");

    // Expired state.
    let (cookie, state, url) = start(api.provider).await;
    api.c.execute("UPDATE meetingd.oauth_states SET expires_at = now() - interval '1 second'", &[]).await.unwrap();
    let code = api.google.consent(&url);
    assert_eq!(
        back(format!("code={}&state={}", urlencode(&code), urlencode(&state)), Some(cookie)).await,
        error("state_expired")
    );

    assert_eq!(market::count(&api.c, "SELECT count(*) FROM user_meeting_integrations WHERE is_active").await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_matrix_over_every_endpoint() {
    let api = Api::start().await;
    let booking = market::book(&api.c, api.service, api.customer, "confirmed").await;
    #[derive(Clone, Copy, Debug)]
    enum Who {
        Provider,
        OtherProvider,
        Customer,
        OtherCustomer,
        NoToken,
        Expired,
        WrongSignature,
        AlgNone,
    }
    use Who::*;
    let auth = |who: Who| -> Option<String> {
        match who {
            Provider => Some(api.as_user(api.provider)),
            OtherProvider => Some(api.as_user(api.other_provider)),
            Customer => Some(api.as_user(api.customer)),
            OtherCustomer => Some(api.as_user(api.other_customer)),
            NoToken => None,
            Expired => Some(format!("Bearer {}", jwt(api.provider, -3600, JWT_SECRET))),
            WrongSignature => Some(format!("Bearer {}", jwt(api.provider, 600, "another-secret"))),
            AlgNone => Some(format!("Bearer {}", unsigned_jwt(api.provider))),
        }
    };
    let b = booking.to_string();
    let create = json!({"booking_id": b});
    // (method, path, body, expected status per caller in the order of `everyone`)
    let everyone = [Provider, OtherProvider, Customer, OtherCustomer, NoToken, Expired, WrongSignature, AlgNone];
    let rows: Vec<(&str, String, Option<Value>, [u16; 8])> = vec![
        ("GET", "/api/platforms".into(), None, [200, 200, 200, 200, 401, 401, 401, 401]),
        ("GET", "/api/integrations".into(), None, [200, 200, 403, 403, 401, 401, 401, 401]),
        ("POST", "/api/auth/google-meet/connect".into(), None, [200, 200, 403, 403, 401, 401, 401, 401]),
        ("DELETE", "/api/integrations/google_meet".into(), None, [404, 404, 403, 403, 401, 401, 401, 401]),
        ("POST", "/api/meetings/create".into(), Some(create.clone()), [202, 404, 403, 404, 401, 401, 401, 401]),
        ("PUT", format!("/api/meetings/{b}/update"), None, [202, 404, 403, 404, 401, 401, 401, 401]),
        ("GET", format!("/api/bookings/{b}/meeting"), None, [200, 404, 200, 404, 401, 401, 401, 401]),
        ("GET", format!("/api/bookings/{b}/calendar.ics"), None, [200, 404, 200, 404, 401, 401, 401, 401]),
        ("DELETE", format!("/api/meetings/{b}"), None, [202, 404, 403, 404, 401, 401, 401, 401]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (who, want) in everyone.iter().zip(expected) {
            let r = api.call(method, path, auth(*who), body.clone()).await;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            if status != *want {
                failures.push(format!("{method} {path} as {who:?}: {status}, wanted {want} ({text})"));
            }
            if status >= 400 {
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}"));
                assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{text}");
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_the_link_only_once_confirmed_and_providers_can_set_a_manual_link() {
    let api = Api::start().await;
    let b = market::book(&api.c, api.service, api.customer, "pending").await;
    api.c
        .execute("UPDATE bookings SET meeting_link = 'https://meet.example/early' WHERE id = $1", &[&b])
        .await
        .unwrap();
    let seen: Value = api
        .call("GET", &format!("/api/bookings/{b}/meeting"), Some(api.as_user(api.customer)), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(seen["meeting_link"].is_null(), "{seen}");
    let ics = api
        .call("GET", &format!("/api/bookings/{b}/calendar.ics"), Some(api.as_user(api.customer)), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!ics.contains("meet.example"), "{ics}");

    // The app's own link is the provider's: confirming keeps it, and now the customer sees it.
    market::set_status(&api.c, b, "confirmed").await;
    eventually("the job done", Duration::from_secs(20), || async {
        market::job(&api.c, b).await.filter(|j| j.state == "done").map(|_| ())
    })
    .await;
    assert_eq!(meeting(&api.c, b).await.link.as_deref(), Some("https://meet.example/early"));
    let seen: Value = api
        .call("GET", &format!("/api/bookings/{b}/meeting"), Some(api.as_user(api.customer)), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["meeting_link"], "https://meet.example/early");
    assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.meetings").await, 0, "no meeting made");

    // The provider asks for meetingd's meeting instead.
    let r = api.call("PUT", &format!("/api/meetings/{b}/update"), Some(api.as_user(api.provider)), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let link = eventually("link", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready")).then(|| m.link.unwrap())
    })
    .await;
    let seen: Value = api
        .call("GET", &format!("/api/bookings/{b}/meeting"), Some(api.as_user(api.customer)), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["meeting_link"], link.as_str());
    assert!(seen["meeting_error"].is_null());

    // Invalid manual links.
    for bad in
        ["http://zoom.example/j/1", "javascript:alert(1)", "https://user:pw@host.example/x", "/relative", "https://"]
    {
        let r = api
            .call(
                "PUT",
                &format!("/api/meetings/{b}/update"),
                Some(api.as_user(api.provider)),
                Some(json!({"meeting_link": bad})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let manual = "https://zoom.example.com/j/123?pwd=x";
    let r = api
        .call(
            "PUT",
            &format!("/api/meetings/{b}/update"),
            Some(api.as_user(api.provider)),
            Some(json!({"meeting_link": manual})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["meeting_status"].as_str(), v["meeting_link"].as_str()), (Some("manual"), Some(manual)));
    // The daemon removes its own meeting and leaves the manual link alone.
    eventually("the daemon's meeting deleted", Duration::from_secs(20), || async {
        (market::count(&api.c, "SELECT count(*) FROM meetingd.meetings WHERE state = 'deleted'").await == 1)
            .then_some(())
    })
    .await;
    market::reschedule_hours(&api.c, b, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = meeting(&api.c, b).await;
    assert_eq!((m.status.as_deref(), m.link.as_deref()), (Some("manual"), Some(manual)));

    // No body: back to the daemon's meeting.
    let r = api.call("PUT", &format!("/api/meetings/{b}/update"), Some(api.as_user(api.provider)), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    eventually("a new daemon meeting", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready") && m.link.as_deref() != Some(manual)).then_some(())
    })
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_json_never_5xx() {
    let api = Api::start().await;
    let auth = api.as_user(api.provider);
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("POST", "/api/meetings/create".into(), Some("{not json"), 400),
        ("POST", "/api/meetings/create".into(), Some("{\"booking_id\": \"nope\"}"), 400),
        ("POST", "/api/meetings/create".into(), Some("{\"booking\": 1}"), 400),
        ("POST", "/api/meetings/create".into(), None, 400),
        ("GET", "/api/bookings/not-a-uuid/meeting".into(), None, 400),
        ("PUT", "/api/meetings/123/update".into(), None, 400),
        ("DELETE", "/api/meetings/%00".into(), None, 400),
        ("GET", format!("/api/bookings/{}/meeting", Uuid::new_v4()), None, 404),
        ("GET", "/api/nothing-here".into(), None, 404),
        ("POST", "/api/auth/skype/connect".into(), None, 404),
        ("PATCH", "/api/integrations".into(), None, 405),
    ];
    for (method, path, body, want) in cases {
        let mut req = api.http.request(method.parse().unwrap(), api.url(&path)).header("authorization", auth.clone());
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, want, "{method} {path} {body:?}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body for {method} {path}: {text}"));
        assert!(v["error"]["code"].is_string(), "{text}");
    }
    let huge = format!("{{\"booking_id\": \"{}\", \"pad\": \"{}\"}}", Uuid::new_v4(), "x".repeat(100_000));
    let r = api
        .http
        .post(api.url("/api/meetings/create"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!api.task.is_finished());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_file_parses_field_by_field_with_an_independent_parser() {
    let api = Api::start().await;
    api.connect_google(api.provider).await;
    let title =
        "Yoga, stretching; breathing\nand rest — a very long title that goes on and on well past seventy-five octets";
    api.c
        .execute(
            "UPDATE services SET title = $2, description = 'Bring: mat, water; towel' WHERE id = $1",
            &[&api.service, &title],
        )
        .await
        .unwrap();
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    let link = eventually("link", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("ready")).then(|| m.link.unwrap())
    })
    .await;
    let fetch = |user| {
        let api = &api;
        async move {
            let r = api.call("GET", &format!("/api/bookings/{b}/calendar.ics"), Some(api.as_user(user)), None).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
            r.text().await.unwrap()
        }
    };
    let text = fetch(api.customer).await;
    for line in text.split("\r\n") {
        assert!(line.len() <= 75, "folded at 75 octets: {line:?}");
    }
    let (calendar, event) = parse(&text);
    assert_eq!(prop(&calendar, "METHOD"), "PUBLISH");
    assert_eq!(prop(&event, "UID"), format!("booking-{b}@meetingd"));
    // The `ical` crate trims the end of each physical line before unfolding, which loses a space
    // that falls at a fold; the escaping is checked on the RFC 5545 unfolding of the raw text.
    let unfolded = text.replace("\r\n ", "").replace("\r\n\t", "");
    assert!(
        unfolded.contains("\r\nSUMMARY:Yoga\\, stretching\\; breathing\\nand rest — a very long title that goes on and on well past seventy-five octets\r\n"),
        "{unfolded}"
    );
    assert!(prop(&event, "SUMMARY").starts_with("Yoga\\, stretching\\; breathing\\nand rest"));
    assert_eq!(prop(&event, "STATUS"), "CONFIRMED");
    assert_eq!(prop(&event, "LOCATION"), link);
    assert_eq!(prop(&event, "URL"), link);
    let description = unfolded.lines().find(|l| l.starts_with("DESCRIPTION:")).unwrap();
    assert!(description.contains(&format!("Join Google Meet: {link}")), "{description}");
    assert!(description.contains("Bring: mat\\, water\\; towel"), "{description}");
    assert!(link.starts_with("https://meet.google.com/"));
    assert!(prop(&event, "DTSTART").ends_with('Z') && prop(&event, "DTEND").ends_with('Z'), "UTC times");
    assert!(prop(&event, "DTSTAMP").ends_with('Z'));
    let start: chrono::DateTime<chrono::Utc> =
        api.c.query_one("SELECT start_time FROM bookings WHERE id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(prop(&event, "DTSTART"), start.format("%Y%m%dT%H%M%SZ").to_string());
    let conference = event.properties.iter().find(|p| p.name == "CONFERENCE").expect("CONFERENCE property");
    assert_eq!(conference.value.as_deref(), Some(link.as_str()));
    let params: HashMap<String, Vec<String>> = conference.params.clone().unwrap_or_default().into_iter().collect();
    assert_eq!(params["VALUE"], ["URI"]);
    let seq1: u32 = prop(&event, "SEQUENCE").parse().unwrap();

    market::reschedule_hours(&api.c, b, 2).await;
    let (_, moved) = parse(&fetch(api.customer).await);
    assert!(prop(&moved, "SEQUENCE").parse::<u32>().unwrap() > seq1, "SEQUENCE rises with a change");
    assert_eq!(prop(&moved, "UID"), format!("booking-{b}@meetingd"), "stable UID");

    market::set_status(&api.c, b, "cancelled").await;
    let text = fetch(api.customer).await;
    let (calendar, cancelled) = parse(&text);
    assert_eq!(prop(&calendar, "METHOD"), "CANCEL");
    assert_eq!(prop(&cancelled, "STATUS"), "CANCELLED");
    assert!(!text.contains("meet.google.com"), "a cancelled booking shows the customer no link");
    api.stop().await;
}

fn parse(text: &str) -> (ical::parser::ical::component::IcalCalendar, ical::parser::ical::component::IcalEvent) {
    let mut reader = ical::IcalParser::new(std::io::BufReader::new(text.as_bytes()));
    let calendar = reader.next().expect("one calendar").expect("parses");
    let event = calendar.events.first().expect("one event").clone();
    (calendar, event)
}

trait Props {
    fn props(&self) -> &Vec<ical::property::Property>;
}
impl Props for ical::parser::ical::component::IcalCalendar {
    fn props(&self) -> &Vec<ical::property::Property> {
        &self.properties
    }
}
impl Props for ical::parser::ical::component::IcalEvent {
    fn props(&self) -> &Vec<ical::property::Property> {
        &self.properties
    }
}

fn prop(c: &impl Props, name: &str) -> String {
    c.props().iter().find(|p| p.name == name).and_then(|p| p.value.clone()).unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_validates_and_lists_every_endpoint() {
    let api = Api::start().await;
    let text = api.call("GET", "/api/openapi.json", None, None).await.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let paths = spec.paths.clone().unwrap_or_default();
    for path in [
        "/api/auth/{platform}/connect",
        "/api/auth/{platform}/callback",
        "/api/platforms",
        "/api/services/{id}/meeting",
        "/api/integrations",
        "/api/integrations/{platform}",
        "/api/meetings/create",
        "/api/meetings/{booking_id}/update",
        "/api/meetings/{booking_id}",
        "/api/bookings/{booking_id}/meeting",
        "/api/bookings/{booking_id}/calendar.ics",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} documented");
    }
    // Every $ref points at a schema that exists.
    let doc: Value = serde_json::from_str(&text).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (at, needle) in text.match_indices("\"$ref\":\"#/components/schemas/") {
        let rest = &text[at + needle.len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(schemas.contains_key(name), "$ref to missing schema {name}");
    }
    // A connection's status is one of three values, in both listings.
    assert_eq!(schemas["ConnectionStatus"]["enum"], json!(["active", "expiring", "needs_reconnect"]));
    for view in ["IntegrationView", "PlatformView"] {
        assert!(schemas[view]["properties"]["status"].to_string().contains("ConnectionStatus"), "{view}");
        assert!(schemas[view]["properties"].get("reconnect_by").is_some(), "{view}");
    }
    api.stop().await;
}

#[test]
fn asymmetric_jwts_verify_with_the_public_key_and_algorithm_confusion_fails() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let user = Uuid::new_v4();
    let claims = json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + 600});
    for (name, alg) in [("RS256", Algorithm::RS256), ("ES256", Algorithm::ES256)] {
        let lower = name.to_lowercase();
        let private = std::fs::read(fixtures.join(format!("{lower}-private.pem"))).unwrap();
        let public_path = fixtures.join(format!("{lower}-public.pem"));
        let mut config = meetingd::config::Config::defaults();
        config.http.jwt_algorithm = name.into();
        config.http.jwt_public_key_file = public_path.clone();
        let verifier = meetingd::http::auth::JwtVerifier::from_config(&config.http).unwrap().expect("a verifier");
        let key = if alg == Algorithm::RS256 {
            EncodingKey::from_rsa_pem(&private)
        } else {
            EncodingKey::from_ec_pem(&private)
        }
        .unwrap();
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        assert_eq!(verifier.verify(&token), Ok(user), "{name}");
        // The classic confusion: an HS256 token keyed with the public key.
        let public = std::fs::read(&public_path).unwrap();
        let confused = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public)).unwrap();
        assert!(verifier.verify(&confused).is_err(), "{name}: HS256 with the public key refused");
        let expired = json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() - 3600});
        assert!(verifier.verify(&encode(&Header::new(alg), &expired, &key).unwrap()).is_err(), "{name}: expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_traffic_waiting_on_google_never_holds_the_workers_connections() {
    let api = Api::start_with(|c| {
        c.http.pool_size = 1;
        c.http.pool_wait_ms = 5000;
        c.google.request_timeout_ms = 10_000;
    })
    .await;
    api.google.state.lock().unwrap().refresh_delay = Some(Duration::from_secs(3));
    let api = std::sync::Arc::new(api);
    // More OAuth callbacks than the worker has connections, each waiting on Google's token endpoint.
    let callbacks: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let provider = market::user(&api.c, "provider").await;
                api.connect_google(provider).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    eventually("a booking linked while the callbacks wait", Duration::from_secs(2), || async {
        (meeting(&api.c, b).await.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    assert!(callbacks.iter().all(|c| !c.is_finished()), "linked while Google was still answering the callbacks");
    for c in callbacks {
        let location = c.await.unwrap();
        assert!(location.contains("connected=google_meet"), "{location}");
    }
}
