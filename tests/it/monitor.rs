//! The connection-health monitor against the fake platforms: a dead grant found before a booking
//! needs it, a transient token-endpoint failure that marks nothing, a Google testing-mode
//! connection reported as expiring (once), an idle Teams connection renewed, and a healthy
//! connection with an expired access token refreshed quietly.

use std::sync::Arc;

use meetingd::config::Config;
use meetingd::monitor::{Monitor, Report};
use meetingd::providers::auth::Connectors;
use meetingd::providers::{Platform, ProviderDeps, Providers};
use meetingd_testkit::db::{Seeded, TestDb};
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::fake_graph::{self, FakeGraph};
use meetingd_testkit::fake_zoom::{self, FakeZoom};
use meetingd_testkit::market;
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

use crate::google::connect_google;

const JWT_SECRET: &str = "app-signing-secret-for-tests-0123456789";

fn monitor_for(config: &Config) -> Monitor {
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    let keyring = Arc::new(config.encryption.keyring().unwrap());
    let connectors = Connectors::from_config(config).unwrap();
    Monitor::new(pool, keyring, "daemon:monitor-test".into(), connectors, config)
}

struct Row {
    active: bool,
    access_token: String,
    refresh_token: Option<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn row(c: &tokio_postgres::Client, platform: Platform) -> Row {
    let r = c
        .query_one(
            "SELECT is_active, access_token, refresh_token, expires_at FROM user_meeting_integrations WHERE platform = $1",
            &[&platform.as_str()],
        )
        .await
        .unwrap();
    Row { active: r.get(0), access_token: r.get(1), refresh_token: r.get(2), expires_at: r.get(3) }
}

/// The kinds of the events written for `user`, oldest first.
async fn events(c: &tokio_postgres::Client, user: Uuid) -> Vec<String> {
    c.query("SELECT kind FROM meetingd.events WHERE user_id = $1 ORDER BY id", &[&user])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Moves the connection's consent and last refresh `days` into the past.
async fn age(c: &tokio_postgres::Client, platform: Platform, days: i32) {
    let n = c
        .execute(
            "UPDATE meetingd.integration_health h
                SET consented_at = now() - make_interval(days => $2), refreshed_at = now() - make_interval(days => $2)
               FROM user_meeting_integrations i WHERE i.id = h.integration_id AND i.platform = $1",
            &[&platform.as_str(), &days],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "the connect flow recorded the consent");
}

#[tokio::test]
async fn a_revoked_grant_is_found_before_any_booking_runs_and_reported_once() {
    let Seeded { db: _db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, 3600).await;
    let service = market::service(&c, m.provider, true, Some("google_meet")).await;
    let b = market::book(&c, service, m.customer, "confirmed").await;
    // The provider revokes meetingd's access at Google: both tokens die; the stored access token
    // has not expired by its own clock.
    google.revoke_refresh(&refresh);
    google.expire_access(&access);

    let monitor = monitor_for(&config);
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.dead, report.working), (1, 1, 0), "{report:?}");
    assert!(!row(&c, Platform::GoogleMeet).await.active, "marked needs_reconnect");
    assert_eq!(events(&c, m.provider).await, ["integration_needs_reconnect"]);
    // Found by a call as the account (401) and then the refresh Google refused.
    assert!(google.calls().iter().any(|call| call.starts_with("calendar")), "{:?}", google.calls());
    assert_eq!(google.refresh_calls(), 1);
    // No booking ran: its job waits untouched.
    assert_eq!(market::job(&c, b).await.unwrap().attempts, 0);
    assert_eq!(market::meeting(&c, b).await.link, None);

    // The next run looks at it no more: no second event.
    assert_eq!(monitor.run_once().await.unwrap(), Report::default());
    assert_eq!(events(&c, m.provider).await, ["integration_needs_reconnect"]);
}

#[tokio::test]
async fn a_token_endpoint_503_marks_nothing_and_the_next_run_tries_again() {
    let Seeded { db: _db, c, m, mut config } = TestDb::seeded().await;
    let zoom = FakeZoom::start().await;
    zoom.configure(&mut config);
    let (access, refresh) = zoom.issue();
    let new =
        market::connection(Platform::Zoom, m.provider, &access, &refresh, -60, Some("hostAbc123"), "z@example.com");
    market::store_connection(&config, new).await;
    zoom.token_chaos(vec![(1.0, fake_zoom::Fail::new(503, 0, "Service Unavailable"))]);

    let monitor = monitor_for(&config);
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.undecided, report.dead), (1, 1, 0), "{report:?}");
    let stored = row(&c, Platform::Zoom).await;
    assert!(stored.active, "a transient failure marks nothing");
    assert!(events(&c, m.provider).await.is_empty());

    // Zoom answers again: the next run (not a day later) refreshes it.
    zoom.token_chaos(vec![]);
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.refreshed), (1, 1, 1), "{report:?}");
    let after = row(&c, Platform::Zoom).await;
    assert!(after.active);
    assert_ne!(after.refresh_token, stored.refresh_token, "Zoom's rotated refresh token is stored");
    assert!(events(&c, m.provider).await.is_empty());
}

