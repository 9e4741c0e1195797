//! Google Meet end to end against the fake Google: tokens, refresh, exactly-once creation, errors.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use meetingd::config::{Config, Fallback};
use meetingd::providers::{ProviderDeps, Providers};
use meetingd::worker::Worker;
use meetingd_testkit::db::{Seeded, TestDb};
use meetingd_testkit::fake_google::{Fail, FakeGoogle};
use meetingd_testkit::market::{self, Market, audit, events, job, make_due, meeting};
use secrecy::SecretString;
use tokio::sync::Notify;
use uuid::Uuid;

pub struct G {
    pub _db: TestDb,
    pub c: tokio_postgres::Client,
    pub m: Market,
    pub google: FakeGoogle,
    pub config: Config,
    pub worker: Worker,
    pub service: Uuid,
    pub access: String,
    pub refresh: String,
}

pub fn worker_for(config: &Config) -> Worker {
    let pool = meetingd::db::pool(&config.database, 6).unwrap();
    let instance = Uuid::new_v4();
    let deps = ProviderDeps {
        pool: pool.clone(),
        keyring: Arc::new(config.encryption.keyring().unwrap()),
        actor: meetingd::worker::actor(instance),
    };
    let providers = Providers::real(config, &deps).unwrap();
    Worker::new(pool, providers, config.worker.clone(), config.fallback.platform, Arc::new(Notify::new()), instance)
}

/// Stores a Google connection for `user` whose access token expires in `expires_in_secs`.
pub async fn connect_google(config: &Config, user: Uuid, access: &str, refresh: &str, expires_in_secs: i64) {
    connect_google_as(config, user, access, refresh, expires_in_secs, meetingd_testkit::fake_google::DEFAULT_ACCOUNT)
        .await
}

/// [`connect_google`] for the Google account `email`.
pub async fn connect_google_as(
    config: &Config,
    user: Uuid,
    access: &str,
    refresh: &str,
    expires_in_secs: i64,
    email: &str,
) {
    market::store_connection(config, market::google_connection(user, access, refresh, expires_in_secs, email)).await;
}

/// Flips one character of every stored access token ciphertext.
pub async fn tamper_access_tokens(c: &tokio_postgres::Client) {
    c.execute(
        "UPDATE user_meeting_integrations
            SET access_token = overlay(access_token placing (CASE WHEN substr(access_token, 20, 1) = 'A' THEN 'B' ELSE 'A' END) from 20 for 1)",
        &[],
    )
    .await
    .unwrap();
}

pub async fn setup_with(expires_in_secs: i64, adjust: impl FnOnce(&mut Config)) -> G {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    adjust(&mut config);
    let service = market::service(&c, m.provider, true, Some("google_meet")).await;
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, expires_in_secs).await;
    let worker = worker_for(&config);
    G { _db: db, c, m, google, config, worker, service, access, refresh }
}

async fn setup() -> G {
    setup_with(3600, |_| {}).await
}

impl G {
    async fn book(&self) -> Uuid {
        market::book(&self.c, self.service, self.m.customer, "confirmed").await
    }

    async fn run(&self) {
        self.worker.run_once().await.unwrap();
    }
}

