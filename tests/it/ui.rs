//! The web components in a real browser: the demo page (`http.ui_demo`) served by the daemon
//! in-process, with the fake Google and Zoom, driven through headless Chromium (see `browser`).

use std::time::Duration;

use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::fake_google::{Fail, FakeGoogle};
use meetingd_testkit::fake_zoom::FakeZoom;
use meetingd_testkit::market::{self, meeting};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod browser;

use browser::PATIENCE;

const JWT_SECRET: &str = "app-signing-secret-for-the-ui-tests-0123456789";

fn bearer(user: Uuid) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": user.to_string(), "exp": now + 3600, "iat": now});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// A service's platform and settings as stored.
async fn stored(c: &tokio_postgres::Client, service: Uuid) -> (Option<String>, Option<Value>) {
    let row = c
        .query_one("SELECT meeting_platform, meeting_settings FROM services WHERE id = $1", &[&service])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_connects_google_sets_a_platform_and_shows_links_and_failures() {
    let Some(browser) = browser::start().await else { return };
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let google = FakeGoogle::start().await;
    let zoom = FakeZoom::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = db.config();
    google.configure(&mut config);
    zoom.configure(&mut config);
    config.http.jwt_secret = SecretString::from(JWT_SECRET);
    // The demo page is the app: the callback's redirect comes back to it.
    config.http.public_url = base.parse().unwrap();
    config.http.app_url = base.parse().unwrap();
    config.http.cookie_secure = false;
    config.http.ui_demo = true;
    let shutdown = CancellationToken::new();
    let options = meetingd::RunOptions { providers: None, http_listener: Some(listener), ops_listener: None };
    let daemon = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));

    let provider = market::user(&c, "provider").await;
    let customer = market::user(&c, "customer").await;
    let service = market::service(&c, provider, true, Some("jitsi")).await;
    let linked = market::book(&c, service, customer, "pending").await;
    let failing = market::book(&c, service, customer, "pending").await;
    let http = reqwest::Client::new();
    eventually("the API to answer", Duration::from_secs(20), || async {
        http.get(format!("{base}/ui/meetingd-elements.js")).send().await.ok().map(|_| ())
    })
    .await;

    let token = bearer(provider);
    browser
        .client
        .goto(&format!("{base}/ui/#token={token}&service={service}&bookings={linked},{failing}"))
        .await
        .unwrap();
    let integrations = "meetingd-integrations";
    let google_card = r#"section[data-platform="google_meet"] .badge"#;
    browser.attr_until(integrations, google_card, "data-status", "not_connected").await;
    browser.attr_until(integrations, r#"section[data-platform="zoom"] .badge"#, "data-status", "not_connected").await;
    assert!(
        !browser.client.current_url().await.unwrap().as_str().contains(&token),
        "the token leaves the address bar at once"
    );

    // Zoom is offered but not connected: choosing it asks to connect it first.
    let selector = "meetingd-platform-selector";
    browser.shadow(selector, r#"input[value="zoom"]"#).await.click().await.unwrap();
    let prompt = browser.text_until(selector, r#"[part~="connect-prompt"]"#, |t| !t.is_empty()).await;
    assert!(prompt.contains("Connect Zoom before choosing it"), "{prompt}");
    // Saved anyway: the API's 409 sentence by the platforms, with a link to the Integrations page.
    browser.shadow(selector, r#"button[data-action="save"]"#).await.click().await.unwrap();
    let refusal = browser.text_until(selector, r#".error[data-field="platform"]"#, |t| !t.is_empty()).await;
    assert!(refusal.starts_with("Connect Zoom under Integrations"), "{refusal}");
    let page = browser.shadow(selector, r#"[part~="connect-prompt"] a"#).await.attr("href").await.unwrap();
    assert_eq!(page, Some(format!("{base}/dashboard/integrations")));

    // Connect Google: meetingd's connect, the (fake) consent screen, the callback, back here.
    browser
        .shadow(integrations, r#"button[data-action="connect"][data-platform="google_meet"]"#)
        .await
        .click()
        .await
        .unwrap();
    browser.attr_until(integrations, google_card, "data-status", "connected").await;
    let back = browser.client.current_url().await.unwrap();
    assert_eq!((back.path(), back.query()), ("/ui/", Some("connected=google_meet")));
    let notice = browser.text_until(integrations, r#"[part~="message"]"#, |t| !t.is_empty()).await;
    assert_eq!(notice, "Google Meet is connected.");
    let rows = c
        .query(
            "SELECT is_active FROM user_meeting_integrations WHERE user_id = $1 AND platform = 'google_meet'",
            &[&provider],
        )
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, bool>(0)).collect::<Vec<_>>(), [true]);

    // Google Meet for the service; a title the API refuses shows its sentence by the field.
    browser.shadow(selector, r#"input[value="google_meet"]"#).await.click().await.unwrap();
    let title = browser.shadow(selector, "#meetingd-title").await;
    title.send_keys("{guest} and {customer}").await.unwrap();
    browser.shadow(selector, r#"button[data-action="save"]"#).await.click().await.unwrap();
    let refusal = browser.text_until(selector, "#meetingd-title-error", |t| !t.is_empty()).await;
    assert!(refusal.starts_with("The meeting title template uses {guest}"), "{refusal}");
    assert_eq!(stored(&c, service).await.0.as_deref(), Some("jitsi"), "a refused change changes nothing");
    let title = browser.shadow(selector, "#meetingd-title").await;
    title.clear().await.unwrap();
    title.send_keys("{service} with {customer}").await.unwrap();
    browser.shadow(selector, r#"button[data-action="save"]"#).await.click().await.unwrap();
    let saved = browser.text_until(selector, r#"[part~="message"]"#, |t| t.starts_with("Saved")).await;
    assert_eq!(saved, "Saved: Google Meet.");
    assert_eq!(
        stored(&c, service).await,
        (Some("google_meet".into()), Some(json!({"title": "{service} with {customer}"})))
    );

    // A booking confirmed while the page is open gets its link on the page.
    let link_host = format!(r#"meetingd-meeting-link[booking-id="{linked}"]"#);
    browser.attr_until(&link_host, ".badge", "data-status", "none").await;
    market::set_status(&c, linked, "confirmed").await;
    browser.attr_until(&link_host, ".badge", "data-status", "ready").await;
    let href = browser.shadow(&link_host, r#"a[data-role="join"]"#).await.attr("href").await.unwrap();
    let m = meeting(&c, linked).await;
    assert_eq!((m.platform.as_deref(), m.link.as_deref()), (Some("google_meet"), href.as_deref()));
    assert!(href.unwrap().starts_with("https://meet.google.com/"));
    browser.shadow(&link_host, r#"button[data-action="calendar"]"#).await.click().await.unwrap();
    let downloaded = browser.text_until(&link_host, r#"[data-role="calendar-status"]"#, |t| !t.is_empty()).await;
    assert_eq!(downloaded, "Calendar file downloaded.");

    // A booking whose meeting fails shows the provider why.
    google.fail_next([Fail::status(403, "forbidden")]);
    let failing_host = format!(r#"meetingd-meeting-link[booking-id="{failing}"]"#);
    market::set_status(&c, failing, "confirmed").await;
    browser.attr_until(&failing_host, ".badge", "data-status", "failed").await;
    let sentence = browser.text_until(&failing_host, r#"[data-role="meeting-error"]"#, |t| !t.is_empty()).await;
    let m = meeting(&c, failing).await;
    assert_eq!(m.status.as_deref(), Some("failed"));
    assert_eq!(Some(sentence.as_str()), m.error.as_deref());
    assert!(sentence.contains("Google refused the request"), "{sentence}");

    let png = browser.client.screenshot().await.unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let shot = meetingd_testkit::target_tmp_dir().join("ui-demo.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    std::fs::write(&shot, &png).unwrap();
    if let Some(path) = std::env::var_os("MEETINGD_UI_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }

    browser.client.clone().close().await.unwrap();
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, daemon).await.unwrap().unwrap().unwrap();
}