/// `GET path` of meetingd's API (its router on a local port) as `user`.
async fn api_get(config: &Config, user: Uuid, path: &str) -> Value {
    let pool = meetingd::db::pool(&config.database, 2).unwrap();
    let keyring = Arc::new(config.encryption.keyring().unwrap());
    let deps = ProviderDeps { pool: pool.clone(), keyring: keyring.clone(), actor: "daemon:monitor-test".into() };
    let providers = Providers::real(config, &deps).unwrap();
    let state = meetingd::http::AppState::new(pool, keyring, config).unwrap().with_providers(providers);
    let addr = meetingd_testkit::serve_locally(meetingd::http::router(state)).await;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"sub": user.to_string(), "exp": now + 600, "iat": now});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let response = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(jwt).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.unwrap()
}

fn google_in(list: &Value) -> Value {
    list.as_array().unwrap().iter().find(|p| p["platform"] == "google_meet").cloned().unwrap()
}

#[tokio::test]
async fn a_google_testing_connection_six_days_old_is_expiring_and_its_provider_is_told_once() {
    let Seeded { db: _db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    config.http.jwt_secret = SecretString::from(JWT_SECRET);
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, 3600).await;
    age(&c, Platform::GoogleMeet, 6).await;

    // A published app's grant has no end: active, nothing to tell.
    assert_eq!(google_in(&api_get(&config, m.provider, "/api/platforms").await)["status"], "active");
    let report = monitor_for(&config).run_once().await.unwrap();
    assert_eq!((report.working, report.warned), (1, 0), "{report:?}");
    assert!(events(&c, m.provider).await.is_empty());

    // In "Testing", the grant dies 7 days after consent: a day left, within the 2-day window.
    config.google.publishing_status = "testing".into();
    let platforms = api_get(&config, m.provider, "/api/platforms").await;
    let mine = google_in(&platforms);
    assert_eq!((mine["status"].as_str(), mine["connected"].as_bool()), (Some("expiring"), Some(true)), "{mine}");
    let by: chrono::DateTime<chrono::Utc> = mine["reconnect_by"].as_str().unwrap().parse().unwrap();
    let left = by - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::days(1), "{by}");
    let integrations = api_get(&config, m.provider, "/api/integrations").await;
    assert_eq!(integrations[0]["status"], "expiring");
    // `meetingd status` lists it, and the gauge counts it.
    let connectors = Connectors::from_config(&config).unwrap();
    let lifetimes = meetingd::monitor::Lifetimes::new(&connectors, &config.monitor).params();
    let session = meetingd::db::session(&config.database).await.unwrap();
    let status = meetingd::admin::status(session.sql(), &lifetimes).await.unwrap();
    assert_eq!(
        status.expiring.iter().map(|e| (e.user_id, e.platform.as_str())).collect::<Vec<_>>(),
        [(m.provider, "google_meet")]
    );
    let platforms = vec!["google_meet".to_string()];
    let states = meetingd::db::health::states(session.sql(), &lifetimes, &platforms).await.unwrap();
    assert_eq!(states, [("google_meet".to_string(), "expiring".to_string(), 1)]);

    let monitor = monitor_for(&config);
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.warned), (1, 1, 1), "{report:?}");
    assert_eq!(events(&c, m.provider).await, ["integration_expiring"]);
    let message: String = c
        .query_one("SELECT message FROM meetingd.events WHERE kind = 'integration_expiring'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(message.contains("Google Meet") && message.contains("reconnect"), "{message}");
    // Checked again later (its check falls due again): no second event for the same lifetime.
    c.execute("UPDATE meetingd.integration_health SET checked_at = now() - interval '1 day'", &[]).await.unwrap();
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.warned), (1, 0), "{report:?}");
    assert_eq!(events(&c, m.provider).await, ["integration_expiring"]);
    assert!(row(&c, Platform::GoogleMeet).await.active, "expiring is not dead");
}

