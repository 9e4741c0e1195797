//! Smaller leaks and traps: what `/readyz` tells anyone who asks when the database is not usable,
//! and what `meetingd check` says about a lease that can run out mid-job and plain-http platform
//! URLs.

use std::time::Duration;

use meetingd::http::health::{Health, routes};
use meetingd_testkit::db::TestDb;

use crate::cli::{meetingd, text};

/// `/readyz` of a `Health` on `pool`, as status and body.
async fn readyz(pool: meetingd::db::Pool) -> (u16, serde_json::Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(Health { pool, listener: None, liveness: None });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    server.abort();
    (status, body)
}

#[tokio::test]
async fn readyz_names_a_database_problem_by_its_class_not_its_text() {
    let db = TestDb::migrated().await;
    let mut config = db.config();

    // Nobody listens there.
    config.database.url =
        secrecy::SecretString::from("postgres://meetingd_probe@127.0.0.1:1/secret_db_name".to_string());
    let (status, body) = readyz(meetingd::db::pool(&config.database, 1).unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["database"], "down: unavailable", "{body}");
    let shown = body.to_string();
    assert!(!shown.contains("127.0.0.1") && !shown.contains("refused") && !shown.contains("secret_db_name"), "{shown}");

    // A role the server does not know.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username("meetingd_no_such_role").unwrap();
    config.database.url = secrecy::SecretString::from(url.to_string());
    let (status, body) = readyz(meetingd::db::pool(&config.database, 1).unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["database"], "down: auth", "{body}");
    assert!(!body.to_string().contains("meetingd_no_such_role"), "{body}");

    // Every connection busy.
    let config = db.config();
    let pool = meetingd::db::pool_waiting(&config.database, 1, Some(Duration::from_millis(50))).unwrap();
    let held = pool.get().await.unwrap();
    let (status, body) = readyz(pool.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(body["database"], "down: timeout", "{body}");
    drop(held);
    let (status, body) = readyz(pool).await;
    assert_eq!((status, &body["database"]), (200, &serde_json::json!("ok")), "{body}");
}

#[tokio::test]
async fn check_reports_a_lease_shorter_than_the_slowest_job_and_plain_http_platform_urls() {
    let db = TestDb::migrated().await;
    let google = [
        ("DATABASE_URL", db.url.as_str()),
        ("MEETINGD_GOOGLE__CLIENT_ID", "client.apps.googleusercontent.com"),
        ("MEETINGD_GOOGLE__CLIENT_SECRET", "client-secret"),
    ];
    let out = meetingd(
        &["check"],
        &[
            google[0],
            google[1],
            google[2],
            ("MEETINGD_WORKER__LEASE_SECS", "120"),
            ("MEETINGD_GOOGLE__TOKEN_URL", "http://oauth.example.com/token"),
            ("MEETINGD_GOOGLE__API_BASE_URL", "http://127.0.0.1:9/calendar/v3/"),
            ("MEETINGD_JITSI__BASE_URL", "http://meet.example.org"),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    // 9 calls × 3 requests + 1 refresh = 28 requests of 15 s, plus the 5 s conference wait.
    assert!(t.contains("warn worker") && t.contains("worker.lease_secs (120 s)") && t.contains("= 425 s"), "{t}");
    assert!(!t.contains("FAIL worker"), "a short lease is a warning, not a failure: {t}");
    assert!(t.contains("google.token_url is plain http to oauth.example.com"), "{t}");
    assert!(t.contains("jitsi.base_url must be an https URL"), "room links are https only: {t}");
    assert!(!t.contains("google.api_base_url is plain http"), "loopback is fine (tests, a local proxy): {t}");

    // A lease long enough and https everywhere: nothing to report.
    let out = meetingd(&["check"], &[google[0], google[1], google[2], ("MEETINGD_WORKER__LEASE_SECS", "425")]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("FAIL") && !t.contains("worker.lease_secs"), "{t}");
    // Without Google no job calls out: the default lease is fine.
    let out = meetingd(&["check"], &[google[0], ("MEETINGD_WORKER__LEASE_SECS", "5")]);
    assert!(!text(&out).contains("worker.lease_secs"), "{}", text(&out));

    // Zoom: 9 calls × 3 requests + 1 refresh = 28 requests of 15 s; its URLs are checked too.
    let zoom = [("MEETINGD_ZOOM__CLIENT_ID", "zoom-client"), ("MEETINGD_ZOOM__CLIENT_SECRET", "zoom-secret")];
    let out = meetingd(
        &["check"],
        &[
            google[0],
            zoom[0],
            zoom[1],
            ("MEETINGD_WORKER__LEASE_SECS", "120"),
            ("MEETINGD_ZOOM__TOKEN_URL", "http://zoom.example.com/oauth/token"),
        ],
    );
    let t = text(&out);
    assert!(t.contains("slowest Zoom job") && t.contains("= 420 s"), "{t}");
    assert!(t.contains("zoom.token_url is plain http to zoom.example.com"), "{t}");
    // Both: the slower of the two names the lease it needs.
    let out = meetingd(
        &["check"],
        &[google[0], google[1], google[2], zoom[0], zoom[1], ("MEETINGD_WORKER__LEASE_SECS", "400")],
    );
    let t = text(&out);
    assert!(t.contains("slowest Google Meet job") && t.contains("= 425 s"), "{t}");
    let out = meetingd(&["check"], &[google[0], zoom[0], zoom[1], ("MEETINGD_WORKER__LEASE_SECS", "420")]);
    assert!(!text(&out).contains("worker.lease_secs"), "{}", text(&out));

    // Teams: 5 calls × 3 requests + 1 refresh = 16 requests of 15 s; its URLs are checked too.
    let out = meetingd(
        &["check"],
        &[
            google[0],
            ("MEETINGD_TEAMS__CLIENT_ID", "teams-client"),
            ("MEETINGD_TEAMS__CLIENT_SECRET", "teams-secret"),
            ("MEETINGD_WORKER__LEASE_SECS", "120"),
            ("MEETINGD_TEAMS__TOKEN_URL", "http://login.example.com/organizations/oauth2/v2.0/token"),
        ],
    );
    let t = text(&out);
    assert!(t.contains("slowest Microsoft Teams job") && t.contains("= 240 s"), "{t}");
    assert!(t.contains("teams.token_url is plain http to login.example.com"), "{t}");
}