#[tokio::test]
async fn confirmed_booking_gets_a_meet_link_that_follows_reschedule_and_cancel() {
    let g = setup().await;
    let b = g.book().await;
    g.run().await;

    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(state.platform.as_deref(), Some("google_meet"));
    let link = state.link.clone().unwrap();
    assert!(link.starts_with("https://meet.google.com/"), "{link}");
    let event_id = state.meeting_id.clone().unwrap();
    assert_eq!(event_id, meetingd::providers::google::event_id(b, 1));
    let event = g.google.event(&event_id).unwrap();
    assert_eq!(event.booking_id(), Some(b.to_string()));
    assert_eq!(event.body["summary"], "Consultation with Test User");
    assert_eq!(event.body["conferenceData"]["createRequest"]["conferenceSolutionKey"]["type"], "hangoutsMeet");
    assert!(event.body["attendees"].is_null(), "customers are not invited by default");
    assert_eq!(events(&g.c, b).await[0].0, "meeting_ready");

    market::reschedule_hours(&g.c, b, 2).await;
    g.run().await;
    let moved = g.google.event(&event_id).unwrap();
    let start: chrono::DateTime<Utc> = moved.body["start"]["dateTime"].as_str().unwrap().parse().unwrap();
    let booking_start: chrono::DateTime<Utc> =
        g.c.query_one("SELECT start_time FROM bookings WHERE id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(start, booking_start);
    assert_eq!(meeting(&g.c, b).await.link.as_deref(), Some(link.as_str()), "the link stays on reschedule");

    market::set_status(&g.c, b, "cancelled").await;
    g.run().await;
    assert!(g.google.event(&event_id).unwrap().deleted);
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("deleted"));

    // Re-confirming needs a new event id: Google keeps deleted ids reserved.
    market::set_status(&g.c, b, "confirmed").await;
    g.run().await;
    let again = meeting(&g.c, b).await;
    assert_eq!(again.meeting_id.as_deref(), Some(meetingd::providers::google::event_id(b, 2).as_str()));
    assert_eq!(g.google.live_events().len(), 1);
    let calls = g.google.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("insert primary")).count(), 2, "{calls:?}");
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_stored_encrypted() {
    let g = setup_with(60, |_| {}).await;
    let b = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(g.google.refresh_calls(), 1);
    let row = g
        .c
        .query_one(
            "SELECT access_token, refresh_token, expires_at > now() + interval '50 minutes' FROM user_meeting_integrations",
            &[],
        )
        .await
        .unwrap();
    let (access_ct, refresh_ct): (String, String) = (row.get(0), row.get(1));
    assert!(row.get::<_, bool>(2), "expiry moved an hour ahead");
    assert!(!access_ct.contains("ya29") && !refresh_ct.contains("1//"), "no plaintext at rest");
    let refreshes = market::count(
        &g.c,
        "SELECT count(*) FROM meetingd.audit_log WHERE action = 'integration.refresh' AND outcome = 'ok'",
    )
    .await;
    assert_eq!(refreshes, 1);

    // The next booking uses the stored, still fresh token.
    let b2 = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b2).await.status.as_deref(), Some("ready"));
    assert_eq!(g.google.refresh_calls(), 1);
}

#[tokio::test]
async fn a_401_forces_one_refresh() {
    let g = setup().await;
    g.google.expire_access(&g.access); // Google stopped accepting it before its stated expiry
    let b = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(g.google.refresh_calls(), 1);
}

#[tokio::test]
async fn revoked_refresh_token_deactivates_tells_the_provider_and_falls_back() {
    let g = setup_with(60, |_| {}).await;
    g.google.revoke_refresh(&g.refresh);
    let b = g.book().await;
    g.run().await;

    let state = meeting(&g.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("jitsi")), "{state:?}");
    assert_eq!(job(&g.c, b).await.unwrap().state, "done", "not retried against Google");
    let active: bool = g.c.query_one("SELECT is_active FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert!(!active);
    let (kind, user, message): (String, Uuid, String) = {
        let r =
            g.c.query_one("SELECT kind, user_id, message FROM meetingd.events WHERE booking_id IS NULL", &[])
                .await
                .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((kind.as_str(), user), ("integration_needs_reconnect", g.m.provider));
    assert!(message.contains("Reconnect Google Meet"), "{message}");
    let ready = events(&g.c, b).await.remove(0).1;
    assert!(ready.contains("Jitsi Meet because Google Meet"), "{ready}");
    assert!(g.google.calls().iter().all(|c| !c.starts_with("insert")), "no event insert with a revoked account");

    // Later bookings go straight to the fallback, without asking Google again.
    let b2 = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b2).await.platform.as_deref(), Some("jitsi"));
    assert_eq!(g.google.refresh_calls(), 1);
}