/// A provider with a Teams connection (a work account at the fake Graph): the database, a
/// client, the market, the fake, the configuration and the connection's access token.
async fn teams_connected() -> (TestDb, tokio_postgres::Client, market::Market, FakeGraph, Config, String) {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let graph = FakeGraph::start().await;
    graph.configure(&mut config);
    let (access, refresh) = graph.issue();
    let new = market::connection(
        Platform::Teams,
        m.provider,
        &access,
        &refresh,
        3600,
        Some(fake_graph::WORK_USER_ID),
        fake_graph::WORK_EMAIL,
    );
    market::store_connection(&config, new).await;
    (db, c, m, graph, config, access)
}

#[tokio::test]
async fn an_idle_teams_connection_is_renewed_by_a_refresh_and_stays_active() {
    let (_db, c, m, graph, config, _access) = teams_connected().await;
    // 80 days without a refresh: 10 days before Microsoft's 90-day idle limit, inside the
    // 14-day warning window.
    age(&c, Platform::Teams, 80).await;
    let before = row(&c, Platform::Teams).await;

    let report = monitor_for(&config).run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.refreshed, report.warned), (1, 1, 1, 0), "{report:?}");
    assert_eq!(graph.refresh_calls(), 1);
    let after = row(&c, Platform::Teams).await;
    assert!(after.active);
    assert_ne!(after.refresh_token, before.refresh_token, "the rotated refresh token is stored");
    assert_ne!(after.access_token, before.access_token);
    assert!(events(&c, m.provider).await.is_empty(), "renewed: nothing to report");
    let idle_days: f64 = c
        .query_one(
            "SELECT EXTRACT(EPOCH FROM now() - refreshed_at)::float8 / 86400 FROM meetingd.integration_health",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(idle_days < 1.0, "the idle clock starts again: {idle_days}");
}

#[tokio::test]
async fn a_healthy_connection_with_an_expired_access_token_is_refreshed_quietly() {
    let Seeded { db: _db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, -60).await;

    let monitor = monitor_for(&config);
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.refreshed), (1, 1, 1), "{report:?}");
    assert_eq!(google.refresh_calls(), 1);
    let after = row(&c, Platform::GoogleMeet).await;
    assert!(after.active);
    assert!(after.expires_at.unwrap() > chrono::Utc::now() + chrono::Duration::minutes(30), "a fresh token stored");
    assert!(events(&c, m.provider).await.is_empty(), "nothing reported");

    // Checked just now: the next run leaves it alone; once due again, one call as the account
    // proves the fresh token works, without a refresh.
    assert_eq!(monitor.run_once().await.unwrap().checked, 0);
    c.execute("UPDATE meetingd.integration_health SET checked_at = now() - interval '13 hours'", &[]).await.unwrap();
    let report = monitor.run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.refreshed), (1, 1, 0), "{report:?}");
    assert_eq!(google.refresh_calls(), 1);
    assert!(events(&c, m.provider).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_the_monitor_at_start_one_daemon_at_a_time() {
    let Seeded { db: _db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    config.monitor.enabled = true;
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, 3600).await;
    google.revoke_refresh(&refresh);
    google.expire_access(&access);

    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(meetingd::run_with(config.clone(), meetingd::RunOptions::default(), shutdown.clone()));
    meetingd_testkit::db::eventually(
        "the monitor to find the revoked grant",
        std::time::Duration::from_secs(20),
        || async { (!row(&c, Platform::GoogleMeet).await.active).then_some(()) },
    )
    .await;
    assert_eq!(events(&c, m.provider).await, ["integration_needs_reconnect"]);
    // Its turn is recorded, so a second daemon started now leaves the run to it.
    assert_eq!(market::count(&c, "SELECT count(*) FROM meetingd.maintenance WHERE task = 'monitor'").await, 1);
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_access_token_graph_refuses_is_refreshed_and_the_connection_stays_active() {
    let (_db, c, m, graph, config, access) = teams_connected().await;
    // Valid by its own clock, refused by Graph (401 InvalidAuthenticationToken on GET /me).
    graph.expire_access(&access);

    let report = monitor_for(&config).run_once().await.unwrap();
    assert_eq!((report.checked, report.working, report.refreshed, report.undecided), (1, 1, 1, 0), "{report:?}");
    assert_eq!(graph.calls().iter().filter(|c| *c == "me").count(), 1, "{:?}", graph.calls());
    assert_eq!(graph.refresh_calls(), 1);
    assert!(row(&c, Platform::Teams).await.active);
    assert!(events(&c, m.provider).await.is_empty());
}