#[tokio::test]
async fn revoked_without_fallback_fails_with_a_reconnect_message() {
    let g = setup_with(60, |c| c.fallback.platform = Fallback::None).await;
    g.google.revoke_refresh(&g.refresh);
    let b = g.book().await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"));
    assert!(state.error.as_deref().unwrap().contains("Reconnect Google Meet"), "{state:?}");
    assert_eq!(job(&g.c, b).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn pending_conference_is_polled_until_ready() {
    let g = setup().await;
    g.google.set_pending_gets(2);
    let b = g.book().await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert!(state.link.unwrap().starts_with("https://meet.google.com/"));
}

#[tokio::test]
async fn conference_still_pending_is_retried_and_the_same_event_adopted() {
    let g = setup().await;
    g.google.set_pending_gets(1000);
    let b = g.book().await;
    g.run().await;
    let j = job(&g.c, b).await.unwrap();
    assert_eq!((j.state.as_str(), j.attempts), ("pending", 1), "a retry is scheduled: {j:?}");
    assert!(j.last_error.unwrap().contains("still preparing"));

    g.google.set_pending_gets(0);
    let id = meetingd::providers::google::event_id(b, 1);
    // Google finishes the conference meanwhile.
    g.google.state.lock().unwrap().events.get_mut(&id).unwrap().body["hangoutLink"] =
        serde_json::json!("https://meet.google.com/late-link-abc");
    make_due(&g.c).await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.link.as_deref(), Some("https://meet.google.com/late-link-abc"));
    assert_eq!(g.google.live_events().len(), 1, "one event in total");
}

#[tokio::test]
async fn lost_create_response_is_reconciled_by_adopting_the_event() {
    let g = setup().await;
    // Google creates the event, but the answer never arrives (as if the daemon died right then).
    g.google.fail_next([Fail { after_work: true, ..Fail::status(503, "backendError") }]);
    let b = g.book().await;
    g.run().await;
    assert_eq!(job(&g.c, b).await.unwrap().state, "pending");
    make_due(&g.c).await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"));
    assert_eq!(g.google.live_events().len(), 1, "the existing event was adopted, not duplicated");
    assert_eq!(state.meeting_id.as_deref(), Some(meetingd::providers::google::event_id(b, 1).as_str()));
}

#[tokio::test]
async fn lost_create_response_then_cancel_deletes_the_event_nobody_recorded() {
    let g = setup().await;
    g.google.fail_next([Fail { after_work: true, ..Fail::status(503, "backendError") }]);
    let b = g.book().await;
    g.run().await;
    let id = meetingd::providers::google::event_id(b, 1);
    assert!(!g.google.event(&id).unwrap().deleted, "Google made the event; meetingd never heard back");
    assert_eq!(meeting(&g.c, b).await.link, None);

    market::set_status(&g.c, b, "cancelled").await;
    g.run().await;
    assert!(g.google.event(&id).unwrap().deleted, "the recorded intent lets the cancel find the event");
    assert!(g.google.live_events().is_empty());
    let j = job(&g.c, b).await.unwrap();
    assert_eq!(j.state, "done", "{j:?}");
    let intent: Option<String> =
        g.c.query_one("SELECT intent_platform FROM meetingd.jobs WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(intent, None, "the deleted event's intent is settled");

    // Confirmed again: a new event id, since Google keeps the deleted one reserved.
    market::set_status(&g.c, b, "confirmed").await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(state.meeting_id.as_deref(), Some(meetingd::providers::google::event_id(b, 2).as_str()));
    assert_eq!(g.google.live_events().len(), 1);
}

#[tokio::test]
async fn lost_create_response_then_reschedule_adopts_the_event_and_moves_it() {
    let g = setup().await;
    g.google.fail_next([Fail { after_work: true, ..Fail::status(503, "backendError") }]);
    let b = g.book().await;
    g.run().await;
    market::reschedule_hours(&g.c, b, 3).await;
    g.run().await;

    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let id = meetingd::providers::google::event_id(b, 1);
    assert_eq!(state.meeting_id.as_deref(), Some(id.as_str()), "the event made before the move is adopted");
    let event = g.google.event(&id).unwrap();
    let (start, end): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) = {
        let row = g.c.query_one("SELECT start_time, end_time FROM bookings WHERE id = $1", &[&b]).await.unwrap();
        (row.get(0), row.get(1))
    };
    let at = |key: &str| event.body[key]["dateTime"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap();
    assert_eq!((at("start"), at("end")), (start, end), "the adopted event follows the booking's new times");
    assert_eq!(g.google.live_events().len(), 1);
}
#[tokio::test]
async fn error_classes_retry_or_fail_as_google_documents() {
    // (failure, retried?)
    let cases: Vec<(Fail, bool)> = vec![
        (Fail::status(500, "backendError"), true),
        (Fail::status(503, "backendError"), true),
        (Fail::status(403, "rateLimitExceeded"), true),
        (Fail::status(403, "userRateLimitExceeded"), true),
        (Fail { retry_after: Some("7".into()), ..Fail::status(429, "rateLimitExceeded") }, true),
        (Fail::status(403, "quotaExceeded"), true),
        (Fail { delay: Some(Duration::from_millis(2500)), ..Fail::status(200, "slow") }, true),
        (Fail::status(400, "invalid"), false),
        (Fail::status(403, "forbiddenForNonOrganizer"), false),
    ];
    let g = setup_with(3600, |c| c.worker.retry_max_ms = 3_600_000).await;
    for (fail, retried) in cases {
        let what = format!("{} {}", fail.status, fail.reason);
        g.google.fail_next([fail.clone()]);
        let b = g.book().await;
        g.run().await;
        let j = job(&g.c, b).await.unwrap();
        if retried {
            assert_eq!(j.state, "pending", "{what}: {j:?}");
            let wait: f64 =
                g.c.query_one(
                    "SELECT EXTRACT(EPOCH FROM run_at - updated_at)::float8 FROM meetingd.jobs WHERE booking_id = $1",
                    &[&b],
                )
                .await
                .unwrap()
                .get(0);
            match fail.reason {
                "rateLimitExceeded" if fail.status == 429 => {
                    assert!((6.9..7.5).contains(&wait), "{what}: Retry-After honoured, {wait}")
                }
                "quotaExceeded" => assert!(wait >= 3599.0, "{what}: long back-off, {wait}"),
                _ => assert!(wait < 60.0, "{what}: {wait}"),
            }
            make_due(&g.c).await;
            g.run().await;
            assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"), "{what}");
        } else {
            assert_eq!(j.state, "failed", "{what}: {j:?}");
            let state = meeting(&g.c, b).await;
            assert_eq!(state.status.as_deref(), Some("failed"), "{what}");
            assert!(state.error.unwrap().len() > 20, "{what}: a readable reason");
        }
    }
}

#[tokio::test]
async fn update_refused_for_non_organizer_fails_readably() {
    let g = setup().await;
    let b = g.book().await;
    g.run().await;
    g.google.fail_next([Fail::status(403, "forbiddenForNonOrganizer")]);
    market::reschedule_hours(&g.c, b, 1).await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"));
    assert!(state.error.unwrap().contains("not its organizer"));
}

#[tokio::test]
async fn event_deleted_in_google_calendar_is_recreated_on_reschedule() {
    let g = setup().await;
    let b = g.book().await;
    g.run().await;
    let first = meeting(&g.c, b).await.meeting_id.unwrap();
    g.google.state.lock().unwrap().events.remove(&first);
    market::reschedule_hours(&g.c, b, 1).await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"));
    assert_eq!(state.meeting_id.as_deref(), Some(meetingd::providers::google::event_id(b, 2).as_str()));
}

#[tokio::test]
async fn two_daemons_refreshing_the_same_integration_refresh_once() {
    let g = setup_with(60, |_| {}).await;
    g.google.state.lock().unwrap().refresh_delay = Some(Duration::from_millis(300));
    for _ in 0..6 {
        g.book().await;
    }
    let other = worker_for(&g.config);
    let (a, b) = tokio::join!(g.worker.run_once(), other.run_once());
    assert_eq!(a.unwrap() + b.unwrap(), 6);
    assert_eq!(g.google.refresh_calls(), 1, "one refresh for all concurrent jobs");
    assert_eq!(market::count(&g.c, "SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await, 6);
}

#[tokio::test]
async fn tampered_or_moved_ciphertext_fails_that_integration_clearly() {
    let g = setup_with(3600, |_| {}).await;
    // Flip one character of the stored access token ciphertext.
    tamper_access_tokens(&g.c).await;
    let b = g.book().await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    assert_eq!(state.platform.as_deref(), Some("jitsi"), "falls back: {state:?}");
    let detail: String = g
        .c
        .query_one("SELECT detail FROM meetingd.audit_log WHERE booking_id = $1 AND platform = 'google_meet'", &[&b])
        .await
        .unwrap()
        .get(0);
    assert!(detail.contains("does not decrypt"), "{detail}");
    let active: bool = g.c.query_one("SELECT is_active FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert!(active, "a cipher problem does not disconnect the provider");

    // A valid ciphertext copied from another provider's row does not decrypt here either.
    let other = market::user(&g.c, "provider").await;
    let (a2, r2) = g.google.issue();
    connect_google(&g.config, other, &a2, &r2, 3600).await;
    g.c.execute(
        "UPDATE user_meeting_integrations SET access_token = (SELECT access_token FROM user_meeting_integrations WHERE user_id = $1)
          WHERE user_id = $2",
        &[&other, &g.m.provider],
    )
    .await
    .unwrap();
    let b2 = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b2).await.platform.as_deref(), Some("jitsi"));
    assert!(g.google.calls().iter().all(|c| !c.starts_with("insert")), "the moved token was never sent to Google");
}

#[tokio::test]
async fn meeting_settings_shape_the_event_and_unknown_keys_fail() {
    let g = setup_with(3600, |c| c.google.invite_customer = true).await;
    g.c.execute(
        "UPDATE services SET meeting_settings = '{\"title\": \"{provider} and {customer}: {service}\", \"description\": \"Bring water\"}' WHERE id = $1",
        &[&g.service],
    )
    .await
    .unwrap();
    let b = g.book().await;
    g.run().await;
    let state = meeting(&g.c, b).await;
    let event = g.google.event(state.meeting_id.as_deref().unwrap()).unwrap();
    assert_eq!(event.body["summary"], "Test User and Test User: Consultation");
    assert_eq!(event.body["description"], "Bring water");
    assert_eq!(event.body["attendees"][0]["email"], format!("{}@example.com", g.m.customer));
    let copied: serde_json::Value =
        g.c.query_one("SELECT meeting_settings FROM bookings WHERE id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(copied["description"], "Bring water", "settings copied to the booking");

    g.c.execute("UPDATE services SET meeting_settings = '{\"lobby\": true}' WHERE id = $1", &[&g.service])
        .await
        .unwrap();
    let b2 = g.book().await;
    g.run().await;
    let failed = meeting(&g.c, b2).await;
    assert_eq!(failed.status.as_deref(), Some("failed"));
    assert!(failed.error.unwrap().contains("unknown keys (lobby)"));
    assert_eq!(audit(&g.c, b2).await, [("meeting.create".to_string(), "failed".to_string())]);
}

#[tokio::test]
async fn no_log_line_ever_contains_a_token_or_the_client_secret() {
    let (captured, _guard) = meetingd_testkit::logs::capture_trace();

    // Refresh, a 401 with a forced refresh, a revoked refresh token, and a decrypt failure.
    let g = setup_with(60, |_| {}).await;
    let b = g.book().await;
    g.run().await;
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
    let current: Vec<String> = g.google.state.lock().unwrap().events.keys().cloned().collect();
    assert_eq!(current.len(), 1);
    for token in g.google.issued_access_tokens() {
        g.google.expire_access(&token);
    }
    market::reschedule_hours(&g.c, b, 1).await;
    g.run().await;
    g.google.revoke_refresh(&g.refresh);
    for token in g.google.issued_access_tokens() {
        g.google.expire_access(&token);
    }
    market::reschedule_hours(&g.c, b, 1).await;
    g.run().await;
    g.c.execute("UPDATE user_meeting_integrations SET is_active = true, access_token = 'corrupt'", &[]).await.unwrap();
    let b2 = g.book().await;
    g.run().await;
    assert!(g.google.refresh_calls() >= 2);

    let text = captured.text();
    assert!(text.lines().count() > 20, "the capture works: {text}");
    assert!(text.contains("access token refreshed") && text.contains("must reconnect"), "{text}");
    for secret in g.google.all_secrets().iter().chain([&meetingd_client_secret()]) {
        assert!(!text.contains(secret.as_str()), "a log line contains a secret ({secret})");
    }
    assert!(!text.contains("-secret"), "{text}");
    let _ = b2;
}

fn meetingd_client_secret() -> String {
    meetingd_testkit::fake_google::CLIENT_SECRET.to_string()
}

fn spawn_google_daemon(db_url: &str, google: &FakeGoogle, key: &str) -> meetingd_testkit::Running {
    meetingd_testkit::daemon::DaemonCommand::new(env!("CARGO_BIN_EXE_meetingd"), db_url, &SecretString::from(key))
        .google(google)
        .set("GOOGLE__REQUEST_TIMEOUT_MS", "2000")
        .set("WORKER__CONCURRENCY", "16")
        // Rate limits stay on (burst 10 per provider), refilled fast enough for a test.
        .set("LIMITS__GOOGLE_MEET__INTEGRATION_RATE", "50")
        .set("WORKER__MAX_ATTEMPTS", "30")
        .set("WORKER__RETRY_BASE_MS", "50")
        .set("WORKER__RETRY_MAX_MS", "1000")
        .set("WORKER__LEASE_SECS", "5")
        .set("WORKER__SWEEP_INTERVAL_MS", "500")
        .log("error")
        .spawn_quiet()
}

/// 1,000 bookings across 20 providers through injected 5xx, 429, lost responses and a SIGKILL of
/// the daemon: 1,000 events, 1,000 links, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bookings_through_chaos_and_a_kill_give_a_thousand_events() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let google = FakeGoogle::start().await;
    let mut config = db.config();
    google.configure(&mut config);
    let key = secrecy::ExposeSecret::expose_secret(&config.encryption.key).to_string();
    let customer = market::user(&c, "customer").await;
    let mut all = Vec::new();
    for p in 0..20 {
        let provider = market::user(&c, "provider").await;
        let service = market::service(&c, provider, true, Some("google_meet")).await;
        let (access, refresh) = google.issue();
        // Half the providers need a refresh first.
        connect_google(&config, provider, &access, &refresh, if p % 2 == 0 { 3600 } else { 30 }).await;
        all.extend(market::book_many(&c, service, customer, 50).await);
    }
    google.chaos(vec![
        (0.05, Fail::status(503, "backendError")),
        (0.03, Fail { retry_after: Some("1".into()), ..Fail::status(429, "rateLimitExceeded") }),
        (0.02, Fail { after_work: true, ..Fail::status(502, "backendError") }),
    ]);

    let mut daemon = spawn_google_daemon(&db.url, &google, &key);
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();
    let ready = || async { market::count(&c, "SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await };
    meetingd_testkit::db::eventually("300 bookings linked", Duration::from_secs(120), || async {
        (ready().await >= 300).then_some(())
    })
    .await;
    daemon.kill(); // SIGKILL, mid-run
    let at_kill = ready().await;
    assert!(at_kill < 1000, "killed before the end ({at_kill})");

    let mut daemon = spawn_google_daemon(&db.url, &google, &key);
    meetingd_testkit::db::eventually("1000 bookings linked", Duration::from_secs(240), || async {
        (ready().await == 1000).then_some(())
    })
    .await;
    daemon.kill();

    let live = google.live_events();
    assert_eq!(live.len(), 1000, "one event per booking at Google");
    let mut per_booking = std::collections::HashMap::new();
    for e in &live {
        *per_booking.entry(e.booking_id().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_booking.len(), 1000);
    assert!(per_booking.values().all(|&n| n == 1), "duplicates at Google");
    assert_eq!(
        market::count(&c, "SELECT count(DISTINCT meeting_link) FROM bookings WHERE meeting_link IS NOT NULL").await,
        1000
    );
    let wrong_id = market::count(
        &c,
        "SELECT count(*) FROM bookings WHERE meeting_id <> 'meetingd' || replace(id::text, '-', '') || 'g1'",
    )
    .await;
    assert_eq!(wrong_id, 0, "every booking's meeting is its generation-1 event");
    let creates =
        market::count(&c, "SELECT count(*) FROM meetingd.audit_log WHERE action = 'meeting.create' AND outcome = 'ok'")
            .await;
    assert_eq!(creates, 1000, "exactly one recorded creation per booking");
    assert!(google.refresh_calls() >= 10, "the providers with expiring tokens were refreshed");
    assert_eq!(all.len(), 1000);
}
